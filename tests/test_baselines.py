"""The baselines (GCSL, DISCERN), their shared parts, the replay's next state and the sweep."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from pixelplan import cli
from pixelplan import config as config_lib
from pixelplan.agents import ObsSpec, make_agent
from pixelplan.agents.discern import DiscernAgent, discern_reward
from pixelplan.agents.gcsl import GcslAgent
from pixelplan.data.replay import PAD, HindsightBatch, ReplayBuffer
from pixelplan.nets.goal_policy import time_encoding
from pixelplan.runs.sweep import plan_jobs
from pixelplan.runs.train import CHECKPOINT, train

from conftest import small_run_config, with_glamor_values

T = 8
SPEC = ObsSpec(frame_shape=(27, 27), frame_stack=2, n_actions=4, max_episode_steps=T)
CPU = torch.device("cpu")


def make(name: str, seed: int = 0, glamor: dict | None = None, **section):
    cfg = config_lib.preset("debug")
    if glamor:
        cfg = with_glamor_values(cfg, **glamor)
    if section:
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **section))
    return make_agent(name, cfg, SPEC, CPU, seed)


def pattern(value: int, n: int = 1) -> np.ndarray:
    """n copies of a frame: a bright square whose position depends on ``value``."""
    frame = np.zeros((27, 27), np.uint8)
    r, c = divmod(value % 9, 3)
    frame[r * 9:(r + 1) * 9, c * 9:(c + 1) * 9] = 255
    return np.repeat(frame[None], n, 0)


def batch_of(state, goal, first_action, k, next_state=None) -> HindsightBatch:
    n = len(k)
    actions = np.full((n, T), PAD, np.int64)
    actions[:, 0] = first_action
    return HindsightBatch(state=state, goal=goal, actions=actions, k=np.asarray(k, np.int64),
                          start=np.zeros(n, np.int64), next_state=next_state)


# ------------------------------------------------------------- time encoding
def test_time_encoding_values_and_one_to_one_over_acting_range():
    enc = time_encoding(torch.tensor([0, 2, 4, 6, 8]), 8)
    want = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(enc, want, atol=1e-6)
    assert torch.allclose(enc.norm(dim=-1), torch.ones(5))
    acting = time_encoding(torch.arange(1, T + 1), T)      # h = T - t for t in 0..T-1
    distances = torch.cdist(acting, acting) + torch.eye(T)
    assert distances.min() > 0.5                            # every h gets its own point
    with pytest.raises(ValueError, match="horizon"):
        time_encoding(torch.tensor([1]), 0)


# ---------------------------------------------------------------------- GCSL
def test_gcsl_learns_actions_that_depend_on_the_goal_and_on_the_time_left():
    """The policy must read both the goal and h: each decides the target action here."""
    agent = make("gcsl", glamor=dict(lr=3e-3))
    assert isinstance(agent, GcslAgent)
    state = pattern(0, 2)[None].repeat(4, 0)                      # (4, stack 2, 27, 27), one state
    goal = np.concatenate([pattern(1), pattern(1), pattern(5), pattern(5)])
    k = np.array([1, 6, 1, 6])
    target = np.array([0, 1, 2, 3])                               # (goal, h) -> action
    batch = batch_of(state, goal, target, k)
    for _ in range(150):
        metrics = agent.update(batch)
    assert metrics["accuracy"] == 1.0, metrics
    logits = agent.logits(state, goal, k)
    assert (logits.argmax(-1).numpy() == target).all()
    # Acting at step t asks with h = T - t: t = T - 6 gives h = 6.
    agent.cfg.eval_action = "greedy"
    acts = agent.act(state, goal, np.array([T - 1, T - 6, T - 1, T - 6]), explore=False, env_steps=0).actions
    assert (acts == target).all()


def test_gcsl_ignores_final_frame_samples_and_samples_its_policy():
    agent = make("gcsl")
    state, goal = pattern(0, 2)[None].repeat(3, 0), pattern(1, 3)
    loss, metrics = agent.loss(batch_of(state, goal, PAD, [0, 0, 0]))
    assert loss.item() == 0.0 and metrics["loss"] == 0.0
    # k = 0 rows are dropped: the loss of a mixed batch is the loss of its k > 0 rows alone.
    mixed, _ = agent.loss(batch_of(state, goal, [PAD, 2, 3], [0, 2, 3]))
    alone, _ = agent.loss(batch_of(state[1:], goal[1:], [2, 3], [2, 3]))
    assert torch.allclose(mixed, alone)
    # Sampling: with a policy that is not one-hot, the sampled actions vary.
    many = agent.act(state[:1].repeat(200, 0), goal[:1].repeat(200, 0), np.zeros(200, np.int64),
                     explore=False, env_steps=0).actions
    assert len(set(many.tolist())) > 1


def test_gcsl_random_collection_ablation_ignores_the_policy():
    agent = make("gcsl", glamor=dict(collect="random"))
    state, goal = pattern(0, 2)[None].repeat(500, 0), pattern(1, 500)
    with torch.no_grad():
        for p in agent.policy.head[-1].parameters():   # a policy that always says action 3
            p.zero_()
        agent.policy.head[-1].bias[3] = 50.0
    explored = agent.act(state, goal, np.zeros(500, np.int64), explore=True, env_steps=10**9).actions
    assert 0.15 < (explored == 3).mean() < 0.35                   # uniform over 4 actions
    assert (agent.act(state[:20], goal[:20], np.zeros(20, np.int64), False, 0).actions == 3).all()


# ------------------------------------------------------------------- DISCERN
def test_discern_reward_is_the_clipped_dot_product():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-0.6, -0.8]])
    assert torch.allclose(discern_reward(a, b), torch.tensor([1.0, 0.6, 0.0, 0.0]))


def test_discern_agent_reward_is_one_on_the_goal_and_in_0_1_elsewhere():
    agent = make("discern")
    frames = np.stack([pattern(i)[0] for i in range(9)])
    same = agent.reward(frames, frames)
    assert torch.allclose(same, torch.ones(9), atol=1e-5)
    other = agent.reward(frames, frames[::-1].copy())
    assert (other >= 0).all() and (other <= 1 + 1e-6).all()
    # It is max(0, xi(a) . xi(g)) of the agent's own embedding.
    with torch.no_grad():
        ea = agent.embed(torch.as_tensor(frames[:, None]))
        eg = agent.embed(torch.as_tensor(frames[::-1].copy()[:, None]))
    assert torch.allclose(other, (ea * eg).sum(-1).clamp_min(0), atol=1e-6)


def test_discern_discriminator_learns_to_pick_the_pursued_goal():
    """Final frames equal to their goal, among decoys: the loss must fall well below chance."""
    agent = make("discern", glamor=dict(lr=3e-3), decoys=4)
    rng = np.random.default_rng(0)
    chance = math.log(5)
    losses = []
    for _ in range(120):
        order = rng.permutation(9)
        ids, decoy_ids = order[rng.integers(5, size=16)], order[5:]        # decoys: never a goal
        final, pursued = np.stack([pattern(i)[0] for i in ids]), np.stack([pattern(i)[0] for i in ids])
        decoys = np.stack([pattern(j)[0] for j in decoy_ids])
        loss = agent.discriminator_loss(final, pursued, decoys)
        agent.learner.optimizer.zero_grad()
        loss.backward()
        agent.learner.optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.5 * chance
    assert np.mean(losses[-10:]) < 0.25 * chance, (losses[0], losses[-10:])
    # A trained discriminator rewards reaching the goal more than reaching another frame.
    frames = np.stack([pattern(i)[0] for i in range(9)])
    assert agent.reward(frames, np.roll(frames, 1, 0)).mean() < 0.5


def test_discern_td_targets_against_brute_force():
    agent = make("discern")
    rng = np.random.default_rng(1)
    n = 6
    nxt = rng.integers(0, 256, size=(n, 2, 27, 27), dtype=np.uint8)
    goal = rng.integers(0, 256, size=(n, 27, 27), dtype=np.uint8)
    achieved = rng.integers(0, 256, size=(n, 27, 27), dtype=np.uint8)
    k = np.array([1, 2, 3, 1, 5, 8])
    with torch.no_grad():                       # make the target net differ from the online one
        for p in agent.q_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    target, r = agent.td_targets(nxt, goal, achieved, k)
    for i in range(n):
        reward = float(agent.reward(achieved[i:i + 1], goal[i:i + 1])[0])
        if k[i] == 1:
            want = reward
        else:
            with torch.no_grad():
                s, g = torch.as_tensor(nxt[i:i + 1]), torch.as_tensor(goal[i:i + 1, None])
                h = torch.tensor([k[i] - 1])
                online = agent.q(s, agent.q.encode_goal(g), h)[0]
                tq = agent.q_target(s, agent.q_target.encode_goal(g), h)[0]
            want = agent.cfg.discount * float(tq[online.argmax()])
        assert math.isclose(float(target[i]), want, rel_tol=1e-5, abs_tol=1e-6), (i, float(target[i]), want)
        assert math.isclose(float(r[i]), reward, rel_tol=1e-5, abs_tol=1e-6)


def test_discern_goal_buffer_keeps_diverse_frames():
    """Once full, a replacement happens only if it raises the buffer's total pairwise distance."""
    agent = make("discern", goal_buffer_size=4)

    def spread(buffer):
        x = buffer.reshape(len(buffer), -1).astype(np.float64)
        return float(((x[:, None] - x[None]) ** 2).mean(-1).sum())

    for v in (10, 11, 12, 13):
        agent._add_goal(np.full((27, 27), v, np.uint8))
    assert agent.goal_count == 4
    agent._add_goal(np.full((27, 27), 250, np.uint8))     # far from all: always replaces one
    assert (agent.goal_buffer == 250).all(axis=(1, 2)).sum() == 1
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(60):
        before_buffer = agent.goal_buffer.copy()
        agent._add_goal(np.full((27, 27), rng.integers(0, 256), np.uint8))
        changed += not (agent.goal_buffer == before_buffer).all()
        assert spread(agent.goal_buffer) >= spread(before_buffer)
    assert 0 < changed < 60


