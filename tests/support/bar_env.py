"""A tiny continuous-control reward task with pixels for PlaNet's tests: a bar at position x in
[0, 1], drawn as a red vertical stripe on a 64x64 RGB image, moved by a Box(-1, 1, (1,)) action
(x += 0.25 a, clipped to [0, 1]). Each step pays ``1 - 2 |x - 0.5|`` after the move: 1 at the
centre, 0 at either edge, so the best policy heads to the centre and stays; a random policy
wanders. Episodes start uniformly in [0, 1] and last ``max_episode_steps`` (10) steps.

``make_bar_env`` adapts it through :class:`pixelplan.envs.GymGoalEnv` as a reward task; it is a
module-level factory, so ``--env tests.support.bar_env:make_bar_env`` works in worker processes.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from pixelplan.envs import GymGoalEnv

SIZE = 64
STEP = 0.25


class Bar(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.x = 0.5

    def _obs(self) -> np.ndarray:
        img = np.full((SIZE, SIZE, 3), 30, np.uint8)
        left = int(round(self.x * (SIZE - 8)))
        img[:, left:left + 8] = (230, 40, 40)
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(0.0, 1.0))
        return self._obs(), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        self.x = float(np.clip(self.x + STEP * a, 0.0, 1.0))
        return self._obs(), 1.0 - 2.0 * abs(self.x - 0.5), False, False, {}


def make_bar_env(max_episode_steps: int = 10) -> GymGoalEnv:
    return GymGoalEnv(Bar(), None, None, max_episode_steps=max_episode_steps, name="bar", reward=True)
