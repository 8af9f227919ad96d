"""DeepMind Control tasks as pixel environments: GLAMOR's goal tasks and PlaNet's reward tasks.

``make("dmc:<domain>-<task>")`` builds a :class:`DMCGoalEnv`. Two kinds of task (the option
``task``):

``task="goal"`` (the default): a visual goal environment (GLAMOR paper 4.1, after DISCERN).
The seven tasks of the paper (:data:`PAPER_TASKS`) have their goal features fixed by
:data:`FEATURES`; any other dm_control suite task works by name too, with its position-type
observations (keys naming a position or orientation, never a velocity) as features. What the
agent sees and does, per the paper and the facts in ``../shared/reference/glamor-facts.md``:

* Frames: grayscale, 80 (H) x 104 (W), rendered headless directly at that size from
  camera 0, with multisampling, shadows and reflections off (5-8x cheaper than
  MuJoCo's defaults at this size, and no visible loss at 80x104).
* Actions: {-1, 0, +1} per action dimension, all combinations (3^A actions), scaled to
  the action bounds; manipulator moves one dimension at a time (2A + 1 = 11 actions,
  action 0 is "all zero").
* Frame skip 4 for point_mass, 1 otherwise; an episode is T = 100 agent steps; reward 0.
* Goals: the feature ranges, 30 evaluation goals and 1000 training goals are built once
  per task from random rollouts (:func:`pixelplan.envs.goals.build_goal_sets`),
  deterministically from ``goal_seed``, and cached on disk (``$PIXELPLAN_CACHE``, default
  ``~/.cache/pixelplan``). Every run and every agent therefore sees the same goals.

``task="reward"``: any suite task with its own reward and no goals (PlaNet, Hafner et al.
2019, in ``../shared/papers/planet.md``). Defaults are PlaNet's:

* Frames: RGB 64 x 64 (``grayscale=False``), from camera 0 (the paper does not say which
  camera), rendered directly at that size with the same cheap settings as above.
* Actions: continuous, a float32 ``Box`` with dm_control's bounds.
* Action repeat (``frame_skip``) per :data:`ACTION_REPEAT` (PlaNet's appendix A: cartpole 8,
  reacher 4, cheetah 4, finger 2, ball_in_cup 4, walker 2), :data:`DEFAULT_ACTION_REPEAT` = 4
  for every other domain. The reward of one agent step is the sum of dm_control's rewards
  over its repeated env steps (PlaNet's Algorithm 1).
* Episodes of :data:`EPISODE_ENV_STEPS` = 1000 env steps (dm_control's own length for every
  suite task but lqr): ``max_episode_steps = 1000 // frame_skip`` agent steps (125 for
  cartpole).

Either kind takes either kind of action (``actions="discrete"|"continuous"``) and every default
can be overridden. Continuous actions are clipped to the action bounds.

Rendering needs an OpenGL backend: ``MUJOCO_GL=egl`` (the default set here; Mesa's
software EGL works without a GPU) or ``MUJOCO_GL=osmesa`` (``apt-get install
libosmesa6``). This module imports dm_control only when a task is built.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import os
from typing import Any

import gymnasium as gym
import numpy as np

from pixelplan.suites import ACTION_REPEAT, DEFAULT_ACTION_REPEAT, EPISODE_ENV_STEPS

from .core import Goal, GoalEnv, _to_gray, random_action
from .goals import FixedGoalSets

__all__ = ["DMCGoalEnv", "PAPER_TASKS", "FEATURES", "ACTION_REPEAT", "make_dmc"]

#: the seven tasks of the GLAMOR paper (chosen by DISCERN)
PAPER_TASKS = ("ball_in_cup-catch", "cartpole-balance", "finger-spin", "manipulator-bring_ball",
               "pendulum-swingup", "point_mass-easy", "reacher-hard")

#: goal features per domain: observation keys, concatenated in this order (glamor-facts.md)
FEATURES = {
    "ball_in_cup": ("position",),          # cup x, z; ball x, z
    "cartpole": ("position",),             # cart x, pole cos, pole sin
    "finger": ("position",),
    "manipulator": ("arm_pos", "hand_pos", "object_pos"),
    "pendulum": ("orientation",),
    "point_mass": ("position",),
    "reacher": ("position",),              # joint angles
}

#: domains that move one action dimension at a time (2A + 1 actions)
ONE_AXIS_DOMAINS = ("manipulator",)
#: goal tasks: env steps per agent step, where it is not 1 (GLAMOR)
FRAME_SKIP = {"point_mass": 4}

# reward tasks: PlaNet's action repeat per domain, the default for other domains, and the
# episode length in env steps (in pixelplan/suites.py, which the presets read too)
#: reward tasks: PlaNet's frames, 64 x 64 RGB
PLANET_FRAME = 64

TASK_KINDS = ("goal", "reward")
ACTION_KINDS = ("discrete", "continuous")
#: options that only shape a goal task's goal sets (a reward task refuses them)
GOAL_SET_OPTIONS = ("goal_seed", "n_eval_goals", "n_train_goals", "range_rollouts")
_GOAL_SET_DEFAULTS = {"goal_seed": 0, "n_eval_goals": 30, "n_train_goals": 1000, "range_rollouts": 500}


def _setup_rendering() -> None:
    # Must happen before dm_control is imported: it picks the GL backend at import time.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "0")  # llvmpipe threads fight the agent for 2 cores


def _position_keys(observation_spec: dict) -> tuple[str, ...]:
    keys = tuple(k for k in observation_spec
                 if ("position" in k or "orientation" in k or k.endswith("_pos")) and "vel" not in k)
    return keys


def _discrete_actions(minimum: np.ndarray, maximum: np.ndarray, one_axis: bool) -> np.ndarray:
    """Rows of continuous actions, one per discrete action index."""
    dims = len(minimum)
    if one_axis:
        levels = [np.zeros(dims)]
        for d in range(dims):
            for sign in (-1.0, 1.0):
                row = np.zeros(dims)
                row[d] = sign
                levels.append(row)
        unit = np.stack(levels)
    else:
        unit = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=dims)))
    centre, half = (maximum + minimum) / 2, (maximum - minimum) / 2
    return centre + unit * half


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


class DMCGoalEnv(FixedGoalSets, GoalEnv):
    """One dm_control suite task as a :class:`GoalEnv` (see the module docstring).

    Options (None = the default of the task kind, goal / reward):

    * ``task``: ``"goal"`` (GLAMOR: goal sets, reward 0) or ``"reward"`` (PlaNet: dm_control's
      reward, no goals). Named by keyword only: the second positional argument is dm_control's
      task name (``task_name``, e.g. ``"balance"``; kept as the attribute ``task``, while the
      kind is ``task_kind``, and the kind of actions ``action_kind``).
    * ``actions``: ``"discrete"`` (the {-1, 0, +1} grid, ``Discrete(n)``) or ``"continuous"``
      (``Box(minimum, maximum, (A,), float32)`` from dm_control's action spec; ``step`` takes a
      float array of shape (A,), which must be finite and is clipped to the bounds, since MuJoCo
      would clamp it to the actuators' control range anyway and the bounds are the contract's
      word); default discrete / continuous.
    * ``height``, ``width``, ``grayscale``: default 80, 104, True / 64, 64, False.
    * ``frame_skip``: env steps per agent step, which is PlaNet's *action repeat* R (one name
      for both, so there is no ``action_repeat`` option); default 4 for point_mass, else 1 /
      :data:`ACTION_REPEAT`, else 4. A step's reward is the sum over its env steps.
    * ``max_episode_steps`` (T, agent steps): default 100 / ``1000 // frame_skip``. An episode
      is also truncated when dm_control ends it (``time_step.last()``).
    * ``camera_id`` (0), ``cache_dir``, ``render_mode``.
    * Goal tasks only: ``goal_seed`` (0) and the goal-set sizes ``n_eval_goals`` (30),
      ``n_train_goals`` (1000), ``range_rollouts`` (500). A reward task refuses them with a
      ValueError rather than ignoring them: they would change nothing, and whoever passes them
      expects goals. It accepts ``cache_dir`` (a place, not a behaviour) and leaves it unused.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task_name: str, height: int | None = None, width: int | None = None,
                 grayscale: bool | None = None, frame_skip: int | None = None,
                 max_episode_steps: int | None = None, camera_id: int = 0, goal_seed: int | None = None,
                 n_eval_goals: int | None = None, n_train_goals: int | None = None,
                 range_rollouts: int | None = None, cache_dir: str | None = None, render_mode: str | None = None,
                 *, task: str = "goal", actions: str | None = None):
        _setup_rendering()
        from dm_control import suite

        if (domain, task_name) not in suite.ALL_TASKS:
            known = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
            close = difflib.get_close_matches(f"{domain}-{task_name}", known, n=1)
            raise ValueError(f"unknown dm_control task {domain}-{task_name!s}"
                             + (f" (did you mean dmc:{close[0]}?)" if close else "")
                             + f"; the paper's tasks: {', '.join('dmc:' + t for t in PAPER_TASKS)}")
        self.task_kind = _choice("task", task, TASK_KINDS)
        self.has_goals = self.task_kind == "goal"
        self.has_reward = not self.has_goals
        goal_options = self._goal_options(domain, task_name, goal_seed=goal_seed, n_eval_goals=n_eval_goals,
                                          n_train_goals=n_train_goals, range_rollouts=range_rollouts)
        self.action_kind = _choice("actions", actions if actions is not None
                                   else ("discrete" if self.has_goals else "continuous"), ACTION_KINDS)
        height, width, grayscale, frame_skip, max_episode_steps = self._kind_defaults(
            domain, height, width, grayscale, frame_skip, max_episode_steps)
        self.domain, self.task = domain, task_name
        self.name = f"dmc:{domain}-{task_name}"
        self.height, self.width, self.grayscale = int(height), int(width), bool(grayscale)
        self.camera_id = int(camera_id)
        self.frame_skip = int(frame_skip)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode

        self._env = suite.load(domain, task_name, task_kwargs={"random": goal_options["goal_seed"]})
        physics = self._env.physics
        physics.model.vis.quality.offsamples = 0
        physics.model.light_castshadow[:] = 0
        physics.model.mat_reflectance[:] = 0
        self.action_space = self._make_action_space(domain)
        shape = (self.height, self.width) if self.grayscale else (self.height, self.width, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)

        self._t = 0
        self._live: bool | None = None   # None: never reset; False: dm_control ended the episode
        self._frame: np.ndarray | None = None
        self._features: np.ndarray | None = None
        if self.has_goals:
            self._set_up_goals(domain, task_name, goal_options, cache_dir)
        else:
            self.feature_keys, self.feature_names = (), ()
            self.goal_spec = None
            self.goal_sets = None
            self.goal_cache_path = None

    def _goal_options(self, domain: str, task_name: str, **given) -> dict:
        """The goal-set options with their defaults; a reward task refuses any that is given."""
        if not self.has_goals:
            named = [k for k, v in given.items() if v is not None]
            if named:
                raise ValueError(f"dmc:{domain}-{task_name} is a reward task (task='reward'), which has no goal "
                                 f"sets: drop the goal-set option(s) {', '.join(named)}")
        return {k: _GOAL_SET_DEFAULTS[k] if v is None else v for k, v in given.items()}

    def _kind_defaults(self, domain, height, width, grayscale, frame_skip, max_episode_steps) -> tuple:
        """Frame size, colour, action repeat and T: the options given, else the task kind's
        defaults (the module docstring's table), checked."""
        goal = self.has_goals
        height = (80 if goal else PLANET_FRAME) if height is None else height
        width = (104 if goal else PLANET_FRAME) if width is None else width
        grayscale = goal if grayscale is None else grayscale
        if frame_skip is not None and int(frame_skip) < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        if frame_skip is None:
            frame_skip = FRAME_SKIP.get(domain, 1) if goal else ACTION_REPEAT.get(domain, DEFAULT_ACTION_REPEAT)
        if max_episode_steps is None:
            if not goal and int(frame_skip) > EPISODE_ENV_STEPS:
                raise ValueError(f"frame_skip {frame_skip} is longer than a reward task's episode of "
                                 f"{EPISODE_ENV_STEPS} env steps; pass max_episode_steps too")
            max_episode_steps = 100 if goal else EPISODE_ENV_STEPS // int(frame_skip)
        for name, value in (("height", height), ("width", width), ("max_episode_steps", max_episode_steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        return height, width, grayscale, frame_skip, max_episode_steps

    def _make_action_space(self, domain: str) -> gym.Space:
        """dm_control's action bounds as a float32 Box, or as the discretised action set."""
        spec = self._env.action_spec()
        self._low = np.broadcast_to(np.asarray(spec.minimum, np.float64), spec.shape).copy()
        self._high = np.broadcast_to(np.asarray(spec.maximum, np.float64), spec.shape).copy()
        if self.action_kind == "continuous":
            if not (np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high))):
                raise ValueError(f"{self.name} has unbounded actions ({spec}); continuous actions need finite bounds")
            self._actions = None
            return gym.spaces.Box(self._low.astype(np.float32), self._high.astype(np.float32), tuple(spec.shape),
                                  np.float32)
        self._actions = _discrete_actions(self._low.reshape(-1), self._high.reshape(-1),
                                          one_axis=domain in ONE_AXIS_DOMAINS)
        return gym.spaces.Discrete(len(self._actions))

    def _set_up_goals(self, domain: str, task_name: str, goal_options: dict, cache_dir) -> None:
        """The goal features (position-type observations) and the cached goal sets."""
        obs_spec = self._env.observation_spec()
        self.feature_keys = FEATURES.get(domain) or _position_keys(obs_spec)
        if not self.feature_keys:
            raise ValueError(f"dm_control task {domain}-{task_name} has no position-type observation to use as goal "
                             f"features (observations: {', '.join(obs_spec)}); it can still be a reward task "
                             "(task='reward')")
        self.feature_names = tuple(
            f"{key}_{i}" for key in self.feature_keys for i in range(int(np.prod(obs_spec[key].shape))))
        key = {"env": self.name, "height": self.height, "width": self.width, "grayscale": self.grayscale,
               "camera_id": self.camera_id, "frame_skip": self.frame_skip, "T": self.max_episode_steps,
               "versions": _versions()}
        if self.action_kind != "discrete":   # discrete goal tasks keep the key their cached sets have
            key["actions"] = self.action_kind
        self._load_goal_sets(key, self.feature_names, goal_options["goal_seed"], goal_options["n_eval_goals"],
                             goal_options["n_train_goals"], goal_options["range_rollouts"], cache_dir)

    # ------------------------------------------------------------------ the contract
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_physics(int(self.np_random.integers(2**31 - 1)) if seed is None else seed)
        self._frame = self._render()
        return self._frame, self._info()

    def step(self, action):
        reward, last = self._advance(action)
        self._frame = self._render()
        truncated = last or self._t >= self.max_episode_steps
        return self._frame, reward if self.has_reward else 0.0, False, truncated, self._info()

    def current_goal(self) -> Goal:
        self._require_goals("current_goal()")
        if self._frame is None:
            raise RuntimeError("call reset() before current_goal()")
        return Goal(self._frame, self._features)

    def evaluation_goals(self) -> list[Goal]:
        self._require_goals("evaluation_goals()")
        return super().evaluation_goals()

    def training_goals(self, n: int, rng: np.random.Generator | int | None = None) -> list[Goal]:
        self._require_goals("training_goals()")
        return super().training_goals(n, rng)

    @property
    def n_training_goals(self) -> int:
        """All of the cached training goals (``n_train_goals``, 1000 by default); 0 for a reward task."""
        return len(self.goal_sets.training) if self.has_goals else 0

    def random_rollout(self, rng: np.random.Generator, capture_frame: bool = True) -> Goal:
        """As :meth:`GoalEnv.random_rollout`, rendering only the final frame (or none). Uniform
        random actions of either kind (:func:`pixelplan.envs.core.random_action`)."""
        self._require_goals("random_rollout() (it returns a Goal)")
        self._reset_physics(int(rng.integers(2**31 - 1)))
        for _ in range(int(rng.integers(1, self.max_episode_steps + 1))):
            if self._advance(random_action(self.action_space, rng))[1]:
                break
        self._frame = self._render() if capture_frame else np.zeros(self.observation_space.shape, np.uint8)
        return Goal(self._frame, self._features)

    def render(self):
        """The current frame in colour (rgb_array), from the same camera and size."""
        return self._env.physics.render(self.height, self.width, camera_id=self.camera_id)

    def close(self) -> None:
        self._frame = None

    @property
    def physics(self):
        """The dm_control physics (for tests and inspection; agents never see it)."""
        return self._env.physics

    # ------------------------------------------------------------------ internals
    def _require_goals(self, what: str) -> None:
        if not self.has_goals:
            raise ValueError(f"{self.name} is a reward task (task='reward') with no goals: {what} is for goal "
                             "tasks (make it with task='goal')")

    def _info(self) -> dict:
        return {"features": self._features.copy()} if self.has_goals else {}

    def _reset_physics(self, seed: int) -> None:
        # dm_control draws the initial state from the task's RandomState: re-seed it in place.
        self._env.task.random.seed(seed)
        self._t = 0
        observation = self._env.reset().observation
        self._live = True
        if self.has_goals:
            self._features = self._read_features(observation)

    def _control(self, action) -> np.ndarray:
        """The dm_control action of one agent action (validated; continuous ones clipped to the bounds)."""
        if self._actions is not None:
            a = int(action)
            if not 0 <= a < self.action_space.n:
                raise ValueError(f"action {action!r} is outside 0..{self.action_space.n - 1} for {self.name}")
            return self._actions[a]
        shape = self._low.shape
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} takes a float array of shape {shape} as its action, got a "
                             f"{type(action).__name__}") from None
        if a.shape != shape:
            raise ValueError(f"{self.name} takes a float array of shape {shape} as its action, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}'s actions must be finite, got {a.tolist()}")
        return np.clip(a, self._low, self._high)

    def _advance(self, action) -> tuple[float, bool]:
        """Apply one agent action for ``frame_skip`` env steps: ``(the sum of dm_control's rewards,
        whether dm_control ended the episode)``."""
        if self._live is None:
            raise RuntimeError("call reset() before step()")
        if not self._live:
            # dm_control would silently start a new episode (and give no reward): refuse instead
            raise RuntimeError(f"{self.name}: dm_control ended this episode (truncated); call reset()")
        control = self._control(action)
        reward, last = 0.0, False
        for _ in range(self.frame_skip):
            time_step = self._env.step(control)
            reward += float(time_step.reward)
            if time_step.last():
                last = True
                break
        self._t += 1
        self._live = not last
        if self.has_goals:
            self._features = self._read_features(time_step.observation)
        return reward, last

    def _read_features(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(observation[k], np.float64).reshape(-1) for k in self.feature_keys])

    def _render(self) -> np.ndarray:
        rgb = self._env.physics.render(self.height, self.width, camera_id=self.camera_id)
        return _to_gray(rgb) if self.grayscale else np.ascontiguousarray(rgb)


def _versions() -> dict[str, str]:
    import dm_control
    import mujoco
    return {"mujoco": mujoco.__version__, "dm_control": getattr(dm_control, "__version__", "?")}


def make_dmc(name: str, **options: Any) -> DMCGoalEnv:
    """Prefix handler for ``make("dmc:<domain>-<task>", **options)``."""
    if "-" not in name:
        raise ValueError(f"dm_control env names are dmc:<domain>-<task>, e.g. dmc:cartpole-balance; got dmc:{name}")
    domain, task_name = name.split("-", 1)
    return DMCGoalEnv(domain, task_name, **options)


# make() checks option names against the handler's signature: show it DMCGoalEnv's options
# (the keyword-only task and actions included).
_params = list(inspect.signature(DMCGoalEnv.__init__).parameters.values())[3:]  # after self, domain, task_name
make_dmc.__signature__ = inspect.Signature(
    [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + _params)
#: PlaNet calls frame_skip the action repeat: make()'s unknown-option error says so
make_dmc.option_hints = {"action_repeat": "frame_skip, PlaNet's action repeat"}
