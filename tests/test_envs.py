"""Tests for pixelplan.envs (contract, grid world, wrappers, goal helpers, registry)."""
from __future__ import annotations

import doctest
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from pixelplan import envs
from pixelplan.envs import (
    FrameStack,
    Goal,
    GoalEnv,
    GoalSpec,
    GridWorld,
    GymGoalEnv,
    check_goal_frame,
    diverse_goals,
    load_goals,
    save_goals,
    stack_from_history,
)
from pixelplan.envs import core as envs_core
from pixelplan.envs.gridworld import AGENT, FLOOR, WALL

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def agent_block(frame: np.ndarray, cell_px: int = 3) -> tuple[int, int]:
    """(row, col) of the agent in layout coordinates, found from the pixels."""
    rows, cols = np.nonzero(frame == AGENT)
    assert len(rows) == cell_px * cell_px
    assert rows.max() - rows.min() == cell_px - 1 and cols.max() - cols.min() == cell_px - 1
    return rows.min() // cell_px - 1, cols.min() // cell_px - 1


# ---------------------------------------------------------------- registry


def test_registry_make_and_names():
    assert {"gridworld", "gridworld-fourrooms"} <= set(envs.names())
    env = envs.make("gridworld")
    assert isinstance(env, GridWorld) and isinstance(env, GoalEnv)
    assert (env.rows, env.cols) == (7, 7)
    four = envs.make("gridworld-fourrooms", start="random")
    assert (four.rows, four.cols) == (11, 11) and four.random_start


def test_registry_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        envs.make("gridwrold")
    msg = str(err.value)
    assert "gridworld-fourrooms" in msg and "gridworld" in msg
    assert "did you mean 'gridworld'" in msg


def test_registry_bad_kwargs():
    with pytest.raises(ValueError, match=r"'sise' \(did you mean 'size'\?\).*accepted options: size, layout"):
        envs.make("gridworld", sise=5)
    with pytest.raises(ValueError, match="gridworld-fourrooms.*'size'"):
        envs.make("gridworld-fourrooms", size=5)


def test_registry_register_and_prefix(monkeypatch):
    # work on copies so the test names do not leak into the global registry
    monkeypatch.setattr(envs, "_FACTORIES", dict(envs._FACTORIES))
    monkeypatch.setattr(envs, "_PREFIXES", dict(envs._PREFIXES))
    envs.register("test-tiny", lambda size=2: GridWorld(size=size), overwrite=True)
    assert envs.make("test-tiny").rows == 2
    with pytest.raises(ValueError, match="already registered"):
        envs.register("test-tiny", GridWorld)
    envs.register("testpfx:", lambda rest, cell_px=3: GridWorld(size=int(rest), cell_px=cell_px), overwrite=True)
    assert envs.make("testpfx:4", cell_px=2).observation_space.shape == (12, 12)
    assert "testpfx:*" in envs.names()
    with pytest.raises(ValueError, match="accepted options: cell_px"):
        envs.make("testpfx:4", bogus=1)


def test_envs_package_does_not_import_torch():
    code = "import sys, pixelplan.envs; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- grid world


def test_gridworld_render_shape_and_centre_start():
    env = GridWorld()
    frame, info = env.reset(seed=0)
    assert frame.shape == (27, 27) and frame.dtype == np.uint8
    assert env.observation_space.shape == (27, 27) and env.observation_space.contains(frame)
    assert info["features"].dtype == np.float64 and info["features"].tolist() == [3.0, 3.0]
    assert agent_block(frame) == (3, 3)
    # border is wall, interior floor except the agent
    assert (frame[:3] == WALL).all() and (frame[:, -3:] == WALL).all()
    assert (frame[3:-3, 3:-3] != WALL).all()
    assert set(np.unique(frame)) == {FLOOR, WALL, AGENT}
    assert env.render().shape == (27, 27)
    assert GridWorld(render_mode="rgb_array").reset()[0].shape == (27, 27)


def test_gridworld_actions_move_agent_pixels():
    env = GridWorld()
    env.reset()
    expected = {UP: (2, 3), DOWN: (4, 3), LEFT: (3, 2), RIGHT: (3, 4)}
    for a, cell in expected.items():
        env.reset()
        frame, reward, terminated, truncated, info = env.step(a)
        assert agent_block(frame) == cell
        assert tuple(info["features"]) == cell
        assert reward == 0.0 and terminated is False and truncated is False


