"""The goal-environment contract shared by every pixelplan agent.

A *goal environment* is a Gymnasium environment with discrete actions whose
observation is a single uint8 image frame, and which can hand out goals: a goal
is the frame (and the ground-truth features) of a real state of the
environment.  Agents only ever see frames; the features are for evaluation.

Main pieces:

* :class:`GoalSpec` -- names, feasible ranges and success tolerance of the
  ground-truth features; decides whether a goal was achieved.
* :class:`Goal` -- a frame plus the features of the same state.
* :class:`GoalEnv` -- the base class documenting (and partly implementing) the
  contract.
* :class:`GymGoalEnv` -- adapter turning any discrete-action Gymnasium env
  plus a features function into a :class:`GoalEnv`.
* :func:`check_goal_frame` -- validation helper for agents.

This module must not import torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from pixelplan.spec import EnvSpec

__all__ = ["GoalSpec", "Goal", "GoalTask", "GoalEnv", "GymGoalEnv", "check_goal_frame", "as_rng", "random_action", "spec_of"]

#: ranges narrower than this are treated as 1 when deriving tolerances and
#: normalising (the GLAMOR authors' rule; avoids zero/huge tolerances).
MIN_RANGE = 1e-2


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else ``np.random.default_rng(rng)``."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _vector(name: str, value: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"GoalSpec.{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"GoalSpec.{name} has {arr.shape[0]} entries, expected {n} (one per feature name)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"GoalSpec.{name} must be finite, got {arr}")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class GoalSpec:
    """Ground-truth goal features: names, feasible ranges and success tolerance.

    A goal is achieved when *every* feature is within its tolerance of the
    goal's value: ``abs(features - goal_features) <= tolerance``.
    Arrays are stored as read-only float64 copies.
    """

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    tolerance: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if len(names) == 0:
            raise ValueError("GoalSpec needs at least one feature name")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"GoalSpec.names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"GoalSpec.names must be unique, got {names!r}")
        d = len(names)
        low = _vector("low", self.low, d)
        high = _vector("high", self.high, d)
        tol = np.asarray(self.tolerance, dtype=np.float64)
        if tol.ndim == 0:
            tol = np.full(d, float(tol))
        tol = _vector("tolerance", tol, d)
        if np.any(high < low):
            raise ValueError(f"GoalSpec.high must be >= low, got low={low}, high={high}")
        if np.any(tol < 0):
            raise ValueError(f"GoalSpec.tolerance must be >= 0, got {tol}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "tolerance", tol)

    @classmethod
    def from_ranges(
        cls,
        names: Sequence[str],
        low: Sequence[float] | np.ndarray,
        high: Sequence[float] | np.ndarray,
        tolerance_fraction: float = 0.1,
        tolerance: float | Sequence[float] | np.ndarray | None = None,
    ) -> "GoalSpec":
        """Build a spec; by default the tolerance is ``tolerance_fraction`` of each range.

        A range (high - low) below 1e-2 counts as 1 for this purpose. An explicit
        ``tolerance`` (scalar or one per feature) overrides the fraction.
        """
        names = tuple(names)
        low_a = _vector("low", low, len(names))
        high_a = _vector("high", high, len(names))
        if tolerance is None:
            if not np.isfinite(tolerance_fraction) or tolerance_fraction < 0:
                raise ValueError(f"tolerance_fraction must be a finite number >= 0, got {tolerance_fraction}")
            rng = high_a - low_a
            rng = np.where(rng < MIN_RANGE, 1.0, rng)
            tolerance = tolerance_fraction * rng
        return cls(names, low_a, high_a, tolerance)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def range(self) -> np.ndarray:
        """high - low, with ranges below 1e-2 replaced by 1 (safe to divide by)."""
        r = self.high - self.low
        return np.where(r < MIN_RANGE, 1.0, r)

    def _check(self, arr: Any, what: str) -> np.ndarray:
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 0 or a.shape[-1] != self.dim:
            raise ValueError(
                f"{what} must have a last axis of size {self.dim} ({', '.join(self.names)}), got shape {a.shape}"
            )
        return a

    def achieved(self, features: Any, goal_features: Any) -> np.ndarray:
        """Boolean success: every feature within tolerance. Broadcasts over leading axes.

        Returns an ``np.bool_`` for 1-D inputs and a bool array otherwise.
        """
        f = self._check(features, "features")
        g = self._check(goal_features, "goal_features")
        return np.all(np.abs(f - g) <= self.tolerance, axis=-1)

    def normalise(self, features: Any) -> np.ndarray:
        """Map features to roughly [0, 1]: ``(features - low) / range``."""
        return (self._check(features, "features") - self.low) / self.range

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (see :meth:`from_dict`)."""
        return {
            "names": list(self.names),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "tolerance": self.tolerance.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "GoalSpec":
        missing = {"names", "low", "high", "tolerance"} - set(d)
        if missing:
            raise ValueError(f"GoalSpec dict is missing key(s) {sorted(missing)}")
        return cls(tuple(d["names"]), d["low"], d["high"], d["tolerance"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GoalSpec):
            return NotImplemented
        return (
            self.names == other.names
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
            and np.array_equal(self.tolerance, other.tolerance)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Goal:
    """A goal: the frame and the ground-truth features of one real env state.

    ``frame`` is a single uint8 frame (same shape as the env observation);
    ``features`` a 1-D float64 array. Both are stored as read-only copies.
    """

    frame: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        frame = np.asarray(self.frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError(
                f"Goal.frame must be a uint8 array of shape (H, W) or (H, W, C), got {frame.dtype} {frame.shape}"
            )
        feats = np.asarray(self.features, dtype=np.float64)
        if feats.ndim != 1:
            raise ValueError(f"Goal.features must be 1-D, got shape {feats.shape}")
        frame = frame.copy()
        feats = feats.copy()
        frame.setflags(write=False)
        feats.setflags(write=False)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "features", feats)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Goal):
            return NotImplemented
        return np.array_equal(self.frame, other.frame) and np.array_equal(self.features, other.features)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class GoalTask(Goal):
    """A goal with its own start state and success rule: one of MBOLD's test tasks.

    An evaluation episode on a task resets its env to ``start_state``
    (``env.reset(options={"state": start_state})``, which shows ``start_frame``), hands the agent
    ``frame`` as the goal, and at the end compares the *relevant* features only: success is
    ``distance(final features) <= threshold``, the Euclidean distance over the features that
    ``relevant`` (a bool mask over the env's features) selects, e.g. the moved block's x, y.
    The improvement of an episode is ``distance(start_features) - distance(final features)``.
    """

    start_state: np.ndarray | None = None
    start_frame: np.ndarray | None = None
    start_features: np.ndarray | None = None
    relevant: np.ndarray | None = None
    threshold: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.features.shape[0]
        state = np.asarray(self.start_state, dtype=np.float64).reshape(-1)
        start_frame = np.asarray(self.start_frame)
        start_features = np.asarray(self.start_features, dtype=np.float64)
        relevant = np.asarray(self.relevant)
        if self.start_state is None or not np.all(np.isfinite(state)):
            raise ValueError("GoalTask.start_state must be a finite state vector (env.get_state())")
        if start_frame.shape != self.frame.shape or start_frame.dtype != np.uint8:
            raise ValueError(f"GoalTask.start_frame must be a uint8 frame of shape {self.frame.shape} (the goal's), "
                             f"got {start_frame.dtype} {start_frame.shape}")
        if start_features.shape != (d,):
            raise ValueError(f"GoalTask.start_features must have {d} entries (the goal's), got {start_features.shape}")
        if relevant.dtype != bool or relevant.shape != (d,) or not relevant.any():
            raise ValueError(f"GoalTask.relevant must be a bool mask over the {d} features with at least one True")
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"GoalTask.threshold must be a finite distance >= 0, got {self.threshold}")
        for name, value in (("start_state", state), ("start_frame", start_frame),
                            ("start_features", start_features), ("relevant", relevant)):
            value = value.copy()
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "threshold", float(self.threshold))

    def distance(self, features: Any) -> float:
        """Euclidean distance of the relevant features to the goal's."""
        f = np.asarray(features, dtype=np.float64).reshape(-1)
        if f.shape != self.features.shape:
            raise ValueError(f"features must have {self.features.shape[0]} entries, got {f.shape}")
        return float(np.linalg.norm((f - self.features)[self.relevant]))

    def achieved(self, features: Any) -> bool:
        return self.distance(features) <= self.threshold

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GoalTask):
            return NotImplemented
        return (super().__eq__(other) and np.array_equal(self.start_state, other.start_state)
                and np.array_equal(self.start_frame, other.start_frame)
                and np.array_equal(self.start_features, other.start_features)
                and np.array_equal(self.relevant, other.relevant) and self.threshold == other.threshold)

    __hash__ = None  # type: ignore[assignment]


