"""MBOLD: its Q-learning target, goal relabelling, negative mining, CQL, video model and CEM,
each against a hand computation or a naive reference; what it trains on, against the dataset
file, through the real offline store; its runs, through the CLI (debug preset, seconds)."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch

from pixelplan import cli
from pixelplan import config as config_lib
from pixelplan.agents.mbold import MboldAgent
from pixelplan.data.replay import ReplayBuffer
from pixelplan.data.samplers import ArmNeighbours, GoalPairBatch, GoalPairSampler, MboldSampler, offset_probabilities
from pixelplan.nets.video import VideoModel
from pixelplan.runs.collect import collect
from pixelplan.runs.offline import open_store, train_offline
from pixelplan.spec import EnvSpec

SMALL = {"height": "32", "width": "32"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("mbold") / "push1.h5"
    collect("tabletop:push1", 12, path, env_options=SMALL, seed=5, shard_episodes=12, n_envs=4, progress=False)
    return path


def _cfg(dataset, out=None, **mbold):
    cfg = config_lib.preset("debug", env="tabletop:push1", agent="mbold")
    cfg.env_options = dict(SMALL)
    cfg.dataset, cfg.out, cfg.threads, cfg.progress = str(dataset), None if out is None else str(out), 1, False
    for k, v in mbold.items():
        setattr(cfg.mbold, k, v)
    return cfg


SPEC = EnvSpec(frame_shape=(32, 32, 3), frame_stack=2, n_actions=None, max_episode_steps=30, action_shape=(4,),
               action_low=(-1,) * 4, action_high=(1,) * 4, actuated_features=(0,))


def _agent(tmp_path, **mbold):
    cfg = _cfg(tmp_path / "unused.h5", **mbold)
    return MboldAgent(cfg, SPEC, torch.device("cpu"), seed=0)


class _Const(torch.nn.Module):
    """A stand-in network: a critic returning ``value + sum(action)``, or an actor returning ``value``."""

    def __init__(self, value, critic=True):
        super().__init__()
        self.value, self.critic = value, critic

    def forward(self, pair, action=None):
        n = len(pair)
        if self.critic:
            return self.value + action.sum(1)
        return torch.full((n, 4), float(self.value))


# ---------------------------------------------------------------------- the Q target
def test_rewards_are_ten_on_reaching_one_otherwise_and_negatives_never_reach(tmp_path):
    agent = _agent(tmp_path)
    offset = np.array([1, 2, 1, -1, 5])
    negative = np.array([False, False, True, True, False])
    pairs = GoalPairBatch(None, None, None, None, offset, negative, None)
    reward, reached = agent.rewards(pairs)
    assert reached.tolist() == [True, False, False, False, False]
    assert reward.tolist() == [10.0, 1.0, 1.0, 1.0, 1.0]


def test_q_target_is_reward_plus_gamma_min_twin_at_the_smoothed_target_action(tmp_path):
    agent = _agent(tmp_path)
    agent.target_actor = _Const(0.5, critic=False)
    agent.target_critics = torch.nn.ModuleList([_Const(3.0), _Const(2.0)])
    pair = torch.zeros(3, 6, 32, 32)
    reward = torch.tensor([10.0, 1.0, 1.0])
    reached = torch.tensor([True, False, False])
    # huge noise is clipped to +-0.2 per dimension; zero noise leaves the actor's action
    noise = torch.tensor([[100.0] * 4, [-100.0] * 4, [0.0] * 4])
    y = agent.q_targets(pair, reward, reached, noise)
    # row 1: a = clip(0.5 - 0.2) = 0.3 per dim -> min(3, 2) + 4 * 0.3 = 3.2; row 2: a = 0.5 -> 2 + 2 = 4
    gamma = agent.cfg.gamma
    assert y.tolist() == pytest.approx([10.0, 1.0 + gamma * 3.2, 1.0 + gamma * 4.0])
    # the smoothed action is clipped to the action box: an actor at 0.95 plus 0.2 gives 1.0
    agent.target_actor = _Const(0.95, critic=False)
    y = agent.q_targets(pair[1:2], reward[1:2], reached[1:2], torch.full((1, 4), 100.0))
    assert float(y) == pytest.approx(1.0 + gamma * (2.0 + 4 * 1.0))


def test_cql_gap_and_the_lagrange_multiplier_move_the_right_way(tmp_path):
    agent = _agent(tmp_path)
    pair = torch.rand(8, 6, 32, 32)
    action = torch.zeros(8, 4)
    rand = torch.rand(8, 10, 4) * 2 - 1
    # a critic whose head ignores its input beyond a bias: every Q equals the bias, so the gap is
    # logsumexp of 10 equal values minus the value, plus the uniform density's importance weight
    for critic in agent.critics:
        for p in critic.head.parameters():
            torch.nn.init.zeros_(p)
        critic.head[-1].bias.data.fill_(7.0)
        critic.eval()
    gaps = agent.cql_gaps(pair, action, rand)
    assert [float(g.detach()) for g in gaps] == pytest.approx([math.log(10) + 4 * math.log(2)] * 2, abs=1e-5)
    # the multiplier rises when the gap exceeds the slack and falls when it is below
    for slack, direction in ((0.0, 1), (100.0, -1)):
        agent = _agent(tmp_path, cql_slack=slack)
        before = float(agent.log_alpha.detach())
        batch = _pairs_batch(agent)
        agent._q_step(batch)
        assert np.sign(float(agent.log_alpha.detach()) - before) == direction


def _pairs_batch(agent, n=8, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n, 2, 32, 32, 3), dtype=np.uint8)
    return GoalPairBatch(state=frames, action=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                         next_state=np.roll(frames, 1, axis=0), goal=frames[:, -1], offset=np.arange(n) % 3 + 1,
                         negative=np.zeros(n, bool), start=np.arange(n))


# ---------------------------------------------------------------------- goals
def _store(lengths, arm_of, stack=1):
    """A store of episodes whose frames' single feature (the "arm") is ``arm_of(ep, pos)``."""
    store = ReplayBuffer(sum(lengths) + 1, (2, 2), stack, action_shape=(1,), action_dtype="float32", feature_dim=2)
    for e, n in enumerate(lengths):
        frames = np.zeros((n, 2, 2), np.uint8)
        frames[:, 0, 0] = e
        frames[:, 0, 1] = np.arange(n)
        feats = np.array([[arm_of(e, p), 100.0 * e] for p in range(n)])
        store.add_episode(frames, np.zeros((n - 1, 1), np.float32), features=feats)
    return store


