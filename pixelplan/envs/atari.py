"""Atari 2600 games as visual goal environments (GLAMOR paper 4.1 and table 1a).

``make("atari:<game>")`` builds an :class:`AtariGoalEnv` on the Arcade Learning
Environment (ale-py, whose wheels ship the ROMs). The paper's 14 games are in
:data:`RAM_FEATURES`; their goal features are positions read from the console's RAM.

Preprocessing, per the paper and ``../shared/reference/glamor-facts.md``:

* the game's minimal action set;
* frame skip 4: one agent action is held for 4 emulator frames;
* sticky actions with probability 0.25: on every emulator frame, the previous frame's
  action is repeated instead of the agent's with that probability (Machado et al. 2018);
* the frame is the pixel-wise max of the last two emulator frames, in grayscale, resized
  to 104 (H) x 80 (W) with area interpolation;
* 0-30 random no-op emulator frames at reset (ms_pacman: 200 more, as the game ignores the
  joystick while its tune plays);
* a lost life ends the episode (``terminated``); an episode is T = 50 agent steps.

Goal features: the AtariARI labels of Anand et al. (2019), "Unsupervised state
representation learning in Atari" (the paper's source; the indices are listed in
glamor-facts.md), read as raw RAM bytes. The frame and the features of a goal always
come from the same emulator state: both are read after the last emulator frame of a
step, including a step cut short by a lost life.

Choices of ours, where the paper and the library disagree or are silent (docs/envs.md):

* Sticky actions and the no-op count are drawn from the env's own seeded numpy stream, and
  ALE's internal stickiness is off. The emulator is then a pure function of the action
  sequence, so ``reset(seed=s)`` is ``reset_game()`` plus a reseed, about 20 us. Reseeding
  ALE's own random stream needs a ROM reload, about 85 ms: seven times the cost of a whole
  50-step episode. The behaviour is the same as ALE's (a per-frame repeat with p = 0.25).
* Gymnasium's ``AtariPreprocessing`` wrapper is not used. On a step cut short by a lost
  life it returns the frame of the step before, while the RAM is already that of the
  new state, and a goal's frame and features must come from one state. It also has no
  per-game start delay.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import gymnasium as gym
import numpy as np

from .core import Goal, GoalEnv
from .goals import FixedGoalSets

__all__ = ["AtariGoalEnv", "RAM_FEATURES", "PAPER_GAMES", "make_atari"]

#: goal features of the paper's 14 games: name -> RAM index (AtariARI, Anand et al. 2019)
RAM_FEATURES: dict[str, dict[str, int]] = {
    "bowling": {"ball_x": 30, "ball_y": 41, "player_x": 29, "player_y": 40},
    "boxing": {"player_x": 32, "player_y": 34, "enemy_x": 33, "enemy_y": 35},
    "breakout": {"player_x": 72, "ball_x": 99, "ball_y": 101},
    "frostbite": {"player_x": 102, "player_y": 100},
    "montezuma_revenge": {"player_x": 42, "player_y": 43},
    "ms_pacman": {"player_x": 10, "player_y": 16},
    "pitfall": {"player_x": 97, "player_y": 105},
    "pong": {"ball_x": 49, "ball_y": 54, "enemy_y": 50, "player_y": 51},
    "private_eye": {"player_x": 63, "player_y": 86},
    "qbert": {"player_x": 43, "player_y": 67},
    "riverraid": {"player_x": 51},
    "seaquest": {"player_x": 70, "player_y": 97},
    "skiing": {"player_x": 25, "object_y_0": 87},
    "tennis": {"player_x": 26, "player_y": 24, "enemy_x": 27, "enemy_y": 25, "ball_x": 16, "ball_y": 17},
}
PAPER_GAMES = tuple(RAM_FEATURES)

#: emulator no-op frames at reset on top of the random 0..noop_max
EXTRA_START_NOOPS = {"ms_pacman": 200}

_RAW_HEIGHT, _RAW_WIDTH = 210, 160


def _ale_interface():
    from ale_py import ALEInterface, LoggerMode

    ALEInterface.setLoggerMode(LoggerMode.Error)
    return ALEInterface()


class AtariGoalEnv(FixedGoalSets, GoalEnv):
    """One Atari game as a :class:`GoalEnv` (see the module docstring).

    Options: ``height``, ``width`` (frame size, default 104 x 80); ``frame_skip`` (4);
    ``sticky_prob`` (0.25); ``noop_max`` (30); ``end_on_life_loss`` (True);
    ``max_episode_steps`` (T, 50); ``goal_seed`` and the goal-set sizes ``n_eval_goals``,
    ``n_train_goals``, ``range_rollouts``; ``cache_dir``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, game: str, height: int = 104, width: int = 80, frame_skip: int = 4,
                 sticky_prob: float = 0.25, noop_max: int = 30, end_on_life_loss: bool = True,
                 max_episode_steps: int = 50, goal_seed: int = 0, n_eval_goals: int = 30,
                 n_train_goals: int = 1000, range_rollouts: int = 500, cache_dir: str | None = None,
                 render_mode: str | None = None):
        if game not in RAM_FEATURES:
            close = difflib.get_close_matches(game, PAPER_GAMES, n=1)
            raise ValueError(f"unknown Atari game {game!r}" + (f" (did you mean atari:{close[0]}?)" if close else "")
                             + f"; games with goal features: {', '.join('atari:' + g for g in PAPER_GAMES)}")
        for name, value in (("height", height), ("width", width), ("frame_skip", frame_skip),
                            ("max_episode_steps", max_episode_steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= float(sticky_prob) < 1.0:
            raise ValueError(f"sticky_prob must be in [0, 1), got {sticky_prob}")
        if int(noop_max) < 0:
            raise ValueError(f"noop_max must be >= 0, got {noop_max}")
        import ale_py
        import cv2  # noqa: F401  (fail here, with the import error, rather than at the first frame)
        from ale_py import roms

        self.game = game
        self.name = f"atari:{game}"
        self.height, self.width = int(height), int(width)
        self.frame_skip = int(frame_skip)
        self.sticky_prob = float(sticky_prob)
        self.noop_max = int(noop_max)
        self.end_on_life_loss = bool(end_on_life_loss)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode

        self._ale = _ale_interface()
        self._ale.setFloat("repeat_action_probability", 0.0)  # stickiness is applied here, seeded
        self._ale.setInt("frame_skip", 1)
        self._ale.setInt("random_seed", 0)
        self._ale.loadROM(roms.get_rom_path(game))
        self._actions = list(self._ale.getMinimalActionSet())
        self._noop = self._actions[0]  # NOOP heads every minimal action set
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.observation_space = gym.spaces.Box(0, 255, (self.height, self.width), np.uint8)

        self.feature_names = tuple(RAM_FEATURES[game])
        self._ram_index = np.array(list(RAM_FEATURES[game].values()), dtype=np.int64)
        self._raw = np.zeros((2, _RAW_HEIGHT, _RAW_WIDTH), np.uint8)  # the last two emulator frames
        self._newest = 0
        self._last_action = self._noop
        self._lives = 0
        self._t = 0
        self._ended = True
        self._frame: np.ndarray | None = None
        self._features: np.ndarray | None = None
        key = {"env": self.name, "height": self.height, "width": self.width, "frame_skip": self.frame_skip,
               "sticky_prob": self.sticky_prob, "noop_max": self.noop_max,
               "end_on_life_loss": self.end_on_life_loss, "T": self.max_episode_steps,
               "versions": {"ale_py": ale_py.__version__}}
        self._load_goal_sets(key, self.feature_names, goal_seed, n_eval_goals, n_train_goals, range_rollouts,
                             cache_dir)

    # ------------------------------------------------------------------ the contract
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        ale = self._ale
        ale.reset_game()
        self._last_action = self._noop
        self._grab()
        self._raw[1 - self._newest] = self._raw[self._newest]
        noops = int(self.np_random.integers(self.noop_max + 1)) + EXTRA_START_NOOPS.get(self.game, 0)
        for _ in range(noops):
            self._emulate(self._noop)
            if ale.game_over():  # cannot happen in these games' first seconds; be safe anyway
                ale.reset_game()
        self._lives = ale.lives()
        self._t = 0
        self._ended = False
        self._observe()
        return self._frame, {"features": self._features.copy()}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        if self._ended:
            raise RuntimeError(f"{self.name}: the episode has ended (a lost life or game over); call reset()")
        a = int(action)
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"action {action!r} is outside 0..{self.action_space.n - 1} for {self.name}")
        ale = self._ale
        terminated = False
        for _ in range(self.frame_skip):
            self._emulate(self._actions[a])
            lives = ale.lives()
            if ale.game_over() or (self.end_on_life_loss and lives < self._lives):
                terminated = True
                break
            self._lives = lives
        self._t += 1
        self._ended = terminated
        self._observe()
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._frame, 0.0, terminated, truncated, {"features": self._features.copy()}

    def current_goal(self) -> Goal:
        if self._frame is None:
            raise RuntimeError("call reset() before current_goal()")
        return Goal(self._frame, self._features)

    def render(self):
        """The current emulator screen in colour (210 x 160 x 3, before preprocessing)."""
        return self._ale.getScreenRGB()

    def close(self) -> None:
        self._frame = None

    @property
    def ale(self):
        """The ALE interface (for tests and inspection; agents never see it)."""
        return self._ale

    # ------------------------------------------------------------------ internals
    def _emulate(self, action) -> None:
        """One emulator frame with sticky actions, keeping the last two screens."""
        if self.sticky_prob > 0 and self.np_random.random() < self.sticky_prob:
            action = self._last_action
        self._ale.act(action)
        self._last_action = action
        self._newest = 1 - self._newest
        self._grab()

    def _grab(self) -> None:
        self._ale.getScreenGrayscale(self._raw[self._newest])

    def _observe(self) -> None:
        import cv2

        pooled = np.maximum(self._raw[0], self._raw[1])
        self._frame = cv2.resize(pooled, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._features = self._ale.getRAM()[self._ram_index].astype(np.float64)


def make_atari(name: str, **options: Any) -> AtariGoalEnv:
    """Prefix handler for ``make("atari:<game>", **options)``."""
    return AtariGoalEnv(name, **options)


# make() checks option names against the handler's signature: show it AtariGoalEnv's options.
_params = list(inspect.signature(AtariGoalEnv.__init__).parameters.values())[2:]  # after self, game
make_atari.__signature__ = inspect.Signature(
    [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + _params)