def check_goal_frame(frame: Any, expected_shape: Sequence[int]) -> np.ndarray:
    """Raise ``ValueError`` unless ``frame`` is a uint8 array of ``expected_shape``.

    Returns the frame (as an ndarray) when it is valid. The message says what was
    expected and, where it can guess, what went wrong.
    """
    expected = tuple(int(s) for s in expected_shape)
    if not isinstance(frame, np.ndarray):
        typename = type(frame).__name__
        hint = "convert it with np.asarray" if typename != "Goal" else "pass goal.frame, not the Goal"
        if typename == "Tensor":
            hint = "pass a numpy array (tensor.cpu().numpy())"
        raise ValueError(
            f"goal frame is a {typename}, expected a numpy array of shape {expected} uint8 "
            f"(a single frame, as returned by env.reset/step): {hint}"
        )
    if frame.shape == expected and frame.dtype == np.uint8:
        return frame
    hints = []
    if frame.shape != expected:
        if frame.ndim == len(expected) + 1 and frame.shape[1:] == expected:
            hints.append(
                f"it has an extra leading axis of size {frame.shape[0]} (a frame stack or a batch?); pass one frame"
            )
        elif frame.ndim == len(expected) + 1 and frame.shape[:-1] == expected:
            hints.append("it has an extra channel axis; the env uses frames without it")
        else:
            hints.append("use a frame from this env (e.g. env.current_goal().frame or env.evaluation_goals())")
    if frame.dtype != np.uint8:
        hints.append(f"dtype is {frame.dtype}: frames are raw uint8 pixels in 0..255, not normalised floats")
    raise ValueError(
        f"goal frame has shape {frame.shape} and dtype {frame.dtype}, expected {expected} uint8 "
        f"(a single frame, as returned by env.reset/step): " + "; ".join(hints)
    )