def test_positive_offsets_follow_the_truncated_geometric_law():
    store = _store([200] * 6, lambda e, p: p)
    sampler = MboldSampler(None, GoalPairSampler(4000, law="geometric", p=0.3, max_offset=8), negatives="none")
    batch = sampler.sample(store, np.random.default_rng(0)).pairs
    left = store.steps_left(batch.start)
    full = left >= 8                       # rows whose law is the whole truncated range
    counts = np.bincount(batch.offset[full], minlength=9)[1:]
    expected = offset_probabilities("geometric", 8, 0.3) * full.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 26.1                     # p = 0.0005 for 7 degrees of freedom
    # and each goal is that many steps later in the same episode
    pos = store.positions(batch.start)
    assert np.array_equal(batch.goal[:, 0, 1], pos + batch.offset)
    assert np.array_equal(batch.goal[:, 0, 0], store.episode_ids(batch.start))


def test_negatives_are_half_the_batch_from_other_trajectories_with_near_arms():
    # every episode sweeps the arm over the same line at a different phase: near arms exist in all
    store = _store([40] * 8, lambda e, p: (p * 0.37 + e * 1.3) % 10)
    sampler = MboldSampler(None, GoalPairSampler(64, law="geometric", p=0.3), negatives="arm_knn",
                           negative_frac=0.5, actuated=(0,), neighbours=3)
    batch = sampler.sample(store, np.random.default_rng(1))
    assert batch.pairs.negative.sum() == 32
    neg = batch.pairs.negative
    assert np.all(batch.pairs.offset[neg] == -1) and np.all(batch.pairs.offset[~neg] >= 1)
    own_episode = store.episode_ids(batch.pairs.start[neg])
    goal_episode = batch.pairs.goal[neg][:, 0, 0]
    assert np.all(goal_episode != own_episode)
    # the goal's arm is within the 3 nearest of other trajectories' (brute force over the store)
    slots = store.valid_indices()
    arms = store.features_at(slots)[:, 0]
    eps = store.episode_ids(slots)
    for start, goal_ep, goal_pos in zip(batch.pairs.start[neg], goal_episode, batch.pairs.goal[neg][:, 0, 1]):
        me = store.features_at([start])[0, 0]
        others = np.sort(np.abs(arms[eps != store.episode_ids([start])[0]] - me))
        goal_arm = (goal_pos * 0.37 + goal_ep * 1.3) % 10
        assert abs(goal_arm - me) <= others[2] + 1e-5
    # never rewarded
    reward, reached = MboldAgent.rewards(type("A", (), {"cfg": config_lib.MboldConfig()})(), batch.pairs)
    assert not reached[neg].any() and np.all(reward[neg] == 1.0)


