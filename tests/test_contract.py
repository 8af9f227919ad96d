"""The one shape every agent fits: EnvSpec, Box actions end to end, rewards and returns, the
agent contract's hooks as the drivers call them, and the clear refusals where an agent and an
env do not fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import is_piece_of_an_episode, small_run_config
from pixelplan import config as config_lib
from pixelplan import envs
from pixelplan.agents import Agent, Decision, EnvSpec, make_agent
from pixelplan.agents.random import RandomAgent
from pixelplan.data.replay import FLOAT_PAD, ReplayBuffer
from pixelplan.envs.core import spec_of
from pixelplan.envs.vector import EnvFactory, EnvPool
from pixelplan.envs.wrappers import FrameStack
from pixelplan.runs import common as common_mod
from pixelplan.runs.evaluate import evaluate
from pixelplan.runs.train import load_agent, train
from support import point_env

REPO = Path(__file__).resolve().parents[1]
GOAL_ENV = "tests.support.point_env:make_goal_env"
REWARD_ENV = "tests.support.point_env:make_reward_env"
BOX = EnvSpec((12, 12), 2, None, 8, action_shape=(2,), action_low=(-1, -1), action_high=(1, 1))


@pytest.fixture(autouse=True)
def repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))     # tests.support.point_env, however pytest was started


# ---------------------------------------------------------------------- EnvSpec
def test_env_spec_of_discrete_box_and_reward_envs():
    grid = spec_of(FrameStack(envs.make("gridworld"), 3))
    assert (grid.frame_shape, grid.frame_stack, grid.n_actions, grid.discrete) == ((27, 27), 3, 4, True)
    assert grid.has_goals and not grid.has_reward and grid.action_dtype == np.int64
    box = spec_of(FrameStack(point_env.make_goal_env(), 2))
    assert box == BOX and not box.discrete and box.action_dtype == np.float32
    low, high = box.action_bounds()
    assert low.tolist() == [-1, -1] and high.tolist() == [1, 1]
    reward = spec_of(point_env.make_reward_env())
    assert reward.has_reward and not reward.has_goals


def test_env_spec_round_trips_and_reads_the_older_four_key_form():
    for spec in (BOX, EnvSpec((4, 5, 3), 1, 6, 10), EnvSpec((8, 8), 2, 3, 5, has_reward=True, has_goals=False)):
        again = EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec
    old = {"frame_shape": (27, 27), "frame_stack": 2, "n_actions": 4, "max_episode_steps": 12}
    assert EnvSpec.from_dict(old) == EnvSpec((27, 27), 2, 4, 12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_actions=0), "n_actions >= 1"),
    (dict(n_actions=3, action_shape=(2,)), "no Box shape"),
    (dict(n_actions=None), "non-empty action_shape"),
    (dict(n_actions=None, action_shape=(2,), action_low=(0,), action_high=(1, 1)), "one low and high"),
    (dict(n_actions=None, action_shape=(1,), action_low=(1,), action_high=(0,)), "low <= high"),
    (dict(n_actions=2, has_goals=False), "goals .* or pay a reward"),
])
def test_env_spec_refuses_what_no_agent_could_use(kwargs, match):
    base = dict(frame_shape=(4, 4), frame_stack=1, max_episode_steps=3)
    with pytest.raises(ValueError, match=match):
        EnvSpec(**{**base, **kwargs})


@pytest.mark.parametrize("agent", ["glamor", "gcsl", "discern"])
def test_discrete_goal_agents_refuse_box_actions_and_reward_tasks_clearly(agent):
    cfg = config_lib.preset("debug")
    if agent != "gcsl":          # GCSL takes Box actions too (a Gaussian policy: MBOLD's behaviour cloning)
        with pytest.raises(ValueError, match="needs a Discrete action space.*actions discrete"):
            make_agent(agent, cfg, BOX, torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="reward task with no goals"):
        make_agent(agent, cfg, EnvSpec((8, 8), 1, 3, 5, has_reward=True, has_goals=False), torch.device("cpu"), 0)


def test_every_agent_fits_the_protocol():
    cfg = config_lib.preset("debug")
    spec = EnvSpec((27, 27), 2, 4, 12)
    for name in ("glamor", "gcsl", "discern", "random"):
        agent = make_agent(name, cfg, spec, torch.device("cpu"), 0)
        assert isinstance(agent, Agent), name
        assert (agent.sampler is None) == (not agent.learns)


# ---------------------------------------------------------------------- Box actions
def test_random_agent_draws_box_actions_uniformly_within_the_bounds():
    spec = EnvSpec((12, 12), 1, None, 8, action_shape=(3,), action_low=(-1, 0, 5), action_high=(1, 2, 5))
    agent = RandomAgent(None, spec, torch.device("cpu"), 0)
    decision = agent.act(np.zeros((4000, 1, 12, 12), np.uint8), None, np.zeros(4000, np.int64), True, 0)
    a = decision.actions
    assert a.dtype == np.float32 and a.shape == (4000, 3) and not decision.stop.any()
    assert (a[:, 0] >= -1).all() and (a[:, 0] <= 1).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 2).all()
    assert (a[:, 2] == 5).all()
    assert abs(a[:, 0].mean()) < 0.05 and abs(a[:, 1].mean() - 1) < 0.05 and abs(a[:, 0].std() - 3 ** -0.5) < 0.03


def test_store_keeps_float_actions_of_any_shape_across_the_wrap():
    store = ReplayBuffer(11, (2, 2), 2, action_shape=(2, 3), action_dtype="float32")
    rng = np.random.default_rng(0)
    episodes = []
    for length in (4, 3, 5, 2):            # 5, 4, 6, 3 frames: the ring of 11 wraps and evicts
        frames = rng.integers(0, 256, size=(length + 1, 2, 2), dtype=np.uint8)
        actions = rng.normal(size=(length, 2, 3)).astype(np.float32)
        store.add_episode(frames, actions, rng.normal(size=length))
        episodes.append((frames, actions))
    kept = store.episodes()
    assert len(kept) == 2
    for (frames, actions), (f, a) in zip(episodes[-2:], kept):
        assert np.array_equal(frames, f) and np.array_equal(actions, a) and a.dtype == np.float32
    starts = store.episode_slots()[:, 0]
    batch = store.gather(starts, np.array([3, 1]), max_k=4)
    assert batch.actions.shape == (2, 4, 2, 3)
    assert np.array_equal(batch.actions[0, :3], episodes[2][1][:3]) and (batch.actions[0, 3] == FLOAT_PAD).all()
    assert np.array_equal(batch.actions[1, :1], episodes[3][1][:1]) and (batch.actions[1, 1:] == FLOAT_PAD).all()
    again = ReplayBuffer(11, (2, 2), 2, action_shape=(2, 3), action_dtype="float32")
    again.load_state_dict(store.state_dict())
    assert all(np.array_equal(x, y) for e1, e2 in zip(again.episodes(), kept) for x, y in zip(e1, e2))
    with pytest.raises(ValueError, match="finite"):
        store.add_episode(np.zeros((2, 2, 2), np.uint8), np.full((1, 2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"shape \(L, \*\(2, 3\)\)"):
        store.add_episode(np.zeros((2, 2, 2), np.uint8), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        ReplayBuffer(11, (2, 2), 2).load_state_dict(store.state_dict())


def test_env_pool_sends_float_actions_to_worker_processes_unchanged():
    factory = EnvFactory(GOAL_ENV, {}, 1)
    actions = np.array([[0.3, -0.7], [1.0, 0.25]], np.float32)
    results = []
    for workers in (0, 1):
        with EnvPool(factory, 2, workers) as pool:
            pool.reset([0, 1], [5, 6])
            results.append(pool.step([0, 1], actions)[0])
    assert np.array_equal(*results)


def test_a_box_action_env_trains_and_evaluates_end_to_end_with_the_random_agent(run_dir):
    cfg = small_run_config(run_dir, agent="random", env=GOAL_ENV, frame_stack=1)
    summary = train(cfg)
    assert summary["env_steps"] == cfg.steps and summary["updates"] == 0
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["eval_episodes"] == 4
    assert "mean_return" not in summary               # a goal task pays nothing
    assert (run_dir / "goals_vs_achieved.png").exists()
    # The saved run evaluates again, through the CLI.
    proc = subprocess.run([sys.executable, "-m", "pixelplan", "eval", "--run", str(run_dir)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["success_rate"] == summary["success_rate"]


def test_a_goal_agent_on_a_box_env_is_a_one_line_error_with_exit_code_2(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pixelplan", "train", "--env", GOAL_ENV, "--agent", "glamor",
                           "--preset", "debug", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2
    assert "GLAMOR needs a Discrete action space" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------- rewards and returns
def test_reported_returns_are_the_sums_of_the_rewards_the_env_paid():
    made = []

    def factory():
        env = point_env.make_reward_env(max_episode_steps=6)     # single frames: evaluate stacks them
        made.append(env.env)                    # the inner Point env, which logs what it paid
        return env

    spec = spec_of(factory())
    made.clear()
    agent = RandomAgent(None, spec, torch.device("cpu"), 3)
    result = evaluate(agent, factory, None, episodes=5, batch=5)
    assert len(made) == 5 and result.success is None and result.goal_frames is None
    paid = np.array([sum(env.paid) for env in made])
    assert np.all(np.array([len(env.paid) for env in made]) == 6)
    assert np.array_equal(result.returns, paid) and np.all(paid < 0)
    assert result.metrics()["mean_return"] == pytest.approx(paid.mean())


def test_a_reward_task_trains_and_reports_its_mean_return(run_dir):
    cfg = small_run_config(run_dir, agent="random", env=REWARD_ENV, frame_stack=1, eval_episodes=None)
    summary = train(cfg)
    assert summary["eval_episodes"] == 10 and summary["mean_return"] < 0 and "success_rate" not in summary
    assert (run_dir / "learning_curve.png").exists() and not (run_dir / "goals_vs_achieved.png").exists()
    _, agent, _, goals = load_agent(run_dir)
    assert goals is None and isinstance(agent, RandomAgent)


# ---------------------------------------------------------------------- hooks, through the real loop
def test_the_drivers_call_the_episode_hooks_with_row_ids_and_the_episodes_final_frames(run_dir, monkeypatch):
    calls = []
    make = common_mod.make_agent

    def spying(*args, **kwargs):
        agent = make(*args, **kwargs)
        begin, act, end = agent.begin_episodes, agent.act, agent.end_episodes

        def begin_episodes(rows, goals, explore):
            calls.append(("begin", explore, np.asarray(rows).tolist(), None if goals is None else goals.copy()))
            return begin(rows, goals, explore)

        def act_(state, goal, t, explore, env_steps, rows=None):
            calls.append(("act", explore, np.asarray(rows).tolist(), state[:, -1].copy(), np.asarray(t).copy()))
            return act(state, goal, t, explore, env_steps, rows)

        def end_episodes(rows, final_frames, goals, explore):
            calls.append(("end", explore, np.asarray(rows).tolist(), final_frames.copy()))
            return end(rows, final_frames, goals, explore)

        agent.begin_episodes, agent.act, agent.end_episodes = begin_episodes, act_, end_episodes
        return agent

    monkeypatch.setattr(common_mod, "make_agent", spying)
    cfg = small_run_config(run_dir, agent="gcsl", steps=2 * 48, eval_every=48)
    train(cfg)
    kinds = [c[0] for c in calls]
    # Every episode begins before its first action and ends after its last, collection and evaluation alike.
    assert kinds[0] == "begin" and kinds[-1] == "end"
    depth = 0
    for c in calls:
        depth += {"begin": 1, "end": -1, "act": 0}[c[0]]
        assert depth in (0, 1)
        if c[0] == "act":
            assert depth == 1
    collect_begins = [c for c in calls if c[0] == "begin" and c[1]]
    assert len(collect_begins) == 2 and all(c[2] == [0, 1, 2, 3] for c in collect_begins)
    assert any(c[0] == "begin" and not c[1] for c in calls)          # evaluation episodes too
    # The final frames handed to end_episodes are what the rows last saw (grid world T = 12).
    first_round = calls[: calls.index(next(c for c in calls if c[0] == "end")) + 1]
    acts = [c for c in first_round if c[0] == "act"]
    assert [c[4].tolist() for c in acts] == [[t] * 4 for t in range(12)]
    end = first_round[-1]
    assert end[2] == [0, 1, 2, 3]
    assert not np.array_equal(end[3], acts[0][3])   # the episode moved (an old view would repeat a frame)


def test_decision_go_never_stops():
    d = Decision.go(np.array([1, 2, 3]))
    assert d.stop.tolist() == [False] * 3 and d.actions.tolist() == [1, 2, 3]


def test_collect_writes_box_action_episodes_that_re_simulate_exactly(tmp_path):
    from pixelplan.data.dataset import read_attrs, read_episodes, verify
    from pixelplan.envs.core import random_action
    from pixelplan.runs.collect import collect, episode_rng

    out = tmp_path / "point.h5"
    attrs = collect(REWARD_ENV, 5, out, n_envs=2, shard_episodes=2, progress=False, seed=4)
    assert verify(out)["content_hash"] == attrs["content_hash"] == read_attrs(out)["content_hash"]
    episodes = list(read_episodes(out))
    assert len(episodes) == 5
    space = point_env.make_reward_env().action_space
    for index, ep in enumerate(episodes):
        assert ep.actions.dtype == np.float32 and ep.actions.shape == (8, 2)
        # The episode's own stream gives its reset seed, then its actions, uniform in the Box...
        rng = episode_rng(4, index)
        reset_seed = int(rng.integers(2**31))
        expected = np.stack([random_action(space, rng) for _ in range(8)])
        assert np.array_equal(ep.actions, expected) and (np.abs(expected) <= 1).all()
        # ... and the env, driven again with them, gives the same frames and rewards.
        env = point_env.make_reward_env()
        frame, _ = env.reset(seed=reset_seed)
        frames, rewards = [frame], []
        for action in ep.actions:
            frame, reward, *_ = env.step(action)
            frames.append(frame)
            rewards.append(reward)
        assert np.array_equal(np.stack(frames), ep.frames)
        assert np.array_equal(ep.rewards, np.float32(rewards)) and (ep.rewards < 0).all()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_row_stacks_follow_the_one_stacking_rule_row_by_row(k):
    from pixelplan.envs.wrappers import RowStacks, stack_from_history

    rng = np.random.default_rng(k)
    n, shape = 3, (2, 3)
    stacks = RowStacks(n, k, shape)
    history: dict[int, list] = {}
    for _ in range(40):
        rows = np.flatnonzero(rng.random(n) < 0.6)
        if not len(rows):
            continue
        frames = rng.integers(0, 256, size=(len(rows), *shape), dtype=np.uint8)
        if rng.random() < 0.2 or not history:
            stacks.start(rows, frames)
            for r, f in zip(rows, frames):
                history[int(r)] = [f]
        else:
            rows = np.array([r for r in rows if int(r) in history], dtype=np.int64)
            frames = frames[: len(rows)]
            stacks.push(rows, frames)
            for r, f in zip(rows, frames):
                history[int(r)].append(f)
        for r, frames_so_far in history.items():
            assert np.array_equal(stacks.array[r], stack_from_history(frames_so_far, k)[-1])
    with pytest.raises(ValueError, match="single frames"):
        stacks.push([0], np.zeros((1, k, *shape), np.uint8))


def test_box_action_windows_trained_on_are_what_the_env_produced_through_the_real_loop(run_dir, monkeypatch):
    """A learning agent on a Box-action reward env (a random actor that trains on sequence
    windows, as PlaNet will): every window its update is given, frames, float actions and
    rewards, is a contiguous piece of an episode the env itself produced, through the real
    online loop, the store and the sampler."""
    import importlib

    from pixelplan.data.samplers import SequenceSampler

    # The module the run's env factory is imported from (``support.point_env`` above is another copy).
    Point = importlib.import_module("tests.support.point_env").Point
    produced: dict[int, list] = {}                   # env instance -> its episodes, as they happened
    real_reset, real_step = Point.reset, Point.step

    def reset(self, **kwargs):
        frame, info = real_reset(self, **kwargs)
        produced.setdefault(id(self), []).append({"frames": [frame.copy()], "actions": [], "rewards": []})
        return frame, info

    def step(self, action):
        frame, reward, *rest = real_step(self, action)
        ep = produced[id(self)][-1]
        ep["frames"].append(frame.copy())
        ep["actions"].append(np.array(action, np.float32))
        ep["rewards"].append(np.float32(reward))
        return (frame, reward, *rest)

    monkeypatch.setattr(Point, "reset", reset)
    monkeypatch.setattr(Point, "step", step)
    seen = []
    make = common_mod.make_agent

    def learning_random(*args, **kwargs):
        agent = make(*args, **kwargs)
        agent.learns, agent.sampler = True, SequenceSampler(6, 4)
        agent.update = lambda batch: seen.append(batch) or {}
        return agent

    monkeypatch.setattr(common_mod, "make_agent", learning_random)
    cfg = small_run_config(run_dir, agent="random", env=REWARD_ENV, frame_stack=1, env_workers=0,
                           eval_episodes=2, replay_capacity=200)
    summary = train(cfg)
    assert summary["updates"] == len(seen) > 0
    episodes = [ep for eps in produced.values() for ep in eps if ep["actions"]]
    assert len(episodes) >= summary["episodes"]     # every stored episode was seen being made

    for batch in seen:
        assert batch.actions.dtype == np.float32 and batch.actions.shape == (6, 3, 2)
        for frames, actions, rewards in zip(batch.frames, batch.actions, batch.rewards):
            assert is_piece_of_an_episode(episodes, frames, actions, rewards)
