"""DM Control goal envs: each of the paper's seven tasks end to end, goal sets, the same-state rule."""

import gymnasium as gym
import numpy as np
import pytest

from pixelplan import envs
from pixelplan.agents.base import ObsSpec
from pixelplan.agents.random import RandomAgent
from pixelplan.envs.dmc import PAPER_TASKS
from pixelplan.envs.core import spec_of
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
    factory = EnvFactory(f"dmc:{task}", dict(cache_dir=cache, **SMALL))   # single frames: evaluate stacks them
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


# ---------------------------------------------------------------------- continuous actions, reward tasks
TINY = dict(height=16, width=16)


def test_default_goal_task_keeps_its_goal_set_key(monkeypatch):
    """The new options must not change what the cache of a default (discrete) goal task is keyed by."""
    import pixelplan.envs.goals as goals_module
    from pixelplan.envs.dmc import _versions

    class Seen(Exception):
        pass

    def record(key, build, cache_dir=None):
        raise Seen(key)

    monkeypatch.setattr(goals_module, "cached_goal_sets", record)
    with pytest.raises(Seen) as seen:
        envs.make("dmc:point_mass-easy", **SMALL)
    assert seen.value.args[0] == {"env": "dmc:point_mass-easy", "height": 80, "width": 104, "grayscale": True,
                                  "camera_id": 0, "frame_skip": 4, "T": 6, "versions": _versions(), "seed": 0,
                                  "n_eval": 3, "n_train": 6, "range_rollouts": 6}
    with pytest.raises(Seen) as seen:
        envs.make("dmc:point_mass-easy", actions="continuous", **SMALL)
    assert seen.value.args[0]["actions"] == "continuous", "continuous goal sets are cached apart"


def test_continuous_actions_step_and_change_the_state(cache):
    env = envs.make("dmc:point_mass-easy", actions="continuous", cache_dir=cache, **TINY, **SMALL)
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.dtype == np.float32
    assert env.action_space.shape == (2,) and np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert spec_of(env).action_shape == (2,) and spec_of(env).has_goals
    _, info = env.reset(seed=0)
    start = info["features"]
    for _ in range(3):
        frame, reward, terminated, truncated, info = env.step(np.array([1.0, -1.0], np.float32))
    assert frame.shape == (16, 16) and reward == 0.0 and not (terminated or truncated)
    assert not np.allclose(info["features"], start)
    # goal sets were built from random continuous actions (random_rollout uses random_action)
    assert len(env.evaluation_goals()) == 3 and env.goal_spec.dim == 2
    # out-of-bounds actions are clipped to the bounds before they reach MuJoCo
    env.step(np.array([5.0, -7.0]))
    assert np.array_equal(env.physics.data.ctrl, [1.0, -1.0])


def test_bad_continuous_actions_get_one_line_errors():
    env = envs.make("dmc:cartpole-swingup", task="reward", **TINY)
    env.reset(seed=0)
    for bad, match in ((np.zeros(2), r"shape \(1,\).*got shape \(2,\)"), (0.5, r"got shape \(\)"),
                       (np.array([np.nan]), "must be finite"), (np.array([np.inf]), "must be finite"),
                       ("left", "got a str")):
        with pytest.raises(ValueError, match=match) as exc:
            env.step(bad)
        assert "\n" not in str(exc.value)


def test_planet_defaults_of_reward_tasks():
    env = envs.make("dmc:cartpole-swingup", task="reward")
    spec = spec_of(env)
    assert spec.frame_shape == (64, 64, 3) and not spec.discrete and spec.action_shape == (1,)
    assert spec.action_low == (-1.0,) and spec.action_high == (1.0,)
    assert env.frame_skip == 8 and spec.max_episode_steps == 125
    assert spec.has_reward and not spec.has_goals and env.goal_spec is None
    for name, repeat in (("walker-walk", 2), ("finger-spin", 2), ("cheetah-run", 4), ("reacher-easy", 4),
                         ("ball_in_cup-catch", 4), ("pendulum-swingup", 4)):
        other = envs.make(f"dmc:{name}", task="reward")
        assert (other.frame_skip, other.max_episode_steps) == (repeat, 1000 // repeat), name
    # every default can be overridden; T follows the action repeat unless it is given too
    env = envs.make("dmc:cartpole-swingup", task="reward", height=16, width=24, grayscale=True, frame_skip=3,
                    actions="discrete")
    assert env.observation_space.shape == (16, 24) and env.action_space.n == 3
    assert (env.frame_skip, env.max_episode_steps) == (3, 333)
    assert envs.make("dmc:cartpole-swingup", task="reward", max_episode_steps=7).max_episode_steps == 7


def test_reward_is_the_sum_of_dm_controls_rewards_over_the_action_repeat():
    from dm_control import suite

    env = envs.make("dmc:cartpole-swingup", task="reward", **TINY)
    direct = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    frame, info = env.reset(seed=11)
    direct.task.random.seed(11)
    direct.reset()
    assert frame.shape == (16, 16, 3) and info == {}
    assert np.array_equal(env.physics.get_state(), direct.physics.get_state())
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-1, 1, size=1).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        expected = sum(direct.step(action.astype(np.float64)).reward for _ in range(8))
        assert reward == pytest.approx(expected, rel=1e-12) and reward > 0
        assert not terminated and not truncated and "features" not in info
    assert np.array_equal(env.physics.get_state(), direct.physics.get_state())


def test_reward_task_episodes_end_with_dm_control():
    # 400 env steps a step: dm_control's 1000-step episode ends inside the third agent step
    env = envs.make("dmc:cartpole-swingup", task="reward", frame_skip=400, max_episode_steps=5, **TINY)
    env.reset(seed=0)
    ends = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    assert not env.step(np.zeros(1, np.float32))[3]


def test_reward_tasks_refuse_goal_calls():
    env = envs.make("dmc:cheetah-run", task="reward", **TINY)   # no goal features needed
    env.reset(seed=0)
    assert env.goal_spec is None and env.goal_sets is None and env.n_training_goals == 0
    for call in (env.evaluation_goals, lambda: env.training_goals(2), env.current_goal,
                 lambda: env.random_rollout(np.random.default_rng(0))):
        with pytest.raises(ValueError, match="reward task .* no goals") as exc:
            call()
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="drop the goal-set option.* n_train_goals"):
        envs.make("dmc:cheetah-run", task="reward", n_train_goals=10)
    with pytest.raises(ValueError, match="task must be one of 'goal', 'reward'"):
        envs.make("dmc:cheetah-run", task="rewards")
    with pytest.raises(ValueError, match="actions must be one of"):
        envs.make("dmc:cheetah-run", task="reward", actions="box")
    with pytest.raises(ValueError, match="use frame_skip, PlaNet's action repeat"):
        envs.make("dmc:cheetah-run", task="reward", action_repeat=2)
