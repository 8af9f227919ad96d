"""Atari goal envs: the paper's 14 games, their RAM features, the preprocessing and the same-state rule."""

import cv2
import numpy as np
import pytest

from pixelplan import envs
from pixelplan.agents.base import ObsSpec
from pixelplan.agents.random import RandomAgent
from pixelplan.envs.atari import PAPER_GAMES, RAM_FEATURES
from pixelplan.envs.vector import EnvFactory
from pixelplan.runs.evaluate import evaluate

# Small goal sets keep the tests fast; the defaults (30 / 1000 / 500) build the same way.
SMALL = dict(n_eval_goals=3, n_train_goals=5, range_rollouts=4, max_episode_steps=8)
# No sticky actions and no random no-ops: the emulator is then a function of the actions alone.
EXACT = dict(SMALL, sticky_prob=0.0, noop_max=0, max_episode_steps=60)
N_ACTIONS = {"bowling": 6, "boxing": 18, "breakout": 4, "frostbite": 18, "montezuma_revenge": 18, "ms_pacman": 9,
             "pitfall": 18, "pong": 6, "private_eye": 18, "qbert": 6, "riverraid": 18, "seaquest": 18,
             "skiing": 3, "tennis": 18}

# For each game: (feature, action A, action B, agent steps). From the same start, holding A
# for that many steps leaves the feature larger than holding B does (the directions were
# read off the screen). A RAM index that does not follow the player (a score, a timer, a
# neighbouring byte) fails, unless it happens to move the same way.
MOVES = {
    "bowling": [("player_y", "UP", "DOWN", 15)],
    "boxing": [("player_x", "RIGHT", "LEFT", 15), ("player_y", "DOWN", "UP", 15)],
    "breakout": [("player_x", "RIGHT", "LEFT", 15)],
    "frostbite": [("player_x", "RIGHT", "LEFT", 45), ("player_y", "DOWN", "NOOP", 45)],
    "montezuma_revenge": [("player_x", "RIGHT", "LEFT", 6)],
    "ms_pacman": [("player_x", "RIGHT", "LEFT", 45), ("player_y", "DOWN", "UP", 45)],
    "pitfall": [("player_x", "RIGHT", "NOOP", 15)],
    "pong": [("player_y", "LEFT", "RIGHT", 15)],  # RIGHT moves the paddle up
    "private_eye": [("player_x", "RIGHT", "NOOP", 15)],
    "qbert": [("player_x", "RIGHT", "DOWN", 45), ("player_y", "DOWN", "NOOP", 45)],
    "riverraid": [("player_x", "RIGHT", "LEFT", 45)],
    "seaquest": [("player_x", "RIGHT", "LEFT", 45), ("player_y", "DOWN", "NOOP", 45)],
    "skiing": [("player_x", "RIGHT", "LEFT", 15)],
    "tennis": [("player_x", "RIGHT", "LEFT", 15), ("player_y", "UP", "DOWN", 15)],
}
#: actions taken before the move, where the player cannot move until then (tennis: serve first)
BEFORE_MOVE = {"tennis": ["FIRE"] * 3}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("goal-cache"))


def _action(env, name: str) -> int:
    names = [a.name for a in env._actions]
    return names.index(name)


def _hold(env, action: int, steps: int, before: tuple[int, ...] = ()) -> tuple[np.ndarray, bool]:
    """Reset, take ``before``, then hold ``action`` for ``steps`` agent steps; (features at the end, terminated)."""
    _, info = env.reset(seed=0)
    for a in before:
        env.step(a)
    for _ in range(steps):
        _, _, terminated, _, info = env.step(action)
        if terminated:
            return info["features"], True
    return info["features"], False


def test_every_paper_game_has_a_move_test():
    assert set(MOVES) == set(PAPER_GAMES) == set(N_ACTIONS)
    for game, moves in MOVES.items():
        assert any(f.startswith("player_") for f, *_ in moves)
        assert all(f in RAM_FEATURES[game] for f, *_ in moves)


@pytest.mark.parametrize("game", PAPER_GAMES)
def test_game_resets_steps_and_its_player_features_follow_the_player(game, cache):
    env = envs.make(f"atari:{game}", cache_dir=cache, **EXACT)
    assert env.observation_space.shape == (104, 80)
    assert env.action_space.n == N_ACTIONS[game]
    assert env.goal_spec.names == tuple(RAM_FEATURES[game])

    frame, info = env.reset(seed=0)
    assert frame.shape == (104, 80) and frame.dtype == np.uint8 and frame.std() > 0  # a real picture
    assert info["features"].shape == (len(RAM_FEATURES[game]),)
    for feature, a, b, steps in MOVES[game]:
        i = env.goal_spec.names.index(feature)
        before = tuple(_action(env, name) for name in BEFORE_MOVE.get(game, ()))
        after_a, ended_a = _hold(env, _action(env, a), steps, before)
        after_b, ended_b = _hold(env, _action(env, b), steps, before)
        assert not (ended_a or ended_b), f"{game}: the move sequence should not lose a life"
        assert after_a[i] > after_b[i], (
            f"{game}: {feature} (RAM {RAM_FEATURES[game][feature]}) is {after_a[i]:g} after {steps} x {a} "
            f"and {after_b[i]:g} after {steps} x {b}: the index does not follow the player")


