"""A tiny continuous-action env for the tests: a point in the unit square, drawn as a bright
pixel on a 12x12 image, moved by a Box(-1, 1, (2,)) action (0.1 of the action per step).

``make_goal_env`` adapts it as a goal task (features: the position; success within 0.1);
``make_reward_env`` as a reward task paying minus the distance to the centre, each step. Both
go through :class:`pixelplan.envs.GymGoalEnv`, the adapter any user's env goes through, and
both are module-level factories, so ``--env tests.support.point_env:make_goal_env`` works in
env worker processes too.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from pixelplan.envs import GoalSpec, GymGoalEnv

SIZE = 12


class Point(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self.pos = np.zeros(2)
        #: every reward this env paid, in order (tests compare reported returns with it)
        self.paid: list[float] = []

    def _obs(self) -> np.ndarray:
        img = np.zeros((SIZE, SIZE), np.uint8)
        x, y = np.minimum((self.pos * SIZE).astype(int), SIZE - 1)
        img[y, x] = 255
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0.0, 1.0, size=2)
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"Point needs a finite action of shape (2,), got {action!r}")
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), 0.0, 1.0)
        reward = -float(np.linalg.norm(self.pos - 0.5))
        self.paid.append(reward)
        return self._obs(), reward, False, False, {}


def make_goal_env(max_episode_steps: int = 8, **options) -> GymGoalEnv:
    spec = GoalSpec.from_ranges(["x", "y"], [0, 0], [1, 1], tolerance=0.1)
    return GymGoalEnv(Point(), lambda env: env.pos, spec, max_episode_steps=max_episode_steps, name="point",
                      n_eval_goals=4, n_eval_candidates=20, **options)


def make_reward_env(max_episode_steps: int = 8) -> GymGoalEnv:
    return GymGoalEnv(Point(), None, None, max_episode_steps=max_episode_steps, name="point-reward", reward=True)