def test_negative_mining_refuses_an_env_without_actuated_features_or_a_store_without_features():
    store = _store([10, 10], lambda e, p: p)
    with pytest.raises(ValueError, match="actuated features"):
        ArmNeighbours(store, ())
    bare = ReplayBuffer(30, (2, 2), 1)
    bare.add_episode(np.zeros((5, 2, 2), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="features"):
        ArmNeighbours(bare, (0,))


# ---------------------------------------------------------------------- the video model
def _squares(n, length, rng, size=16):
    """A white 3x3 square on black, moved each step by its action (dx, dy) in {-1, 0, 1} pixels."""
    frames = np.zeros((n, length, 3, size, size), np.float32)
    actions = rng.integers(-1, 2, size=(n, length - 1, 2)).astype(np.float32)
    pos = rng.integers(4, size - 7, size=(n, 2))
    for t in range(length):
        for i in range(n):
            x, y = pos[i]
            frames[i, t, :, y:y + 3, x:x + 3] = 1.0
        if t < length - 1:
            pos = np.clip(pos + actions[:, t].astype(int), 0, size - 3)
    return torch.as_tensor(frames), torch.as_tensor(actions)


def test_the_video_model_predicts_a_moving_square_better_than_copying_the_last_frame():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = VideoModel(2, channels=3, width=8, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        frames, actions = _squares(16, 6, rng)
        pred = model.rollout(frames[:, :2], actions, keep="train")
        loss = (pred - frames[:, 1:]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, actions = _squares(64, 6, np.random.default_rng(99))       # held out
    with torch.no_grad():
        pred = model.eval().rollout(frames[:, :2], actions, keep="all")
    model_mse = float((pred - frames[:, 2:]).pow(2).mean())
    copy_mse = float((frames[:, 1:2] - frames[:, 2:]).pow(2).mean())
    assert model_mse < 0.6 * copy_mse


def test_rollout_shapes_and_the_last_frame_is_the_last_of_all(tmp_path):
    model = VideoModel(4, width=4, hidden=4).eval()
    ctx, actions = torch.rand(3, 2, 3, 32, 32), torch.rand(3, 6, 4)
    with torch.no_grad():
        every = model.rollout(ctx, actions, keep="all")
        last = model.rollout(ctx, actions, keep="last")
        train = model.rollout(ctx, actions, keep="train")
    assert every.shape == (3, 5, 3, 32, 32) and train.shape == (3, 6, 3, 32, 32)
    assert torch.allclose(every[:, -1], last) and torch.allclose(train[:, 1:], every)
    with pytest.raises(ValueError, match="context"):
        model.rollout(ctx, actions[:, :1])


# ---------------------------------------------------------------------- planning
class _DotWorld(torch.nn.Module):
    """A stand-in video model: a dot at the context's dot position plus the summed actions."""

    def rollout(self, context_frames, actions, keep="last"):
        b = len(context_frames)
        last = context_frames[:, -1, 0]                              # (B, H, W)
        size = last.shape[-1]
        flat = last.reshape(b, -1).argmax(1)
        pos = torch.stack([flat % size, flat // size], 1).float()
        pos = (pos + 4 * actions[:, context_frames.shape[1] - 1:, :2].sum(1)).clamp(0, size - 1)
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        d2 = (xs[None] - pos[:, 0, None, None]) ** 2 + (ys[None] - pos[:, 1, None, None]) ** 2
        frame = torch.exp(-d2 / 50.0)
        return frame[:, None].expand(b, 3, size, size)

    def eval(self):
        return self


def _dot(x, y, size=32):
    ys, xs = np.mgrid[:size, :size]
    img = (255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 50.0)).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def test_cem_with_a_pixel_cost_plans_toward_the_goal(tmp_path):
    agent = _agent(tmp_path, distance="pixel", horizon=4, execute=4, candidates=64, elites=8, iterations=3)
    agent.video = _DotWorld()
    state = np.stack([_dot(8, 8), _dot(8, 8)])[None]                 # (1, 2, H, W, C)
    goal = _dot(16, 14)[None]
    plan = agent.plan(state, goal, np.zeros((1, 1, 4), np.float32))
    assert plan.shape == (1, 4, 4)
    end = np.clip(np.array([8.0, 8.0]) + 4 * plan[0, :, :2].sum(0), 0, 31)     # where the plan puts the dot
    assert np.linalg.norm(end - [16, 14]) < 0.5 * np.linalg.norm([8, 6])
    assert agent.last_plan_score[0] > agent.score(agent._frames(state[:, -1]), agent._frames(goal)).item()


def test_acting_replans_every_execute_steps_per_row(tmp_path):
    agent = _agent(tmp_path, distance="pixel", horizon=4, execute=2, candidates=8, elites=2, iterations=1)
    agent.video = _DotWorld()
    calls = []
    real = agent.plan
    agent.plan = lambda s, g, a: calls.append(len(s)) or real(s, g, a)
    state = np.stack([_dot(8, 8), _dot(8, 8)])[None].repeat(2, 0)
    goal = _dot(20, 20)[None].repeat(2, 0)
    agent.begin_episodes(np.array([0, 1]), goal, explore=False)
    for _ in range(4):
        agent.act(state, goal, np.zeros(2), False, 0, rows=np.array([0, 1]))
    assert calls == [2, 2]
    agent.begin_episodes(np.array([1]), goal[:1], explore=False)      # row 1 restarts: only it replans
    agent.act(state, goal, np.zeros(2), False, 0, rows=np.array([0, 1]))
    assert calls == [2, 2, 2]          # row 0's plan was used up too (4 actions = 2 plans of 2)
    agent.act(state, goal, np.zeros(2), False, 0, rows=np.array([0, 1]))
    assert calls == [2, 2, 2]


# ---------------------------------------------------------------------- data, end to end
def test_what_mbold_trains_on_is_the_dataset_through_the_real_store(dataset):
    cfg = _cfg(dataset)
    from pixelplan.runs.common import prepare
    from pixelplan.runs.offline import dataset_config
    cfg, attrs = dataset_config(cfg)
    _, _, spec, agent, _ = prepare(cfg)
    store = open_store(cfg, spec, int(attrs["frames"]), "ram")
    batch = agent.sampler.sample(store, np.random.default_rng(0))
    with h5py.File(dataset) as f:
        eps = [f["episodes"][k] for k in sorted(f["episodes"])]
        frames = [e["frames"][()] for e in eps]
        actions = [e["actions"][()] for e in eps]
        feats = [e["features"][()] for e in eps]
    ep_id, pos = store.episode_ids(batch.windows.start), store.positions(batch.windows.start)
    for i in range(len(ep_id)):
        e, p = ep_id[i], pos[i]
        assert np.array_equal(batch.windows.frames[i], frames[e][p:p + agent.cfg.window])
        assert np.array_equal(batch.windows.actions[i], actions[e][p:p + agent.cfg.window - 1])
    pairs = batch.pairs
    ep_id, pos = store.episode_ids(pairs.start), store.positions(pairs.start)
    arm = list(spec.actuated_features)
    assert arm == [4, 5, 6]
    for i in range(len(ep_id)):
        e, p = ep_id[i], pos[i]
        assert np.array_equal(pairs.state[i, -1], frames[e][p]) and np.array_equal(pairs.next_state[i, -1],
                                                                                    frames[e][p + 1])
        assert np.array_equal(pairs.action[i], actions[e][p])
        if not pairs.negative[i]:
            assert np.array_equal(pairs.goal[i], frames[e][p + pairs.offset[i]])
        else:                              # a frame of another episode, its arm among the near ones
            hits = [(k, q) for k in range(len(frames)) if k != e for q in range(len(frames[k]))
                    if np.array_equal(frames[k][q], pairs.goal[i])]
            assert hits
            k, q = hits[0]
            d = np.linalg.norm(feats[k][q][arm] - feats[e][p][arm])
            others = np.sort([np.linalg.norm(feats[k2][q2][arm] - feats[e][p][arm]) for k2 in range(len(frames))
                              if k2 != e for q2 in range(len(frames[k2]))])
            assert d <= others[agent.cfg.knn_neighbours - 1] + 1e-5


# ---------------------------------------------------------------------- runs
@pytest.mark.parametrize("variant", [{}, {"distance": "pixel"}, {"distance": "vae"}, {"distance": "temporal"},
                                     {"planner": "q_shooting"}, {"negatives": "none", "cql": False}])
def test_every_variant_trains_and_evaluates(dataset, tmp_path, variant):
    summary = train_offline(_cfg(dataset, tmp_path / "run", **variant))
    assert summary["updates"] == 6 and 0.0 <= summary["success_rate"] <= 1.0
    assert "final_distance" in summary


def test_resume_is_exact(dataset, tmp_path):
    full = _cfg(dataset, tmp_path / "full")
    train_offline(full)
    half = _cfg(dataset, tmp_path / "half")
    half.updates = 3
    train_offline(half)
    train_offline(_cfg(dataset, tmp_path / "half"))
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["agent"]
    b = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=False)["agent"]
    for name in ("video", "critics", "actor", "target_critics"):
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    evals = lambda p: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()
                       if '"kind": "eval"' in line]
    assert [e["success_rate"] for e in evals(tmp_path / "full")] == [e["success_rate"] for e in evals(tmp_path / "half")]
    assert (tmp_path / "full" / "videos" / "openloop_000000006.gif").is_file()
    # the CEM cost curves of each evaluation's plans: a figure and one figure per iteration in the record
    assert (tmp_path / "full" / "cem_cost_000000006.png").is_file()
    assert {"cem_elite_score_iter1", "cem_elite_score_iter2"} <= set(evals(tmp_path / "full")[-1])


def test_a_reused_video_model_is_frozen_and_refused_when_missing(dataset, tmp_path):
    train_offline(_cfg(dataset, tmp_path / "vf", distance="pixel"))
    reuse = _cfg(dataset, tmp_path / "q", video_from=str(tmp_path / "vf"))
    summary = train_offline(reuse)
    a = torch.load(tmp_path / "vf" / "checkpoint.pt", weights_only=False)["agent"]["video"]
    b = torch.load(tmp_path / "q" / "checkpoint.pt", weights_only=False)["agent"]["video"]
    assert all(torch.equal(a[k], b[k]) for k in a) and summary["updates"] == 6
    with pytest.raises(ValueError, match="no checkpoint"):
        train_offline(_cfg(dataset, tmp_path / "q2", video_from=str(tmp_path / "nowhere")))
    # Visual Foresight on the reused model trains nothing: its run only evaluates
    vf = _cfg(dataset, tmp_path / "vf2", distance="pixel", video_from=str(tmp_path / "vf"))
    vf.updates = 1
    summary = train_offline(vf)
    c = torch.load(tmp_path / "vf2" / "checkpoint.pt", weights_only=False)["agent"]["video"]
    assert all(torch.equal(a[k], c[k]) for k in a) and 0 <= summary["success_rate"] <= 1


def test_a_reused_q_function_is_frozen_and_evaluated_without_training(dataset, tmp_path):
    train_offline(_cfg(dataset, tmp_path / "mbold"))
    q_only = _cfg(dataset, tmp_path / "qonly", planner="q_shooting", distance_from=str(tmp_path / "mbold"))
    summary = train_offline(q_only)
    a = torch.load(tmp_path / "mbold" / "checkpoint.pt", weights_only=False)["agent"]
    b = torch.load(tmp_path / "qonly" / "checkpoint.pt", weights_only=False)["agent"]
    for name in ("critics", "actor", "target_critics", "target_actor"):
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    assert "video" not in b and b["optimizers"] == {} and 0 <= summary["success_rate"] <= 1
    # nothing was trained: no Q losses in the run's training records
    records = [json.loads(line) for line in (tmp_path / "qonly" / "metrics.jsonl").read_text().splitlines()]
    assert not any("q_td" in r for r in records)


def test_reusing_models_refuses_what_cannot_work(dataset, tmp_path):
    train_offline(_cfg(dataset, tmp_path / "mbold"))
    with pytest.raises(ValueError, match="uses none"):           # pixel l2 and CEM: no Q to reuse
        MboldAgent(_cfg(dataset, distance="pixel", distance_from=str(tmp_path / "mbold")), SPEC,
                   torch.device("cpu"), seed=0)
    with pytest.raises(ValueError, match="no checkpoint"):
        train_offline(_cfg(dataset, tmp_path / "q", planner="q_shooting", distance_from=str(tmp_path / "nowhere")))
    # a run without a Q-function (Visual Foresight) holds none to reuse
    train_offline(_cfg(dataset, tmp_path / "vf", distance="pixel"))
    with pytest.raises(ValueError, match="holds its Q-function"):
        train_offline(_cfg(dataset, tmp_path / "q2", planner="q_shooting", distance_from=str(tmp_path / "vf")))
    # a video model of other sizes: a one-line refusal that names the option, not a state-dict dump
    with pytest.raises(ValueError, match="does not fit this run") as e:
        train_offline(_cfg(dataset, tmp_path / "q3", video_width=8, video_from=str(tmp_path / "mbold")))
    assert "video_from" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "q3").exists() and not (tmp_path / "q2").exists()


def test_cli_refusals_are_one_line_with_exit_code_2(dataset, tmp_path, capsys):
    out = tmp_path / "online"
    assert cli.main(["train", "--agent", "mbold", "--env", "tabletop:push1", "--preset", "debug",
                     "--out", str(out)]) == 2
    assert "offline" in capsys.readouterr().err and not out.exists()
    # a value outside the choices: tyro's refusal, in one line
    assert cli.main(["train", "--agent", "mbold", "--dataset", str(dataset), "--preset", "debug",
                     "--mbold.distance", "cosine", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cosine" in err and "--mbold.distance" in err and len(err.splitlines()) == 1 and not out.exists()
    assert cli.main(["train", "--agent", "mbold", "--dataset", str(dataset), "--preset", "debug",
                     "--frame-stack", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "frame_stack" in err and not out.exists()


def test_eval_on_the_hard_tasks_of_a_trained_run(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train_offline(_cfg(dataset, run))
    assert cli.main(["eval", "--run", str(run), "--tasks", "hard", "--episodes", "2"]) == 0
    record = json.loads((run / "eval-trials8-tasks-hard.json").read_text())
    assert record["tasks"] == "hard" and record["eval_episodes"] == 2
    capsys.readouterr()
    assert cli.main(["eval", "--run", str(run), "--tasks", "impossible"]) == 2
    err = capsys.readouterr().err
    assert "impossible" in err and len(err.strip().splitlines()) == 1


def test_offline_gcsl_is_the_behaviour_cloning_baseline_on_box_actions(dataset, tmp_path):
    from pixelplan.agents.gcsl import GcslAgent
    cfg = config_lib.preset("debug", env="tabletop:push1", agent="gcsl")
    cfg.env_options, cfg.dataset, cfg.out = dict(SMALL), str(dataset), str(tmp_path / "gcbc")
    cfg.updates, cfg.eval_every_updates, cfg.checkpoint_every_updates, cfg.log_every_updates = 4, 4, 4, 2
    cfg.eval_episodes, cfg.threads, cfg.progress = 2, 1, False
    summary = train_offline(cfg)
    assert summary["updates"] == 4 and 0 <= summary["success_rate"] <= 1
    # the loss is the Gaussian NLL of the first action, in [-1, 1] units (actions here are already)
    spec = EnvSpec(frame_shape=(32, 32, 3), frame_stack=4, n_actions=None, max_episode_steps=30, action_shape=(4,),
                   action_low=(-2,) * 4, action_high=(2,) * 4)
    agent = GcslAgent(cfg, spec, torch.device("cpu"), seed=0)
    out = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0, -1.0, 0.5, -9.0]])
    agent._forward = lambda *a: out
    from pixelplan.data.replay import HindsightBatch
    actions = np.zeros((1, 3, 4), np.float32)
    actions[0, 0] = [2.0, 0.0, -2.0, 1.0]                   # unit: 1, 0, -1, 0.5
    batch = HindsightBatch(state=np.zeros((1, 4, 32, 32, 3), np.uint8), goal=np.zeros((1, 32, 32, 3), np.uint8),
                           actions=actions, k=np.array([2]), start=np.zeros(1, np.int64))
    loss, _ = agent.loss(batch)
    mean, log_std = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, -1.0, 0.5, -5.0])     # log std clamped at -5
    target = np.array([1.0, 0.0, -1.0, 0.5])
    expected = (0.5 * ((target - mean) / np.exp(log_std)) ** 2 + log_std + 0.5 * np.log(2 * np.pi)).sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # acting stays within the bounds
    agent = GcslAgent(cfg, spec, torch.device("cpu"), seed=0)
    d = agent.act(np.zeros((3, 4, 32, 32, 3), np.uint8), np.zeros((3, 32, 32, 3), np.uint8), np.zeros(3), False, 0)
    assert d.actions.shape == (3, 4) and np.all(np.abs(d.actions) <= 2)


def test_the_distance_heatmap_draws_every_runs_distance_and_pixel_mse(dataset, tmp_path, capsys):
    q, temporal = tmp_path / "q", tmp_path / "temporal"
    train_offline(_cfg(dataset, q))
    train_offline(_cfg(dataset, temporal, distance="temporal", planner="q_shooting"))
    capsys.readouterr()
    png = tmp_path / "heatmap.png"
    assert cli.main(["heatmap", "--run", str(q), "--run", str(temporal), "--out", str(png), "--grid", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 0 and len(record["argmin_xy"]) == 3
    # the pixel MSE is smallest where the block is nearest the goal's own position
    goal = np.array(record["goal_xy"])
    grid = np.stack(np.meshgrid(*[np.linspace(-0.2, 0.2, 4)] * 2, indexing="xy"), -1).reshape(-1, 2) + [0.0, 0.45]
    nearest = grid[np.argmin(np.linalg.norm(grid - goal, axis=1))]
    assert np.allclose(record["argmin_xy"]["pixel MSE"], nearest)
    # pixelplan distances ranks dataset frames by both runs' distances and the pixel MSE
    out = tmp_path / "distances.json"
    assert cli.main(["distances", "--run", str(q), "--run", str(temporal), "--frames", "12", "--out", str(out),
                     "--starts", "2", "--futures", "3", "--steps", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == record and record["tasks"] > 0
    ranks = record["rank_correlation"]
    assert set(ranks) == {"pixel MSE", "mbold (q)", "mbold (temporal)"}
    assert set(ranks["mbold (q)"]) == {"true_frames", "predicted_frames", "pixel_mse_predicted", "prediction_mse"}
    assert set(ranks["mbold (temporal)"]) == {"true_frames"}             # no video model there
    assert record["starts"] == 2 and set(record["rank_correlation_from_starts"]) == set(ranks)
    assert all(-1 <= v <= 1 for r in ranks.values() for k, v in r.items() if k != "prediction_mse" and v == v)
    # bad input: one line, exit 2, nothing written
    other = tmp_path / "reach.h5"
    collect("tabletop:reach", 2, other, env_options=SMALL, seed=1, shard_episodes=2, n_envs=1, progress=False)
    for bad in (["--dataset", str(other)], ["--frames", "1"], ["--out", str(tmp_path / "missing" / "d.json")],
                ["--futures", "1"]):
        assert cli.main(["distances", "--run", str(q), *bad]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error" in err
    assert not (tmp_path / "missing").exists()
    assert cli.main(["distances", "--run", str(tmp_path / "nowhere")]) == 2


def test_rank_correlation_matches_hand_computations_with_ties():
    from pixelplan.runs.distances import rank_correlation
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)        # 1 - 6 * 2 / (4 * 15)
    assert rank_correlation([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # ties share their mean rank: x ranks 0.5, 0.5, 2, 3 against 0, 1, 2, 3
    assert rank_correlation([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(rank_correlation([2, 2, 2], [1, 2, 3]))                       # no order to agree with
    with pytest.raises(ValueError, match="one length"):
        rank_correlation([1, 2], [1, 2, 3])


class _FeatureReader:
    """A fake learned distance that reads feature 0 from the frames' pixel value (see below):
    ``sign`` +1 orders frames as the truth does, -1 backwards; with a video model whose
    predictions are ``predict`` applied to the windows' last frames."""

    def __init__(self, sign, predict=None):
        self.sign, self.uses_video, self.predict = sign, predict is not None, predict

    prediction_window = 3

    def distance(self, frames, goal):
        return self.sign * np.abs(frames[:, 0, 0, 0].astype(np.float64) - float(goal[0, 0, 0]))

    def predict_windows(self, frames, actions):
        assert frames.shape[1] == 3 and actions.shape[1] == 2        # the agent's own window
        return self.predict(frames[:, -1:])


def test_distance_ranking_rewards_the_order_of_the_relevant_features_only():
    from pixelplan.envs.core import GoalTask
    from pixelplan.runs.distances import Windows, distance_ranking
    rng = np.random.default_rng(0)
    n = 40
    x = rng.permutation(n).astype(np.float64) * 5                   # the relevant feature, as the pixel value
    junk = rng.normal(size=n) * 100                                 # an irrelevant feature, much larger
    frames = np.repeat(x.astype(np.uint8)[:, None, None, None, None], 3, 1) * np.ones((1, 1, 4, 4, 3), np.uint8)
    windows = Windows(frames=frames, actions=np.zeros((n, 2, 1), np.float32), last_features=np.stack([x, junk], 1))
    tasks = []
    for gx in (0.0, 60.0, 195.0):
        goal = np.full((4, 4, 3), int(gx), np.uint8)
        tasks.append(GoalTask(goal, np.array([gx, 0.0]), start_state=np.zeros(1), start_frame=goal,
                              start_features=np.array([gx, 0.0]), relevant=np.array([True, False]), threshold=1.0))
    blur = lambda last: np.full_like(last, 100)                     # a video model that predicts one grey frame
    record = distance_ranking({"right": _FeatureReader(1), "backwards": _FeatureReader(-1),
                               "perfect video": _FeatureReader(1, predict=lambda last: last),
                               "blurred video": _FeatureReader(1, predict=blur)}, tasks, windows)
    assert record["right"]["true_frames"] == pytest.approx(1.0)
    assert record["backwards"]["true_frames"] == pytest.approx(-1.0)
    assert record["pixel MSE"]["true_frames"] == pytest.approx(1.0)    # here the pixels are the feature
    assert "predicted_frames" not in record["right"]
    perfect = record["perfect video"]
    assert perfect["predicted_frames"] == pytest.approx(1.0) and perfect["prediction_mse"] == 0.0
    # predictions that carry no information leave no order (every task skipped: NaN)
    assert math.isnan(record["blurred video"]["predicted_frames"]) and record["blurred video"]["prediction_mse"] > 0
    # the truth is the relevant feature's: ranking by the irrelevant one does not score 1
    junk_reader = _FeatureReader(1)
    junk_reader.distance = lambda f, g: np.abs(junk - 0.0)
    assert abs(distance_ranking({"junk": junk_reader}, tasks, windows)["junk"]["true_frames"]) < 0.5


class _LineEnv:
    """A 1-D point: the state is its position, an action moves it, the frame shows the
    position as its pixel value and the features are (position, 0)."""

    class action_space:
        shape = (1,)

    def __init__(self):
        self.x, self.resets = 0.0, []

    def _frame(self):
        return np.full((4, 4, 3), int(round(self.x)), np.uint8)

    def reset(self, options=None):
        self.x = float(options["state"][0])
        self.resets.append(self.x)
        return self._frame(), {"features": np.array([self.x, 0.0])}

    def step(self, action):
        self.x = float(np.clip(self.x + action[0], 0, 255))
        return self._frame(), 0.0, False, False, {"features": np.array([self.x, 0.0])}


def test_futures_from_starts_replay_each_tasks_start_and_rank_their_final_frames():
    from pixelplan.envs.core import GoalTask
    from pixelplan.runs.distances import futures_from_starts, ranking_from_starts
    env, rng = _LineEnv(), np.random.default_rng(0)
    tasks = []
    for start, gx in ((50.0, 120.0), (200.0, 150.0)):
        goal = np.full((4, 4, 3), int(gx), np.uint8)
        tasks.append(GoalTask(goal, np.array([gx, 0.0]), start_state=np.array([start]),
                              start_frame=np.full((4, 4, 3), int(start), np.uint8), start_features=np.array([start, 0.0]),
                              relevant=np.array([True, False]), threshold=1.0))
    taken = []

    def sample(r, n):
        taken.append(np.round(r.uniform(-10, 10, (n, 1))).astype(np.float32))
        return taken[-1]

    futures = futures_from_starts(env, tasks, count=6, steps=2, pad=2, sample_actions=sample, rng=rng)
    assert env.resets == [50.0] * 6 + [200.0] * 6                      # every future from its task's start
    w = futures[0]
    assert w.frames.shape == (6, 4, 4, 4, 3) and w.actions.shape == (6, 3, 1)
    assert np.all(w.frames[:, :2, 0, 0, 0] == 50) and np.all(w.actions[:, 0] == 0)   # the padded start
    for i in range(6):                                                # the env's own final state
        assert w.last_features[i, 0] == pytest.approx(50 + taken[i].sum())
        assert np.array_equal(w.actions[i, 1:], taken[i])
    record = ranking_from_starts({"right": _FeatureReader(1), "backwards": _FeatureReader(-1)}, tasks, futures)
    assert record["right"]["true_frames"] == pytest.approx(1.0)
    assert record["backwards"]["true_frames"] == pytest.approx(-1.0)


def test_frames_with_the_block_moved_show_it_there_and_leave_the_state(tmp_path):
    from pixelplan.envs import make
    env = make("tabletop:push1", height=32, width=32).unwrapped
    frame, info = env.reset(seed=3)
    state = env.get_state()
    xy = np.array([[info["features"][7], info["features"][8]], [0.15, 0.6]])
    frames = env.frames_with_block_at(state, 0, xy)
    assert np.array_equal(frames[0], frame) and not np.array_equal(frames[1], frame)
    assert np.array_equal(env.get_state(), state)
    with pytest.raises(ValueError, match="no block 1"):
        env.frames_with_block_at(state, 1, xy)
    env.close()
