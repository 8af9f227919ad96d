"""DM Control goal envs: each of the paper's seven tasks end to end, goal sets, the same-state rule."""

import numpy as np
import pytest

from pixelplan import envs
from pixelplan.agents.base import ObsSpec
from pixelplan.agents.random import RandomAgent
from pixelplan.envs.dmc import PAPER_TASKS
from pixelplan.envs.vector import EnvFactory
from pixelplan.runs.evaluate import evaluate

# Small goal sets keep the tests fast; the defaults (30 / 1000 / 500) build the same way.
SMALL = dict(n_eval_goals=3, n_train_goals=6, range_rollouts=6, max_episode_steps=6)
N_FEATURES = {"ball_in_cup-catch": 4, "cartpole-balance": 3, "finger-spin": 4, "manipulator-bring_ball": 24,
              "pendulum-swingup": 2, "point_mass-easy": 2, "reacher-hard": 2}
N_ACTIONS = {"ball_in_cup-catch": 9, "cartpole-balance": 3, "finger-spin": 9, "manipulator-bring_ball": 11,
             "pendulum-swingup": 3, "point_mass-easy": 9, "reacher-hard": 9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("goal-cache"))


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_task_end_to_end(task, cache):
    env = envs.make(f"dmc:{task}", cache_dir=cache, **SMALL)
    assert env.observation_space.shape == (80, 104)
    assert env.action_space.n == N_ACTIONS[task]
    assert env.goal_spec.dim == N_FEATURES[task]
    assert env.frame_skip == (4 if task.startswith("point_mass") else 1)

    frame, info = env.reset(seed=3)
    assert frame.shape == (80, 104) and frame.dtype == np.uint8 and frame.std() > 0   # a real image
    assert info["features"].shape == (N_FEATURES[task],)
    rng = np.random.default_rng(0)
    frames, feats = [frame], [info["features"]]
    for t in range(SMALL["max_episode_steps"]):
        frame, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        frames.append(frame)
        feats.append(info["features"])
        assert reward == 0.0 and not terminated
        assert truncated == (t == SMALL["max_episode_steps"] - 1)
    assert not np.array_equal(frames[0], frames[-1]), "random actions should change the picture"
    assert not np.allclose(feats[0], feats[-1]), "random actions should change the features"
    assert env.render().shape == (80, 104, 3)

    # goal sets: sizes, ranges cover every goal, frames are real renders
    sets = env.goal_sets
    assert len(env.evaluation_goals()) == 3 and len(env.training_goals(6)) == 6
    spec = env.goal_spec
    assert np.all(spec.low <= spec.high) and np.all(spec.tolerance > 0)
    for g in sets.evaluation + sets.training:
        assert g.frame.shape == (80, 104) and g.frame.std() > 0
        assert g.features.shape == (spec.dim,)

    # a tiny evaluation run: the random agent against the evaluation goals, in this process
    agent = RandomAgent(None, ObsSpec((80, 104), 2, env.action_space.n, SMALL["max_episode_steps"]), "cpu", 0)
    factory = EnvFactory(f"dmc:{task}", dict(cache_dir=cache, **SMALL), frame_stack=2)
    result = evaluate(agent, factory, env.evaluation_goals())
    assert result.success.shape == (3,) and np.all(result.steps == SMALL["max_episode_steps"])
    assert result.final_frames.shape == (3, 80, 104)


def test_goal_frame_and_features_come_from_the_same_physics_state(cache):
    """The GLAMOR release paired a frame with features read one action later; we must not."""
    # cartpole: its whole scene is physics state (reacher, say, also moves a target geom at reset)
    env = envs.make("dmc:cartpole-balance", cache_dir=cache, **SMALL)
    env.reset(seed=1)
    for a in (0, 0, 2, 0):
        frame, *_, info = env.step(a)
    goal = env.current_goal()
    assert np.array_equal(goal.frame, frame) and np.array_equal(goal.features, info["features"])
    state = env.physics.get_state().copy()

    other = envs.make("dmc:cartpole-balance", cache_dir=cache, **SMALL)
    other.reset(seed=99)
    with other.physics.reset_context():
        other.physics.set_state(state)
    assert np.array_equal(other._render(), goal.frame)
    obs = other._env.task.get_observation(other.physics)
    assert np.array_equal(other._read_features(obs), goal.features)


