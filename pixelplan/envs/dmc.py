"""DeepMind Control tasks as visual goal environments (GLAMOR paper 4.1, after DISCERN).

``make("dmc:<domain>-<task>")`` builds a :class:`DMCGoalEnv`. The seven tasks of the paper
(:data:`PAPER_TASKS`) have their goal features fixed by :data:`FEATURES`; any other
dm_control suite task works by name too, with its position-type observations (keys
naming a position or orientation, never a velocity) as features.

What the agent sees and does, per the paper and the facts in
``../shared/reference/glamor-facts.md``:

* Frames: grayscale, 80 (H) x 104 (W), rendered headless directly at that size from
  camera 0, with multisampling, shadows and reflections off (5-8x cheaper than
  MuJoCo's defaults at this size, and no visible loss at 80x104).
* Actions: {-1, 0, +1} per action dimension, all combinations (3^A actions), scaled to
  the action bounds; manipulator moves one dimension at a time (2A + 1 = 11 actions,
  action 0 is "all zero").
* Frame skip 4 for point_mass, 1 otherwise; an episode is T = 100 agent steps.
* Goals: the feature ranges, 30 evaluation goals and 1000 training goals are built once
  per task from random rollouts (:func:`pixelplan.envs.goals.build_goal_sets`),
  deterministically from ``goal_seed``, and cached on disk (``$PIXELPLAN_CACHE``, default
  ``~/.cache/pixelplan``). Every run and every agent therefore sees the same goals.

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

from .core import Goal, GoalEnv, _to_gray
from .goals import FixedGoalSets

__all__ = ["DMCGoalEnv", "PAPER_TASKS", "FEATURES", "make_dmc"]

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
#: agent steps per env step, where it is not 1
FRAME_SKIP = {"point_mass": 4}


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


class DMCGoalEnv(FixedGoalSets, GoalEnv):
    """One dm_control suite task as a :class:`GoalEnv` (see the module docstring).

    Options: ``height``, ``width``, ``grayscale``, ``camera_id``; ``frame_skip`` (None = the
    paper's per-domain value); ``max_episode_steps`` (T, default 100); ``goal_seed`` and the
    goal-set sizes ``n_eval_goals``, ``n_train_goals``, ``range_rollouts``; ``cache_dir``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task: str, height: int = 80, width: int = 104, grayscale: bool = True,
                 frame_skip: int | None = None, max_episode_steps: int = 100, camera_id: int = 0,
                 goal_seed: int = 0, n_eval_goals: int = 30, n_train_goals: int = 1000,
                 range_rollouts: int = 500, cache_dir: str | None = None, render_mode: str | None = None):
        _setup_rendering()
        from dm_control import suite

        if (domain, task) not in suite.ALL_TASKS:
            known = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
            close = difflib.get_close_matches(f"{domain}-{task}", known, n=1)
            raise ValueError(f"unknown dm_control task {domain}-{task!s}"
                             + (f" (did you mean dmc:{close[0]}?)" if close else "")
                             + f"; the paper's tasks: {', '.join('dmc:' + t for t in PAPER_TASKS)}")
        for name, value in (("height", height), ("width", width), ("max_episode_steps", max_episode_steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if frame_skip is not None and int(frame_skip) < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        self.domain, self.task = domain, task
        self.name = f"dmc:{domain}-{task}"
        self.height, self.width, self.grayscale = int(height), int(width), bool(grayscale)
        self.camera_id = int(camera_id)
        self.frame_skip = int(frame_skip) if frame_skip is not None else FRAME_SKIP.get(domain, 1)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode

        self._env = suite.load(domain, task, task_kwargs={"random": goal_seed})
        physics = self._env.physics
        physics.model.vis.quality.offsamples = 0
        physics.model.light_castshadow[:] = 0
        physics.model.mat_reflectance[:] = 0

        spec = self._env.action_spec()
        self._actions = _discrete_actions(np.asarray(spec.minimum, float), np.asarray(spec.maximum, float),
                                          one_axis=domain in ONE_AXIS_DOMAINS)
        self.action_space = gym.spaces.Discrete(len(self._actions))
        shape = (self.height, self.width) if self.grayscale else (self.height, self.width, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)

        obs_spec = self._env.observation_spec()
        self.feature_keys = FEATURES.get(domain) or _position_keys(obs_spec)
        if not self.feature_keys:
            raise ValueError(f"dm_control task {domain}-{task} has no position-type observation to use as goal "
                             f"features (observations: {', '.join(obs_spec)})")
        self.feature_names = tuple(
            f"{key}_{i}" for key in self.feature_keys for i in range(int(np.prod(obs_spec[key].shape))))

        self._t = 0
        self._frame: np.ndarray | None = None
        self._features: np.ndarray | None = None
        key = {"env": self.name, "height": self.height, "width": self.width, "grayscale": self.grayscale,
               "camera_id": self.camera_id, "frame_skip": self.frame_skip, "T": self.max_episode_steps,
               "versions": _versions()}
        self._load_goal_sets(key, self.feature_names, goal_seed, n_eval_goals, n_train_goals, range_rollouts,
                             cache_dir)

    # ------------------------------------------------------------------ the contract
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_physics(int(self.np_random.integers(2**31 - 1)) if seed is None else seed)
        self._frame = self._render()
        return self._frame, {"features": self._features.copy()}

    def step(self, action):
        last = self._advance(action)
        self._frame = self._render()
        truncated = last or self._t >= self.max_episode_steps
        return self._frame, 0.0, False, truncated, {"features": self._features.copy()}

    def current_goal(self) -> Goal:
        if self._frame is None:
            raise RuntimeError("call reset() before current_goal()")
        return Goal(self._frame, self._features)

    def random_rollout(self, rng: np.random.Generator, capture_frame: bool = True) -> Goal:
        """As :meth:`GoalEnv.random_rollout`, rendering only the final frame (or none)."""
        self._reset_physics(int(rng.integers(2**31 - 1)))
        for _ in range(int(rng.integers(1, self.max_episode_steps + 1))):
            if self._advance(int(rng.integers(self.action_space.n))):
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
    def _reset_physics(self, seed: int) -> None:
        # dm_control draws the initial state from the task's RandomState: re-seed it in place.
        self._env.task.random.seed(seed)
        self._t = 0
        self._features = self._read_features(self._env.reset().observation)

    def _advance(self, action) -> bool:
        """Apply one agent action for ``frame_skip`` env steps; True when dm_control ended the episode."""
        if self._features is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"action {action!r} is outside 0..{self.action_space.n - 1} for {self.name}")
        last = False
        for _ in range(self.frame_skip):
            time_step = self._env.step(self._actions[a])
            if time_step.last():
                last = True
                break
        self._t += 1
        self._features = self._read_features(time_step.observation)
        return last

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
    domain, task = name.split("-", 1)
    return DMCGoalEnv(domain, task, **options)


# make() checks option names against the handler's signature: show it DMCGoalEnv's options.
_params = list(inspect.signature(DMCGoalEnv.__init__).parameters.values())[3:]  # after self, domain, task
make_dmc.__signature__ = inspect.Signature(
    [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + _params)