def test_gridworld_borders_and_walls_block():
    env = GridWorld()
    env.reset()
    for _ in range(5):
        frame, *_ , info = env.step(UP)
    assert tuple(info["features"]) == (0, 3) and agent_block(frame) == (0, 3)
    for _ in range(5):
        frame, *_ , info = env.step(LEFT)
    assert tuple(info["features"]) == (0, 0)
    env = GridWorld(layout="""
        ...
        S#.
        ...
    """)
    assert env.start_cell == (1, 0)
    frame = env.reset()[0]
    assert (frame[6:9, 6:9] == WALL).all()  # the inner wall is drawn
    assert tuple(env.step(RIGHT)[-1]["features"]) == (1, 0)  # wall to the right
    assert tuple(env.step(LEFT)[-1]["features"]) == (1, 0)  # border to the left
    assert tuple(env.step(UP)[-1]["features"]) == (0, 0)


def test_gridworld_default_horizon_and_truncation():
    env = GridWorld()
    assert env.max_episode_steps == 12
    env.reset()
    for t in range(1, 13):
        *_, truncated, _ = env.step(RIGHT)
        assert truncated == (t == 12)
    assert GridWorld(max_episode_steps=3).max_episode_steps == 3
    # random start: 2 x the diameter of the 7x7 grid
    assert GridWorld(start="random").max_episode_steps == 24


def test_gridworld_random_start_determinism():
    def run(seed):
        env = GridWorld(start="random")
        frame, info = env.reset(seed=seed)
        acts = np.random.default_rng(seed).integers(4, size=10)
        traj = [info["features"].tolist()] + [env.step(int(a))[-1]["features"].tolist() for a in acts]
        return traj, frame

    (t1, f1), (t2, f2) = run(3), run(3)
    assert t1 == t2 and np.array_equal(f1, f2)
    starts = {tuple(GridWorld(start="random").reset(seed=s)[1]["features"]) for s in range(40)}
    assert len(starts) > 10


def test_gridworld_bfs_distances():
    env = GridWorld()
    assert env.shortest_path_length((3, 3), (0, 0)) == 6
    assert env.shortest_path_length((0, 0), (6, 6)) == 12
    assert env.optimal_steps([3.0, 3.0], [6.0, 0.0]) == 6
    four = envs.make("gridworld-fourrooms")
    # (0,0) -> (0,6) must cross the doorway at (2,5): 7 + 3 moves
    assert four.shortest_path_length((0, 0), (0, 6)) == 10
    assert four.shortest_path_length((0, 0), (10, 10)) == 20
    assert len(four.free_cells) == 104
    d = four.distance_matrix()
    assert (d == d.T).all() and (np.diag(d) == 0).all()
    with pytest.raises(ValueError, match="wall"):
        four.shortest_path_length((0, 0), (0, 5))


def test_gridworld_evaluation_goals_match_walked_frames():
    env = GridWorld()
    goals = env.evaluation_goals()
    assert len(goals) == 49
    assert [tuple(g.features) for g in goals] == [(r, c) for r in range(7) for c in range(7)]
    for g in goals:
        env.reset()
        r, c = (int(v) for v in g.features)
        frame = env.reset()[0]
        for a, n in ((UP if r < 3 else DOWN, abs(r - 3)), (LEFT if c < 3 else RIGHT, abs(c - 3))):
            for _ in range(n):
                frame, *_ = env.step(a)
        assert np.array_equal(frame, g.frame)
        assert np.array_equal(env.current_goal().frame, g.frame)
        assert env.goal_spec.achieved(env.current_goal().features, g.features)


def test_gridworld_training_goals():
    env = GridWorld()
    goals = env.training_goals(30, np.random.default_rng(0))
    again = env.training_goals(30, np.random.default_rng(0))
    assert len(goals) == 30 and all(a == b for a, b in zip(goals, again))
    assert all(tuple(int(v) for v in g.features) in env.free_cells for g in goals)
    assert len({tuple(g.features) for g in goals}) > 10


def test_gridworld_default_training_goals_random_walks():
    # the GoalEnv default (random-policy episodes) also works on the grid world
    env = GridWorld()
    goals = GoalEnv.training_goals(env, 5, 0)
    for g in goals:
        d = env.shortest_path_length((3, 3), tuple(int(v) for v in g.features))
        assert d <= env.max_episode_steps
        assert np.array_equal(g.frame, env.goal_at(g.features).frame)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layout=""), "empty"),
        (dict(layout="\n  \n"), "empty"),
        (dict(layout="..\n..."), "same width"),
        (dict(layout="..\nx."), "unknown character"),
        (dict(layout="##\n##"), "no free cell"),
        (dict(layout="S.\n.S"), "at most one"),
        (dict(layout=".#.\n.#."), "reach"),
        (dict(size=1), "size"),
        (dict(start="corner"), "start"),
        (dict(start=(9, 9)), "outside"),
        (dict(cell_px=0), "cell_px"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(layout="no_such_layout"), "builtin"),
    ],
)
def test_gridworld_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridWorld(**kwargs)