def test_goal_set_goals_are_final_states_of_their_rollouts(cache):
    """A stored goal's frame is the render of the state its features describe."""
    env = envs.make("dmc:point_mass-easy", cache_dir=cache, **SMALL)
    rng = np.random.default_rng(7)
    goal = env.random_rollout(np.random.default_rng(7))
    frame_again = env._render()
    assert np.array_equal(goal.frame, frame_again)
    assert np.array_equal(goal.features, env._read_features(env._env.task.get_observation(env.physics)))
    no_frame = env.random_rollout(rng, capture_frame=False)
    assert np.array_equal(no_frame.features, goal.features) and not no_frame.frame.any()


def test_goal_sets_are_deterministic_and_cached(tmp_path, monkeypatch):
    a = envs.make("dmc:point_mass-easy", cache_dir=str(tmp_path / "a"), **SMALL)
    b = envs.make("dmc:point_mass-easy", cache_dir=str(tmp_path / "b"), **SMALL)
    assert a.goal_spec == b.goal_spec
    assert all(x == y for x, y in zip(a.goal_sets.evaluation, b.goal_sets.evaluation))
    assert all(x == y for x, y in zip(a.goal_sets.training, b.goal_sets.training))
    c = envs.make("dmc:point_mass-easy", cache_dir=str(tmp_path / "a"), goal_seed=1, **SMALL)
    assert c.goal_spec != a.goal_spec, "another goal seed gives other goals"

    # the second make loads the file instead of rebuilding
    import pixelplan.envs.goals as goals_module
    monkeypatch.setattr(goals_module, "build_goal_sets", lambda *a, **k: pytest.fail("rebuilt a cached set"))
    again = envs.make("dmc:point_mass-easy", cache_dir=str(tmp_path / "a"), **SMALL)
    assert again.goal_cache_path == a.goal_cache_path and again.goal_spec == a.goal_spec


def test_resets_are_seeded(cache):
    env = envs.make("dmc:pendulum-swingup", cache_dir=cache, **SMALL)
    f1, i1 = env.reset(seed=5)
    f2, i2 = env.reset(seed=6)
    f3, i3 = env.reset(seed=5)
    assert np.array_equal(f1, f3) and np.array_equal(i1["features"], i3["features"])
    assert not np.array_equal(i1["features"], i2["features"])


def test_action_tables(cache):
    env = envs.make("dmc:manipulator-bring_ball", cache_dir=cache, **SMALL)
    table = env._actions
    assert table.shape == (11, 5)
    assert np.all(table[0] == 0)
    assert np.all((table[1:] != 0).sum(axis=1) == 1), "manipulator moves one axis at a time"
    env = envs.make("dmc:point_mass-easy", cache_dir=cache, **SMALL)
    assert {tuple(r) for r in env._actions} == {(x, y) for x in (-1, 0, 1) for y in (-1, 0, 1)}
    with pytest.raises(ValueError, match="outside 0..8"):
        env.reset(seed=0)
        env.step(9)


def test_other_tasks_use_their_position_observations(cache):
    env = envs.make("dmc:hopper-stand", cache_dir=cache, **SMALL)
    assert env.feature_keys == ("position",)
    assert all(not n.startswith("velocity") for n in env.goal_spec.names)


def test_bad_names_and_options_get_clear_errors():
    with pytest.raises(ValueError, match="did you mean dmc:cartpole-balance"):
        envs.make("dmc:cartpole-balanse")
    with pytest.raises(ValueError, match="dmc:<domain>-<task>"):
        envs.make("dmc:cartpole")
    with pytest.raises(ValueError, match="did you mean 'frame_skip'"):
        envs.make("dmc:cartpole-balance", frame_skips=2)


def test_cli_goals_draws_the_evaluation_set(tmp_path, capsys):
    import json

    import imageio.v3 as iio

    from pixelplan import cli
    out = tmp_path / "goals.png"
    options = ["cache_dir", str(tmp_path / "cache")] + [str(x) for kv in SMALL.items() for x in kv]
    assert cli.main(["goals", "--env", "dmc:pendulum-swingup", "--env-options", *options,
                     "--columns", "2", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["goals"] == 3 and info["features"] == ["orientation_0", "orientation_1"]
    image = iio.imread(out)
    assert image.shape == (2 * 2 * 82, 2 * 2 * 106, 3)   # 2 rows x 2 columns of bordered tiles, scale 2
    assert cli.main(["goals", "--env", "dmc:pendulum-swingup", "--n", "0", "--out", str(out)]) == 2
