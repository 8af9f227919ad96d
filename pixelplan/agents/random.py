"""The random agent: uniform random actions, no learning.

It is the floor row of every results table: whatever an agent scores, it has to beat acting
at random for the same number of steps (the success rate on goal tasks, the return on reward
tasks). It sees the same spec as every other agent and goes through the same drivers, so its
numbers are measured exactly like theirs:

* ``act`` draws one action per row, whether exploring or evaluating: uniform over
  ``0..n_actions-1`` for ``Discrete`` actions, uniform in ``[low, high]`` per entry for a
  ``Box``. It never stops an episode early, so evaluation episodes run to T. Goals are not
  needed (None on reward tasks) and not read beyond their shape.
* ``learns = False`` tells the drivers to keep no store and make no updates; ``update`` still
  exists (and returns ``{}``) so the agent fits the contract (agents/base.py).
* The only state is its own numpy Generator, seeded from ``seed``; ``state_dict`` holds
  it, so a resumed run draws exactly the actions an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pixelplan.agents.base import AgentBase, Decision, EnvSpec, check_batch


class RandomAgent(AgentBase):
    """Uniform random actions: the floor row of every results table (see the module doc)."""

    learns = False     # the drivers keep no store and make no updates

    def __init__(self, cfg, spec: EnvSpec, device: torch.device, seed: int):
        self.cfg, self.spec, self.device = cfg, spec, device
        self.rng = np.random.default_rng(seed)
        self._bounds = None if spec.discrete else spec.action_bounds()

    def act(self, state: np.ndarray, goal: np.ndarray | None, t: np.ndarray, explore: bool,
            env_steps: int, rows: np.ndarray | None = None) -> Decision:
        """One uniform random action per row (never a stop)."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        if goal is not None:
            check_batch("goal", goal, self.spec.frame_shape)
        t = np.atleast_1d(np.asarray(t))
        if len(state) != len(t) or (goal is not None and len(goal) != len(state)):
            raise ValueError(f"state, goal and t must have one row each per env, got {len(state)} states, "
                             f"{'no' if goal is None else len(goal)} goals and {len(t)} time steps")
        if self._bounds is None:
            return Decision.go(self.rng.integers(self.spec.n_actions, size=len(state), dtype=np.int64))
        low, high = self._bounds
        u = self.rng.random((len(state), *self.spec.action_shape))
        return Decision.go((low + u * (high - low)).astype(np.float32))

    def update(self, batch) -> dict[str, float]:
        """Nothing to learn."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
