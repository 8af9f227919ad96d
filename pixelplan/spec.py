"""What an agent is built for: :class:`EnvSpec` (numpy only; an env's is read off it by
:func:`pixelplan.envs.core.spec_of`).

An agent never sees an env object. It is built from an :class:`EnvSpec`: the shape of one
frame and how many are stacked, the action space (``Discrete(n)``, or a float32 ``Box`` with
bounds), the horizon T in agent steps, and whether the env pays a reward and hands out
goals. A checkpoint stores the spec and refuses to load into an env whose spec differs.

Two kinds of task share the one contract:

* goal tasks (``has_goals``): the env hands out goal frames; its reward is 0 and success is
  decided by its :class:`~pixelplan.envs.core.GoalSpec` (GLAMOR, GCSL, DISCERN, MBOLD);
* reward tasks (``has_reward``): the env's own reward is passed through and evaluation reports
  the mean return (PlaNet).

This module imports neither torch nor any env library: config, envs, data and agents all
read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EnvSpec"]


@dataclass(frozen=True)
class EnvSpec:
    """Frames, actions, horizon and task kind of an env, as an agent needs them.

    ``n_actions`` is set for a ``Discrete`` action space (actions ``0..n-1``) and None for a
    ``Box``; a ``Box`` has ``action_shape`` and the bounds ``action_low``/``action_high``
    (flattened, float). Everything is a plain Python value, so ``to_dict`` is JSON.
    """

    frame_shape: tuple[int, ...]
    frame_stack: int
    n_actions: int | None
    max_episode_steps: int
    action_shape: tuple[int, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    has_reward: bool = False
    has_goals: bool = True
    actuated_features: tuple[int, ...] = ()
    """indices into the env's ``info["features"]`` of what the agent moves directly (a robot
    arm's joints): MBOLD mines its negative goals by them; () = the env declares none"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_shape", tuple(int(d) for d in self.frame_shape))
        object.__setattr__(self, "action_shape", tuple(int(d) for d in self.action_shape))
        object.__setattr__(self, "action_low", tuple(float(v) for v in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(v) for v in self.action_high))
        object.__setattr__(self, "actuated_features", tuple(int(i) for i in self.actuated_features))
        if any(i < 0 for i in self.actuated_features):
            raise ValueError(f"actuated_features are indices into the features and must be >= 0, got "
                             f"{self.actuated_features}")
        if self.n_actions is not None:
            if int(self.n_actions) < 1 or self.action_shape or self.action_low or self.action_high:
                raise ValueError(f"a discrete action space needs n_actions >= 1 and no Box shape or bounds, got "
                                 f"n_actions={self.n_actions}, action_shape={self.action_shape}")
            object.__setattr__(self, "n_actions", int(self.n_actions))
        else:
            size = int(np.prod(self.action_shape)) if self.action_shape else 0
            if size < 1 or len(self.action_low) != size or len(self.action_high) != size:
                raise ValueError(f"a Box action space needs a non-empty action_shape and one low and high bound per "
                                 f"entry, got shape {self.action_shape}, {len(self.action_low)} low and "
                                 f"{len(self.action_high)} high bounds")
            if any(not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi)
                   for lo, hi in zip(self.action_low, self.action_high)):
                raise ValueError(f"Box action bounds must be finite with low <= high, got low={self.action_low}, "
                                 f"high={self.action_high}")
        if int(self.frame_stack) < 1 or int(self.max_episode_steps) < 1:
            raise ValueError(f"frame_stack and max_episode_steps must be >= 1, got {self.frame_stack} and "
                             f"{self.max_episode_steps}")
        if not (self.has_goals or self.has_reward):
            raise ValueError("an env must hand out goals (has_goals) or pay a reward (has_reward), or both")

    # ------------------------------------------------------------------ views
    @property
    def discrete(self) -> bool:
        """Whether actions are ``0..n_actions-1`` (else float arrays of ``action_shape``)."""
        return self.n_actions is not None

    @property
    def action_dtype(self) -> np.dtype:
        return np.dtype(np.int64) if self.discrete else np.dtype(np.float32)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` float32 arrays of ``action_shape`` (Box spaces only)."""
        if self.discrete:
            raise ValueError("a Discrete action space has no bounds; it has n_actions")
        shape = self.action_shape
        return (np.asarray(self.action_low, np.float32).reshape(shape),
                np.asarray(self.action_high, np.float32).reshape(shape))

    def describe_actions(self) -> str:
        if self.discrete:
            return f"Discrete({self.n_actions})"
        low, high = self.action_bounds()
        return f"Box(shape={self.action_shape}, low={low.min():g}..., high={high.max():g}...)"

    def require_discrete(self, who: str) -> int:
        """``n_actions``, or a one-line error naming ``who`` needs discrete actions."""
        if not self.discrete:
            raise ValueError(f"{who} needs a Discrete action space, but this env's actions are "
                             f"{self.describe_actions()}; use a discrete version of the env (DM Control: "
                             "--env-options actions discrete)")
        return self.n_actions

    def require_goals(self, who: str) -> None:
        if not self.has_goals:
            raise ValueError(f"{who} is goal-conditioned, but this env is a reward task with no goals; use a goal "
                             "task (DM Control: --env-options task goal), or an agent for reward tasks")

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict[str, Any]:
        return {"frame_shape": list(self.frame_shape), "frame_stack": self.frame_stack,
                "n_actions": self.n_actions, "max_episode_steps": self.max_episode_steps,
                "action_shape": list(self.action_shape), "action_low": list(self.action_low),
                "action_high": list(self.action_high), "has_reward": self.has_reward,
                "has_goals": self.has_goals,
                **({"actuated_features": list(self.actuated_features)} if self.actuated_features else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnvSpec":
        """The inverse of :meth:`to_dict`; also reads the older four-key spec of discrete goal
        envs (frame_shape, frame_stack, n_actions, max_episode_steps) that earlier checkpoints hold."""
        known = {"frame_shape", "frame_stack", "n_actions", "max_episode_steps", "action_shape", "action_low",
                 "action_high", "has_reward", "has_goals", "actuated_features"}
        return cls(**{k: v for k, v in d.items() if k in known})