def test_gridworld_layout_file_and_bad_action(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("...\n.#.\n...\n")
    env = GridWorld(layout=str(p), cell_px=2)
    assert env.reset()[0].shape == (10, 10)
    assert env.start_cell == (0, 1)  # centre is a wall: closest free cell, row-major tie-break
    with pytest.raises(ValueError, match="action"):
        env.step(4)
    with pytest.raises(ValueError, match="action"):
        env.step(-1)


# ---------------------------------------------------------------- GoalSpec / Goal


def test_goalspec_exact_cell_semantics():
    spec = GridWorld().goal_spec
    assert spec.names == ("row", "col") and spec.tolerance.tolist() == [0.5, 0.5]
    assert spec.achieved([3.0, 3.0], [3.0, 3.0])
    assert not spec.achieved([3.0, 4.0], [3.0, 3.0])
    batch = spec.achieved(np.array([[3, 3], [2, 3], [3, 3.4]]), np.array([3, 3]))
    assert batch.tolist() == [True, False, True]


def test_goalspec_default_tolerance_and_io():
    spec = GoalSpec.from_ranges(["x", "y", "z"], [0, -1, 5], [10, 1, 5.001])
    assert np.allclose(spec.tolerance, [1.0, 0.2, 0.1])  # tiny range counts as 1
    assert spec.achieved([1.0, 0.0, 5.0], [0.0, 0.2, 5.1])
    assert not spec.achieved([1.01, 0.0, 5.0], [0.0, 0.0, 5.0])
    assert np.allclose(spec.normalise([5.0, 0.0, 5.0]), [0.5, 0.5, 0.0])
    assert GoalSpec.from_dict(spec.to_dict()) == spec
    assert GoalSpec.from_ranges(["a"], [0], [4], tolerance=0.5).tolerance.tolist() == [0.5]
    with pytest.raises(ValueError, match="high must be >= low"):
        GoalSpec.from_ranges(["a"], [1], [0])
    with pytest.raises(ValueError, match="expected 2"):
        GoalSpec.from_ranges(["a", "b"], [0], [1, 2])
    with pytest.raises(ValueError, match="last axis of size 3"):
        spec.achieved([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="uint8"):
        Goal(np.zeros((4, 4), np.float32), np.zeros(2))


def test_check_goal_frame():
    ok = np.zeros((27, 27), np.uint8)
    assert check_goal_frame(ok, (27, 27)) is ok
    with pytest.raises(ValueError, match=r"shape \(30, 30\).*expected \(27, 27\) uint8 \(a single frame"):
        check_goal_frame(np.zeros((30, 30), np.uint8), (27, 27))
    with pytest.raises(ValueError, match="frame stack or a batch"):
        check_goal_frame(np.zeros((4, 27, 27), np.uint8), (27, 27))
    with pytest.raises(ValueError, match="not normalised"):
        check_goal_frame(np.zeros((27, 27), np.float32), (27, 27))
    with pytest.raises(ValueError, match="goal.frame"):
        check_goal_frame(Goal(ok, [0.0, 0.0]), (27, 27))


# ---------------------------------------------------------------- FrameStack


def test_framestack_padding_rule():
    env = FrameStack(GridWorld(), k=3)
    obs, _ = env.reset()
    assert obs.shape == (3, 27, 27) and obs.dtype == np.uint8
    assert env.observation_space.shape == (3, 27, 27)
    assert all(np.array_equal(obs[i], obs[0]) for i in range(3))
    first = obs[0]
    obs1, *_ = env.step(RIGHT)
    assert np.array_equal(obs1[0], first) and np.array_equal(obs1[1], first)
    assert agent_block(obs1[2]) == (3, 4)
    obs2, *_ = env.step(RIGHT)
    obs3, *_ = env.step(RIGHT)
    assert [agent_block(f) for f in obs3] == [(3, 4), (3, 5), (3, 6)]
    # forwarded goal API; goals stay single frames
    assert env.goal_spec.names == ("row", "col") and env.max_episode_steps == 12
    assert env.current_goal().frame.shape == (27, 27)
    assert len(env.evaluation_goals()) == 49


def test_stack_from_history_matches_wrapper():
    env = FrameStack(GridWorld(), k=4)
    raw = GridWorld()
    frames = [raw.reset()[0]]
    stacks = [env.reset()[0]]
    for a in [RIGHT, UP, UP, LEFT, DOWN, RIGHT]:
        frames.append(raw.step(a)[0])
        stacks.append(env.step(a)[0])
    assert np.array_equal(stack_from_history(frames, 4), np.stack(stacks))
    s = stack_from_history(np.arange(3), 2)
    assert s.tolist() == [[0, 0], [0, 1], [1, 2]]


# ---------------------------------------------------------------- GymGoalEnv


class _Corridor(gym.Env):
    """Tiny RGB corridor: the agent is a red pixel in a 2x6 image."""

    observation_space = gym.spaces.Box(0, 255, (2, 6, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        img = np.zeros((2, 6, 3), np.uint8)
        img[:, self.x, 0] = 255
        return img

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(3))
        return self._obs(), {}

    def step(self, a):
        self.x = min(max(self.x + (1 if a == 1 else -1), 0), 5)
        return self._obs(), 1.0, self.x == 5, False, {}


def test_gym_goal_env_adapter(tmp_path):
    spec = GoalSpec.from_ranges(["x"], [0], [5], tolerance=0.5)
    env = GymGoalEnv(_Corridor(), lambda e: [e.x], spec, max_episode_steps=4)
    assert env.observation_space.shape == (2, 6, 3)
    frame, info = env.reset(seed=1)
    x0 = info["features"][0]
    frame, reward, term, trunc, info = env.step(1)
    assert reward == 0.0 and info["env_reward"] == 1.0 and info["features"][0] == x0 + 1
    assert np.array_equal(env.current_goal().frame, frame)
    for _ in range(3):
        *_, trunc, _ = env.step(0)
    assert trunc  # truncated at T=4
    gray = GymGoalEnv(_Corridor(), lambda e: [e.x], spec, max_episode_steps=4, grayscale=True, cache_dir=tmp_path)
    g, info = gray.reset(seed=0)
    assert g.shape == (2, 6) and g.dtype == np.uint8 and g[0, int(info["features"][0])] == 76
    goals = gray.training_goals(6, 0)
    assert [x.features.tolist() for x in goals] == [x.features.tolist() for x in gray.training_goals(6, 0)]
    assert all(x.frame.shape == (2, 6) for x in goals)
    # a fixed evaluation set is built on first use: one goal per distinct state reached (x in 0..5)
    assert sorted(g.features[0] for g in gray.evaluation_goals()) == [0, 1, 2, 3, 4, 5]
    assert gray.optimal_steps([0.0], [1.0]) is None
    # frame_fn path and frame validation
    fn_env = GymGoalEnv(_Corridor(), lambda e: [e.x], spec, frame_fn=lambda e, o: o[..., 0], max_episode_steps=4)
    assert fn_env.observation_space.shape == (2, 6)
    with pytest.raises(ValueError, match="uint8"):
        GymGoalEnv(_Corridor(), lambda e: [e.x], spec, frame_fn=lambda e, o: o.astype(float), max_episode_steps=4)
    with pytest.raises(ValueError, match="max_episode_steps"):
        GymGoalEnv(_Corridor(), lambda e: [e.x], spec)


def test_core_docstring_example():
    result = doctest.testmod(envs_core)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- goals.py


def test_diverse_goals_spreads_and_is_deterministic():
    spec = GoalSpec.from_ranges(["x", "y"], [0, 0], [1, 1])
    frame = np.zeros((2, 2), np.uint8)
    grid = [(x, y) for x in np.linspace(0, 1, 11) for y in np.linspace(0, 1, 11)]
    order = np.random.default_rng(0).permutation(len(grid))
    cands = [Goal(frame, grid[i]) for i in order]

    def min_pairwise(goals):
        pts = np.stack([g.features for g in goals])
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
        return d[np.triu_indices(len(goals), 1)].min()

    picked = diverse_goals(cands, 4, spec, np.random.default_rng(1))
    again = diverse_goals(cands, 4, spec, np.random.default_rng(1))
    assert [g.features.tolist() for g in picked] == [g.features.tolist() for g in again]
    rng = np.random.default_rng(2)
    random_scores = [min_pairwise([cands[i] for i in rng.choice(len(cands), 4, replace=False)]) for _ in range(200)]
    assert min_pairwise(picked) > np.mean(random_scores)
    assert min_pairwise(picked) >= 0.5
    assert len(diverse_goals(cands[:3], 5, spec, 0)) == 3


def test_save_load_round_trip(tmp_path):
    env = GridWorld()
    goals = env.evaluation_goals()[:5]
    path = save_goals(tmp_path / "goals", goals, env.goal_spec)
    assert path.endswith(".npz")
    loaded, spec = load_goals(tmp_path / "goals")
    assert spec == env.goal_spec
    assert len(loaded) == 5 and all(a == b for a, b in zip(goals, loaded))
    assert loaded[0].frame.dtype == np.uint8 and loaded[0].features.dtype == np.float64
    with pytest.raises(ValueError, match="at least one"):
        save_goals(tmp_path / "x", [], env.goal_spec)