class GoalEnv(gym.Env):
    """Base class of the goal-environment contract.

    Subclasses provide:

    * ``observation_space``: ``Box`` of uint8 with the shape of ONE frame,
      grayscale ``(H, W)`` or colour ``(H, W, C)``.
    * ``action_space``: ``Discrete(n)``, or a float32 ``Box(low, high, shape)`` with finite
      bounds (``step`` then takes a float array of that shape).
    * ``goal_spec``: a :class:`GoalSpec` for the ground-truth features.
    * ``max_episode_steps``: the horizon T; the env truncates at T itself.
    * ``reset(seed=None, options=None) -> (frame, info)`` and
      ``step(a) -> (frame, reward, terminated, truncated, info)``; on a goal task the reward
      is 0 (a reward task, ``has_reward``, pays its own) and ``info["features"]`` holds the float64 features of the new
      state (ground truth for evaluation only: agents never see it).
    * ``current_goal() -> Goal``: the frame and features of the current state.

    Defaults provided here: :meth:`training_goals` (final states of random
    episodes), :meth:`evaluation_goals` (a fixed set built from random episodes on
    first use and cached on disk; see :meth:`goal_set_key`), :meth:`optimal_steps`
    (``None``: unknown).
    """

    goal_spec: GoalSpec
    max_episode_steps: int
    #: the task's kind (see :mod:`pixelplan.spec`): a goal task hands out goals and pays 0; a
    #: reward task (``has_goals = False``, ``has_reward = True``) passes its own reward through and
    #: has no goal sets, ``goal_spec`` or features
    has_goals: bool = True
    has_reward: bool = False
    #: how many training goals a run draws its collection goals from (GLAMOR: 1000)
    n_training_goals: int = 1000
    #: the automatic evaluation set (see :meth:`evaluation_goals`): at most this many goals,
    #: picked from ``n_eval_candidates`` random final states with the seed ``goal_seed``,
    #: cached under ``goal_cache_dir`` (None: ``$PIXELPLAN_CACHE``, else ``~/.cache/pixelplan``)
    n_eval_goals: int = 30
    n_eval_candidates: int = 1000
    goal_seed: int = 0
    goal_cache_dir: str | None = None
    #: set by :func:`pixelplan.envs.make` on the env it returns: the name and options it was
    #: made with (they identify the env's cached goal set)
    make_name: str | None = None
    make_options: dict | None = None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame (the observation shape)."""
        return tuple(self.observation_space.shape)

    def current_goal(self) -> Goal:
        raise NotImplementedError(f"{type(self).__name__} must implement current_goal()")

    def training_goals(self, n: int, rng: np.random.Generator | int | None = None) -> list[Goal]:
        """``n`` goals: final states of uniform-random-policy episodes (as in GLAMOR).

        Each episode starts from ``reset(seed=...)`` with a seed drawn from
        ``rng`` and lasts ``L ~ Uniform{1..T}`` steps (fewer if it terminates).
        Deterministic given ``rng``. Leaves the env mid-episode: reset it before
        use.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = as_rng(rng)
        return [self.random_rollout(rng) for _ in range(n)]

    def random_rollout(self, rng: np.random.Generator, capture_frame: bool = True) -> Goal:
        """The final state of one uniform-random-policy episode of random length.

        Resets with a seed drawn from ``rng``, then takes ``L ~ Uniform{1..T}`` uniform
        random actions (fewer if the episode ends). Returns that state as a :class:`Goal`;
        with ``capture_frame=False`` the frame may be a zero placeholder, which lets envs
        whose rendering is costly skip it (used to estimate feature ranges). The frame
        and the features always come from the same state.
        """
        self.reset(seed=int(rng.integers(2**31 - 1)))
        length = int(rng.integers(1, self.max_episode_steps + 1))
        for _ in range(length):
            _, _, terminated, truncated, _ = self.step(random_action(self.action_space, rng))
            if terminated or truncated:
                break
        return self.current_goal()

    def evaluation_goals(self) -> list[Goal]:
        """The env's fixed evaluation goals, the same for every run and agent.

        Default: built on first use with the DM Control and Atari recipe, the greedy
        max-min pick (:func:`pixelplan.envs.goals.diverse_goals`, in ``goal_spec``'s
        normalised feature space) from ``n_eval_candidates`` random final states, but with
        ``goal_spec`` kept as it is (its ranges are the env's word) and candidates with
        equal features dropped first, so an env with fewer distinct states than
        ``n_eval_goals`` gets one goal per distinct state found. Deterministic in
        ``goal_seed`` and cached on disk under :meth:`goal_set_key`; leaves the env
        mid-episode when it builds or checks the set.
        """
        goals = self.__dict__.get("_evaluation_goals")
        if goals is None:
            from .goals import automatic_evaluation_goals  # goals imports this module

            goals, self.goal_cache_path = automatic_evaluation_goals(
                self, self.goal_set_key(), seed=int(self.goal_seed), n_evaluation=int(self.n_eval_goals),
                n_candidates=int(self.n_eval_candidates), cache_dir=self.goal_cache_dir)
            self._evaluation_goals = goals
        return list(goals)

    def goal_set_label(self) -> str:
        """How the env is named in its goal-set cache: its ``name``, else the name it was made
        with (:func:`pixelplan.envs.make`), else its class's import path."""
        cls = type(self)
        return getattr(self, "name", None) or self.make_name or f"{cls.__module__}.{cls.__qualname__}"

    def goal_set_key(self) -> dict:
        """What the automatic evaluation set depends on, besides the seed and counts and a
        fingerprint of the env's behaviour (added by
        :func:`pixelplan.envs.goals.automatic_evaluation_goals`): the env's label, its class,
        the options it was made with, the frame shape, the number of actions and T. The
        goal spec is added too. JSON-serialisable; options that are not JSON are keyed by
        their ``repr``."""
        cls = type(self)
        options = json.loads(json.dumps(self.make_options or {}, sort_keys=True, default=repr))
        return {"env": self.goal_set_label(), "class": f"{cls.__module__}.{cls.__qualname__}",
                "options": options, "frame_shape": list(self.frame_shape), "T": int(self.max_episode_steps),
                **_actions_key(self.action_space)}

    def optimal_steps(self, start_features: Any, goal_features: Any) -> int | None:
        """Fewest actions from the start state to the goal, or ``None`` when unknown."""
        return None