@pytest.mark.parametrize("game", ["pong", "ms_pacman"])
def test_goal_sets_and_a_tiny_evaluation(game, cache):
    env = envs.make(f"atari:{game}", cache_dir=cache, **SMALL)
    assert len(env.evaluation_goals()) == 3 and len(env.training_goals(5)) == 5
    spec = env.goal_spec
    assert np.all(spec.low <= spec.high) and np.all(spec.tolerance > 0)
    for g in env.goal_sets.evaluation + env.goal_sets.training:
        assert g.frame.shape == (104, 80) and g.frame.std() > 0

    agent = RandomAgent(None, ObsSpec((104, 80), 2, env.action_space.n, SMALL["max_episode_steps"]), "cpu", 0)
    result = evaluate(agent, EnvFactory(f"atari:{game}", dict(cache_dir=cache, **SMALL)),
                      env.evaluation_goals())
    assert result.success.shape == (3,) and result.final_frames.shape == (3, 104, 80)
    assert np.all((1 <= result.steps) & (result.steps <= SMALL["max_episode_steps"]))


def test_frame_and_features_come_from_the_same_emulator_state_even_when_a_life_is_lost(cache):
    """Every step, including one cut short by a lost life, reads the screen and the RAM after
    the same emulator frame (the GLAMOR release read them one action apart)."""
    env = envs.make("atari:montezuma_revenge", cache_dir=cache, **EXACT)
    env.reset(seed=0)
    right = _action(env, "RIGHT")
    for t in range(20):
        frame, _, terminated, _, info = env.step(right)
        screen = env.ale.getScreenGrayscale()
        assert np.array_equal(info["features"], env.ale.getRAM()[list(RAM_FEATURES["montezuma_revenge"].values())])
        assert np.array_equal(env._raw[env._newest], screen)  # the newest of the two pooled frames is now
        pooled = np.maximum(env._raw[0], env._raw[1])
        assert np.array_equal(frame, cv2.resize(pooled, (80, 104), interpolation=cv2.INTER_AREA))
        goal = env.current_goal()
        assert np.array_equal(goal.frame, frame) and np.array_equal(goal.features, info["features"])
        if terminated:
            break
    assert terminated, "walking right off the first ledge costs a life, which ends the episode"
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(right)


def test_a_lost_life_ends_the_episode_only_when_asked(cache):
    keep = envs.make("atari:montezuma_revenge", cache_dir=cache, end_on_life_loss=False, **EXACT)
    keep.reset(seed=0)
    lives = keep.ale.lives()
    for _ in range(20):
        _, _, terminated, _, _ = keep.step(_action(keep, "RIGHT"))
        assert not terminated
    assert keep.ale.lives() < lives


def test_resets_are_seeded_and_start_with_random_noops(cache):
    env = envs.make("atari:pong", cache_dir=cache, **SMALL)

    def episode(seed):
        frames = [env.reset(seed=seed)[0]]
        start = env.ale.getEpisodeFrameNumber()
        for a in [2, 3, 2, 2, 3, 1, 0, 2]:
            frames.append(env.step(a)[0])
        return np.stack(frames), start, env.ale.getEpisodeFrameNumber()

    a, start_a, end_a = episode(7)
    b, start_b, end_b = episode(7)
    assert np.array_equal(a, b) and start_a == start_b
    starts = {episode(s)[1] for s in range(12)}
    assert starts <= set(range(31)) and len(starts) > 3  # 0..30 no-op frames, drawn per reset
    assert end_a - start_a == 8 * 4  # frame skip 4

    pacman = envs.make("atari:ms_pacman", cache_dir=cache, **SMALL)
    pacman.reset(seed=0)
    assert 200 <= pacman.ale.getEpisodeFrameNumber() <= 230  # the game ignores input while its tune plays


class _RecordingALE:
    """Forwards to the real ALE and records the action of every emulator frame."""

    def __init__(self, ale):
        self._ale, self.acts = ale, []

    def act(self, action):
        self.acts.append(action)
        return self._ale.act(action)

    def __getattr__(self, name):
        return getattr(self._ale, name)


def test_sticky_actions_repeat_the_previous_frames_action_a_quarter_of_the_time(cache):
    env = envs.make("atari:pong", cache_dir=cache, **dict(SMALL, noop_max=0, max_episode_steps=10_000))
    env.reset(seed=3)
    env._ale = recorder = _RecordingALE(env._ale)
    up, down = _action(env, "RIGHT"), _action(env, "LEFT")
    n = 600
    for t in range(n):
        env.step(up if t % 2 == 0 else down)
    acts = [a.name for a in recorder.acts]
    assert len(acts) == 4 * n
    wanted = ["RIGHT" if (i // 4) % 2 == 0 else "LEFT" for i in range(4 * n)]
    # The first frame of each step asks for a change of action: it sticks with p = 0.25.
    stuck_first = np.mean([acts[i] != wanted[i] for i in range(4, 4 * n, 4)])
    assert 0.19 <= stuck_first <= 0.31
    # A frame that did take the new action never reverts to the old one within the step.
    for s in range(1, n):
        frames = acts[4 * s: 4 * s + 4]
        took = [f == wanted[4 * s] for f in frames]
        assert took == sorted(took)

    exact = envs.make("atari:pong", cache_dir=cache, **EXACT)
    exact.reset(seed=3)
    exact._ale = recorder = _RecordingALE(exact._ale)
    for t in range(50):
        exact.step(up if t % 2 == 0 else down)
    assert [a.name for a in recorder.acts] == ["RIGHT" if (i // 4) % 2 == 0 else "LEFT" for i in range(200)]


def test_bad_names_options_and_actions_get_clear_errors(cache):
    with pytest.raises(ValueError, match="did you mean atari:ms_pacman"):
        envs.make("atari:mspacman")
    with pytest.raises(ValueError, match="unknown option.*sticky_probability.*did you mean 'sticky_prob'"):
        envs.make("atari:pong", sticky_probability=0.1)
    with pytest.raises(ValueError, match="sticky_prob must be in"):
        envs.make("atari:pong", sticky_prob=1.5)
    env = envs.make("atari:pong", cache_dir=cache, **SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside 0..5"):
        env.step(6)