def test_discern_pursues_goal_buffer_goals_and_pairs_them_with_where_it_ended():
    agent = make("discern")
    for i in range(3):
        agent._add_goal(pattern(i)[0])
    loop_goals = pattern(8, 2)
    state = pattern(4, 2)[None].repeat(2, 0)
    agent.begin_episodes(np.array([0, 1]), loop_goals, explore=True)
    agent.act(state, loop_goals, np.array([0, 0]), explore=True, env_steps=0)
    pursued = [agent._pursued[0].copy(), agent._pursued[1].copy()]
    assert all(any((p == pattern(i)[0]).all() for i in range(3)) for p in pursued)
    agent.act(state, loop_goals, np.array([1, 1]), explore=True, env_steps=0)   # kept mid-episode
    assert all((agent._pursued[i] == pursued[i]).all() for i in range(2))
    agent.end_episodes(np.array([0, 1]), pattern(7, 2), loop_goals, explore=False)   # evaluation: no pairs
    assert agent.pair_count == 0 and agent.goal_count == 3
    agent.end_episodes(np.array([0, 1]), pattern(7, 2), loop_goals, explore=True)
    assert agent.pair_count == 2
    assert all((agent.pair_goal[i] == pursued[i]).all() for i in range(2))
    assert (agent.pair_final[:2] == pattern(7)[0]).all()
    assert agent.goal_count == 5                                  # both final frames join the buffer
    # With goal_source="env" the loop's goal is pursued.
    env_agent = make("discern", goal_source="env")
    env_agent._add_goal(pattern(0)[0])
    env_agent.begin_episodes(np.array([0, 1]), loop_goals, explore=True)
    assert (env_agent._pursued[0] == loop_goals[0]).all()
    # Rows are env row ids: an episode of row 5 keeps its goal whatever batch position it has.
    agent.begin_episodes(np.array([5]), loop_goals[:1], explore=True)
    chosen = agent._pursued[5].copy()
    agent.act(state, loop_goals, np.array([3, 1]), explore=True, env_steps=0, rows=np.array([2, 5]))
    assert (agent._pursued[5] == chosen).all() and 2 not in agent._pursued


