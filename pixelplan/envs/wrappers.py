"""Frame stacking: the one rule, and the two places that apply it to live episodes.

Frame-stacking rule (shared with the episode store, which rebuilds stacks from single
frames): the stack at time t holds frames ``t-k+1 .. t``, oldest first; frames before the
start of the episode are copies of the episode's first frame. :func:`stack_from_history` is
that rule written out, the reference the others are tested against.

* :class:`RowStacks` is what the drivers use: envs (and env worker processes) hand out single
  frames, and the driver stacks them for the agent, one row per env, so a frame crosses a
  pipe once and nothing is unstacked again.
* :class:`FrameStack` is a Gymnasium wrapper with the same rule, for users who want a stacked
  env of their own (the drivers do not use it).
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from .core import Goal, GoalSpec

__all__ = ["FrameStack", "RowStacks", "stack_from_history"]


def stack_from_history(frames: Sequence[np.ndarray] | np.ndarray, k: int) -> np.ndarray:
    """Frame stacks for every step of one episode.

    ``frames`` holds the episode's frames ``(N, *frame_shape)``; the result has
    shape ``(N, k, *frame_shape)`` where entry t is frames ``t-k+1 .. t``
    (oldest first), indices below 0 clamped to 0 (the first frame repeats).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frames = np.asarray(frames)
    if frames.ndim < 1 or frames.shape[0] == 0:
        raise ValueError("stack_from_history needs at least one frame")
    n = frames.shape[0]
    idx = np.arange(n)[:, None] - (k - 1) + np.arange(k)[None, :]
    return frames[np.maximum(idx, 0)]


class RowStacks:
    """The frame stacks of ``n`` live episodes, one row per env: ``array`` is uint8
    ``(n, k, *frame_shape)``, oldest frame first.

    ``start(rows, frames)`` begins those rows' episodes (k copies of the first frame);
    ``push(rows, frames)`` appends each row's new frame, dropping its oldest. ``array`` is
    updated in place; ``latest()`` is a copy of every row's newest frame.
    """

    def __init__(self, n: int, k: int, frame_shape: Sequence[int]):
        if k < 1:
            raise ValueError(f"a frame stack needs k >= 1 frames, got {k}")
        self.k = int(k)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.array = np.zeros((int(n), self.k, *self.frame_shape), np.uint8)

    def _frames(self, rows, frames) -> tuple[np.ndarray, np.ndarray]:
        rows, frames = np.asarray(rows, dtype=np.int64).reshape(-1), np.asarray(frames)
        if frames.shape != (len(rows), *self.frame_shape) or frames.dtype != np.uint8:
            raise ValueError(f"expected one uint8 frame of shape {self.frame_shape} per row ({len(rows)} rows), got "
                             f"{frames.dtype} {frames.shape}: envs hand the drivers single frames (build them "
                             "without FrameStack, e.g. EnvFactory(name, options, frame_stack=1))")
        return rows, frames

    def start(self, rows, frames) -> np.ndarray:
        rows, frames = self._frames(rows, frames)
        self.array[rows] = frames[:, None]
        return self.array

    def push(self, rows, frames) -> np.ndarray:
        rows, frames = self._frames(rows, frames)
        if self.k > 1:
            self.array[rows, :-1] = self.array[rows, 1:]
        self.array[rows, -1] = frames
        return self.array

    def latest(self) -> np.ndarray:
        return self.array[:, -1].copy()


class FrameStack(gym.Wrapper):
    """Observation = the last ``k`` frames stacked on a new leading axis, oldest first.

    The observation has shape ``(k, *frame_shape)`` uint8. At reset the stack is
    filled with ``k`` copies of the first frame, i.e. frames before the start of
    the episode repeat the episode's first frame (the replay buffer uses the
    same rule, see :func:`stack_from_history`).

    The goal-environment API (``goal_spec``, ``max_episode_steps``,
    ``current_goal``, ``training_goals``, ``evaluation_goals``,
    ``optimal_steps``) is forwarded to the wrapped env; goals stay SINGLE
    frames, not stacks.
    """

    def __init__(self, env: gym.Env, k: int = 4) -> None:
        super().__init__(env)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8:
            raise ValueError(f"FrameStack needs a uint8 Box observation space, got {space}")
        self.k = int(k)
        self.observation_space = gym.spaces.Box(0, 255, (self.k, *space.shape), np.uint8)
        self._stack = RowStacks(1, self.k, space.shape)     # the drivers' stacking, for one env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        frame, info = self.env.reset(seed=seed, options=options)
        return self._stack.start([0], frame[None])[0].copy(), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        return self._stack.push([0], frame[None])[0].copy(), reward, terminated, truncated, info

    # Goal-environment API, forwarded.
    @property
    def goal_spec(self) -> GoalSpec:
        return self.env.get_wrapper_attr("goal_spec")

    @property
    def max_episode_steps(self) -> int:
        return self.env.get_wrapper_attr("max_episode_steps")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.env.observation_space.shape)

    def current_goal(self) -> Goal:
        return self.env.get_wrapper_attr("current_goal")()

    def training_goals(self, n: int, rng: Any = None) -> list[Goal]:
        return self.env.get_wrapper_attr("training_goals")(n, rng)

    def evaluation_goals(self) -> list[Goal]:
        return self.env.get_wrapper_attr("evaluation_goals")()

    def optimal_steps(self, start_features: Any, goal_features: Any) -> int | None:
        return self.env.get_wrapper_attr("optimal_steps")(start_features, goal_features)