def random_action(space: gym.Space, rng: np.random.Generator):
    """One uniform random action of a ``Discrete`` space (an int) or a bounded ``Box`` (a
    float32 array), drawn from ``rng``: the random policy every goal set is built from."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start) + int(rng.integers(space.n))
    if isinstance(space, gym.spaces.Box):
        low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
        return (low + rng.random(space.shape) * (high - low)).astype(np.float32)
    raise TypeError(f"random actions need a Discrete or Box action space, got {space}")


def _actions_key(space: gym.Space) -> dict:
    # Discrete envs keep the key they always had, so their cached goal sets stay valid.
    if isinstance(space, gym.spaces.Discrete):
        return {"n_actions": int(space.n)}
    return {"actions": {"shape": list(space.shape), "low": np.asarray(space.low).tolist(),
                        "high": np.asarray(space.high).tolist()}}


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[-1] == 1:
        return frame[..., 0]
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        rgb = frame[..., :3].astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    raise ValueError(f"cannot convert a frame of shape {frame.shape} to grayscale (expected (H, W, 3))")


class GymGoalEnv(GoalEnv):
    """Adapter: any Gymnasium env with ``Discrete`` or bounded ``Box`` actions + a features
    function -> :class:`GoalEnv`. Without ``features_fn`` and ``goal_spec`` and with
    ``reward=True`` it adapts a reward task instead (no goals; the reward passed through).

    Frames come from ``frame_fn(env, obs)`` when given, else from the
    observation itself (it must then be an image). With ``grayscale=True``
    RGB frames are converted to grayscale uint8 (ITU-R 601 luma). Frames must
    be uint8 ``(H, W)`` or ``(H, W, C)``. ``features_fn(env)`` is called on the
    wrapped env after every reset/step. The reward is 0 unless ``reward=True``
    passes the inner env's reward through (it is always kept in ``info["env_reward"]``); ``terminated`` is passed through
    and the episode is truncated after ``max_episode_steps`` (default: the
    inner env's ``spec.max_episode_steps``). When ``frame_fn`` is given, the
    frame shape is found by one probe ``reset()`` of the inner env.

    Every frame is checked at reset and step: without ``frame_fn`` the inner env's
    observation must have the shape and dtype its ``observation_space`` declares, with
    ``frame_fn`` every frame must have the probe frame's shape; otherwise a
    ``ValueError`` names the inner env and what differed (a mismatch would otherwise
    surface later, inside an agent).

    Goals. ``goal_spec`` is kept as given: its ranges and tolerance decide success.
    ``evaluation_goals()`` serves ``eval_goals`` (a list of :class:`Goal` or the path of a
    :func:`pixelplan.envs.goals.save_goals` file) when given; otherwise the fixed set is
    built on first use, at most ``n_eval_goals`` goals picked from ``n_eval_candidates``
    random final states with ``goal_seed``, one per distinct feature vector at most, and
    cached in ``cache_dir`` (see :meth:`GoalEnv.evaluation_goals`). The cache is keyed
    by ``name`` (else the name :func:`pixelplan.envs.make` made the env with, else the
    inner env's class path), the inner env's class path, the make options, frame shape,
    actions, T, grayscale, the spec, the seed and counts, and a fingerprint of a short
    fixed rollout, so a change to any of them builds a new set.
    ``training_goals(n, rng)`` stays the default: final states of random episodes,
    deterministic given ``rng``.

    Example, wrapping a tiny corridor env whose observation is already an image:

    >>> import gymnasium as gym, numpy as np
    >>> class Corridor(gym.Env):
    ...     observation_space = gym.spaces.Box(0, 255, (1, 5), np.uint8)
    ...     action_space = gym.spaces.Discrete(2)
    ...     def _obs(self):
    ...         img = np.zeros((1, 5), np.uint8); img[0, self.x] = 255; return img
    ...     def reset(self, seed=None, options=None):
    ...         super().reset(seed=seed); self.x = 0; return self._obs(), {}
    ...     def step(self, a):
    ...         self.x = min(max(self.x + (1 if a == 1 else -1), 0), 4)
    ...         return self._obs(), 0.0, False, False, {}
    >>> spec = GoalSpec.from_ranges(["x"], [0], [4], tolerance=0.5)
    >>> env = GymGoalEnv(Corridor(), lambda e: [e.x], spec, max_episode_steps=8)
    >>> frame, info = env.reset(seed=0)
    >>> frame.shape, info["features"]
    ((1, 5), array([0.]))
    >>> frame, reward, terminated, truncated, info = env.step(1)
    >>> info["features"], env.current_goal().frame[0].tolist()
    (array([1.]), [0, 255, 0, 0, 0])
    """

    def __init__(
        self,
        env: gym.Env,
        features_fn: Callable[[gym.Env], Any] | None,
        goal_spec: GoalSpec | None,
        frame_fn: Callable[[gym.Env, Any], np.ndarray] | None = None,
        max_episode_steps: int | None = None,
        grayscale: bool = False,
        *,
        name: str | None = None,
        eval_goals: Sequence[Goal] | str | os.PathLike | None = None,
        n_eval_goals: int = 30,
        n_eval_candidates: int = 1000,
        goal_seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        reward: bool = False,
    ) -> None:
        space = env.action_space
        if isinstance(space, gym.spaces.Box):
            if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise ValueError(f"GymGoalEnv needs a Box action space with finite bounds, got {space}")
        elif not isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"GymGoalEnv needs a Discrete or Box action space, got {space}")
        if (features_fn is None) != (goal_spec is None):
            raise ValueError("GymGoalEnv: pass features_fn and goal_spec together (a goal task), or neither "
                             "(a reward task, with reward=True)")
        if goal_spec is None and not reward:
            raise ValueError("GymGoalEnv without goals (features_fn=None, goal_spec=None) is a reward task: pass "
                             "reward=True")
        if goal_spec is not None and not isinstance(goal_spec, GoalSpec):
            raise TypeError(f"goal_spec must be a GoalSpec, got {type(goal_spec).__name__}")
        if max_episode_steps is None:
            spec = getattr(env, "spec", None)
            max_episode_steps = getattr(spec, "max_episode_steps", None)
            if max_episode_steps is None:
                raise ValueError(
                    "GymGoalEnv needs max_episode_steps: the wrapped env has no spec.max_episode_steps"
                )
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}")
        if int(n_eval_goals) < 1 or int(n_eval_candidates) < int(n_eval_goals):
            raise ValueError(f"need 1 <= n_eval_goals <= n_eval_candidates, got n_eval_goals={n_eval_goals}, "
                             f"n_eval_candidates={n_eval_candidates}")
        self.env = env
        self.features_fn = features_fn
        self.goal_spec = goal_spec
        self.has_goals = goal_spec is not None
        self.has_reward = bool(reward)
        self.frame_fn = frame_fn
        self.grayscale = bool(grayscale)
        self.max_episode_steps = int(max_episode_steps)
        self.action_space = env.action_space
        self.render_mode = getattr(env, "render_mode", None)
        self.name = name
        self.n_eval_goals = int(n_eval_goals)
        self.n_eval_candidates = int(n_eval_candidates)
        self.goal_seed = int(goal_seed)
        self.goal_cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._t = 0
        self._frame: np.ndarray | None = None
        self._features: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None  # every frame's shape, once known

        space = env.observation_space
        if frame_fn is None and isinstance(space, gym.spaces.Box) and space.dtype == np.uint8:
            shape = tuple(space.shape)
            if self.grayscale and len(shape) == 3:
                shape = shape[:2]
        else:
            if frame_fn is None:
                raise ValueError(
                    f"the observation space {space} of {self._inner_name} is not a uint8 image; "
                    "pass frame_fn(env, obs) -> uint8 frame"
                )
            obs, _ = env.reset()
            shape = self._frame_of(obs, "reset").shape
        if len(shape) not in (2, 3):
            raise ValueError(f"frames must be (H, W) or (H, W, C), got observation shape {shape}")
        self._shape = tuple(shape)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        if eval_goals is not None and not self.has_goals:
            raise ValueError("GymGoalEnv: eval_goals given for a reward task without goals")
        if eval_goals is not None:
            self._evaluation_goals = self._given_goals(eval_goals)

    @property
    def _inner_name(self) -> str:
        return type(self.env.unwrapped).__name__

    def _given_goals(self, goals) -> list[Goal]:
        if isinstance(goals, (str, os.PathLike)):
            from .goals import load_goals  # goals imports this module

            goals, _ = load_goals(goals)
        goals = list(goals)
        if not goals:
            raise ValueError(f"GymGoalEnv({self._inner_name}): eval_goals is empty")
        for i, goal in enumerate(goals):
            if not isinstance(goal, Goal):
                raise TypeError(f"GymGoalEnv({self._inner_name}): eval_goals[{i}] is a {type(goal).__name__}, "
                                "expected a Goal (e.g. env.current_goal())")
            if goal.frame.shape != self._shape or goal.features.shape != (self.goal_spec.dim,):
                raise ValueError(
                    f"GymGoalEnv({self._inner_name}): eval_goals[{i}] has a frame of shape {goal.frame.shape} and "
                    f"{goal.features.shape[0]} features; this env has frames of shape {self._shape} and "
                    f"{self.goal_spec.dim} features")
        return goals

    def _frame_of(self, obs: Any, where: str) -> np.ndarray:
        if self.frame_fn is None:
            space = self.env.observation_space
            if not isinstance(obs, np.ndarray) or obs.shape != space.shape or obs.dtype != space.dtype:
                got = (f"an observation of shape {obs.shape} and dtype {obs.dtype}" if isinstance(obs, np.ndarray)
                       else f"a {type(obs).__name__}, not a numpy array")
                raise ValueError(
                    f"{self._inner_name}.{where}() returned {got}, but {self._inner_name}.observation_space "
                    f"declares shape {space.shape} and dtype {space.dtype}: return frames that match the "
                    "declared space (or declare the space the frames have)")
        frame = self.frame_fn(self.env, obs) if self.frame_fn is not None else obs
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError(
                f"frame must be a uint8 array of shape (H, W) or (H, W, C), got {frame.dtype} {frame.shape}"
                + ("" if self.frame_fn is not None else "; pass frame_fn(env, obs) to build frames")
            )
        if self.grayscale:
            frame = _to_gray(frame)
        if self._shape is not None and frame.shape != self._shape:
            raise ValueError(
                f"GymGoalEnv({self._inner_name}): frame_fn gave a frame of shape {frame.shape} after {where}(), "
                f"but this env's frames have shape {self._shape} (the first frame's): every frame must have "
                "the same shape")
        return frame

    def _features_now(self) -> np.ndarray | None:
        if self.features_fn is None:
            return None
        f = np.asarray(self.features_fn(self.env), dtype=np.float64).reshape(-1)
        if f.shape[0] != self.goal_spec.dim:
            raise ValueError(f"GymGoalEnv({self._inner_name}): features_fn returned {f.shape[0]} values, "
                             f"goal_spec has {self.goal_spec.dim} ({', '.join(self.goal_spec.names)})")
        return f

    def goal_set_label(self) -> str:
        inner = type(self.env.unwrapped)
        return self.name or self.make_name or f"{inner.__module__}.{inner.__qualname__}"

    def goal_set_key(self) -> dict:
        inner = type(self.env.unwrapped)
        return {**super().goal_set_key(), "inner": f"{inner.__module__}.{inner.__qualname__}",
                "grayscale": self.grayscale}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._t = 0
        self._frame = self._frame_of(obs, "reset")
        self._features = self._features_now()
        info = dict(info)
        if self._features is not None:
            info["features"] = self._features.copy()
        return self._frame, info

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        self._frame = self._frame_of(obs, "step")
        self._features = self._features_now()
        info = dict(info)
        if self._features is not None:
            info["features"] = self._features.copy()
        info["env_reward"] = reward
        truncated = bool(truncated) or self._t >= self.max_episode_steps
        return self._frame, float(reward) if self.has_reward else 0.0, bool(terminated), truncated, info

    def current_goal(self) -> Goal:
        if self._frame is None:
            raise RuntimeError("call reset() before current_goal()")
        if not self.has_goals:
            raise ValueError(f"GymGoalEnv({self._inner_name}) is a reward task: it has no goals")
        return Goal(self._frame, self._features)

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def spec_of(env: gym.Env, frame_stack: int | None = None) -> EnvSpec:
    """The :class:`EnvSpec` of an env whose agent stacks ``frame_stack`` frames (default: the
    env's own ``k`` when it is a :class:`~pixelplan.envs.wrappers.FrameStack`, else 1)."""
    base = env.unwrapped
    space = env.action_space
    stack = int(getattr(env, "k", 1)) if frame_stack is None else int(frame_stack)
    common = dict(frame_shape=tuple(base.observation_space.shape), frame_stack=stack,
                  max_episode_steps=int(base.max_episode_steps), has_reward=bool(getattr(base, "has_reward", False)),
                  has_goals=bool(getattr(base, "has_goals", True)),
                  actuated_features=tuple(getattr(base, "actuated_features", ())))
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"Discrete action spaces must start at 0, got {space}")
        return EnvSpec(n_actions=int(space.n), **common)
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"Box action spaces need finite bounds (agents sample and clip within them), got {space}")
        return EnvSpec(n_actions=None, action_shape=tuple(space.shape), action_low=tuple(low.tolist()),
                       action_high=tuple(high.tolist()), **common)
    raise ValueError(f"pixelplan envs have Discrete(n) or Box(low, high, shape) actions, got {space}")