def test_discern_state_dict_round_trip_acts_the_same():
    agent = make("discern")
    rng = np.random.default_rng(2)
    for i in range(5):
        agent._add_goal(pattern(i)[0])
    agent.end_episodes(np.array([0, 1]), pattern(3, 2), pattern(4, 2), explore=True)
    state = rng.integers(0, 256, size=(4, 2, 27, 27), dtype=np.uint8)
    nxt = rng.integers(0, 256, size=(4, 2, 27, 27), dtype=np.uint8)
    goal = rng.integers(0, 256, size=(4, 27, 27), dtype=np.uint8)
    agent.update(batch_of(state, goal, [0, 1, 2, 3], [1, 2, 3, 4], next_state=nxt))
    copy = make("discern", seed=5)
    copy.load_state_dict(agent.state_dict())
    t = np.array([0, 1, 0, 3])
    assert (copy.act(state, goal, t, True, 100).actions == agent.act(state, goal, t, True, 100).actions).all()
    assert copy.goal_count == agent.goal_count and copy.pair_count == agent.pair_count
    with pytest.raises(ValueError, match="next_state"):
        agent.update(batch_of(state, goal, [0, 1, 2, 3], [1, 2, 3, 4]))


# ------------------------------------------------------------ end to end
@pytest.mark.parametrize("agent", ["gcsl", "discern"])
def test_baseline_trains_evaluates_and_resumes_on_the_grid_world(agent, tmp_path):
    cfg = small_run_config(tmp_path / "run", agent=agent)
    summary = train(cfg)
    assert summary["agent"] == agent and summary["updates"] > 0
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["eval_episodes"] == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_keys = set().union(*(r for r in records if r["kind"] == "train"))
    assert ("accuracy" if agent == "gcsl" else "disc_loss") in train_keys
    payload = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    if agent == "discern":   # the run loop handed it every episode's final frame
        assert payload["agent"]["pair_count"] == summary["episodes"]
    # Resume: a longer run continues from the checkpoint.
    longer = train(dataclasses.replace(small_run_config(tmp_path / "run", agent=agent), steps=cfg.steps + 48))
    assert longer["env_steps"] == cfg.steps + 48 and longer["updates"] > summary["updates"]


