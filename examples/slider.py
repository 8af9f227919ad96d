"""examples/slider.py: a Gymnasium env made a goal task (the README's "Your own environment")."""
import numpy as np
import gymnasium as gym
from pixelplan.envs import GoalSpec, GymGoalEnv


class Slider(gym.Env):
    """A bright bar on a 32x32 image, moved left or right."""
    observation_space = gym.spaces.Box(0, 255, (32, 32), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        frame = np.zeros((32, 32), np.uint8)
        frame[:, 4 * self.x:4 * self.x + 4] = 255
        return frame

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 4
        return self._obs(), {}

    def step(self, action):
        self.x = int(np.clip(self.x + (1 if action else -1), 0, 7))
        return self._obs(), 0.0, False, False, {}


def make_env(max_episode_steps=10):
    """The goal task: the feature is the bar's position x; success means the exact position."""
    spec = GoalSpec.from_ranges(["x"], low=[0], high=[7], tolerance=0.5)
    return GymGoalEnv(Slider(), features_fn=lambda env: [env.unwrapped.x], goal_spec=spec,
                      max_episode_steps=max_episode_steps, name="slider")