# ------------------------------------------------------------ replay next state
def test_replay_next_state_is_the_stack_one_step_later_across_the_wrap():
    replay = ReplayBuffer(10, (2, 2), frame_stack=3)
    rng = np.random.default_rng(0)
    for length in (4, 5, 6):               # the third episode wraps around the ring's end
        frames = (np.arange(length + 1, dtype=np.uint8) + 10 * length)[:, None, None].repeat(2, 1).repeat(2, 2)
        replay.add_episode(frames, np.arange(length))
    starts = replay.valid_indices()
    ks = np.zeros(len(starts), np.int64)
    plain = replay.gather(starts, ks, 1)
    withn = replay.gather(starts, ks, 1, with_next=True)
    assert plain.next_state is None and (withn.state == plain.state).all()
    for i, slot in enumerate(starts):
        left = replay.steps_left(np.array([slot]))[0]
        if left == 0:
            assert (withn.next_state[i] == withn.state[i]).all()
        else:
            later = replay.gather(np.array([(slot + 1) % 10]), np.zeros(1, np.int64), 1).state[0]
            assert (withn.next_state[i] == later).all()
            assert withn.next_state[i, -1, 0, 0] == withn.state[i, -1, 0, 0] + 1
    # Asking for it draws no extra random numbers.
    a = replay.sample(5, 3, np.random.default_rng(3))
    b = replay.sample(5, 3, np.random.default_rng(3), with_next=True)
    assert (a.start == b.start).all() and (a.k == b.k).all()


# ------------------------------------------------------------------- config
def test_old_config_without_baseline_sections_loads_with_defaults():
    data = config_lib.to_dict(config_lib.preset("debug"))
    for key in ("gcsl", "discern", "label"):
        data.pop(key)
    cfg = config_lib.from_dict(data)
    assert cfg.discern == config_lib.DiscernConfig() and cfg.label is None
    assert config_lib.incompatible_fields(cfg, dataclasses.replace(cfg, label="x")) == []
    with pytest.raises(ValueError, match="discern.relabel_prob"):
        config_lib.validate(dataclasses.replace(cfg, discern=config_lib.DiscernConfig(relabel_prob=2)))


# -------------------------------------------------------------------- sweep
def test_sweep_plans_named_runs_and_rejects_bad_input(tmp_path):
    jobs = plan_jobs(["glamor", "random"], ["gridworld", "dmc:point_mass-easy"], [0, 1], tmp_path, "ablation")
    assert len(jobs) == 8 and [j.seed for j in jobs[:4]] == [0] * 4
    assert jobs[1].out.name == "gridworld-random-ablation-seed0"
    assert jobs[2].out.name == "dmc-point_mass-easy-glamor-ablation-seed0"
    assert "--label" in jobs[0].command(1, []) and jobs[0].command(1, ["--steps", "5"])[-2:] == ["--steps", "5"]
    with pytest.raises(ValueError, match="unknown agent 'gslc'"):
        plan_jobs(["gslc"], ["gridworld"], [0], tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        plan_jobs(["glamor"], ["gridworld"], [0, 0], tmp_path)
    assert cli.main(["sweep", "--out", str(tmp_path), "--", "--agent", "gcsl"]) == 2


def test_sweep_cli_runs_and_writes_the_labelled_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", "--agents", "gcsl", "random", "--seeds", "0", "--out", str(out),
                     "--label-suffix", "quick", "--", "--preset", "debug", "--steps", "96",
                     "--eval-every", "96", "--checkpoint-every", "96", "--min-steps-learn", "48",
                     "--eval-episodes", "2"])
    assert code == 0
    table = json.loads((out / "table" / "table.json").read_text())
    assert set(table["gridworld"]) == {"gcsl-quick", "random-quick"}
    assert (out / "table" / "curve-gridworld.png").exists()
    assert json.loads((out / "gridworld-gcsl-quick-seed0" / "summary.json").read_text())["label"] == "gcsl-quick"
