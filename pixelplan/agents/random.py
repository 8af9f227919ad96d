"""The random agent: uniform random actions, no learning.

It is the floor row of every results table: whatever an agent scores, it has to beat the
success rate of acting at random for the same number of steps. It sees the same shapes
as every other agent and goes through the same run loop, so its numbers are measured
exactly like theirs:

* ``act`` draws one action per row, uniform over ``spec.n_actions``, whether exploring or
  evaluating. It never returns ``TERMINATE``, so evaluation episodes run to T.
* ``learns = False`` tells the run loop to skip replay sampling and updates; ``update``
  still exists (and returns ``{}``) so the agent fits the common interface.
* The only state is its own numpy Generator, seeded from ``seed``; ``state_dict`` holds
  it, so a resumed run draws exactly the actions an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pixelplan.agents.base import ObsSpec, check_batch


class RandomAgent:
    """Uniform random actions: the floor row of every results table (see the module doc)."""

    learns = False     # the run loop skips replay sampling and updates
    batch_size = 1     # what the loop would sample if it did not skip; never used to learn
    max_k = 1

    def __init__(self, cfg, spec: ObsSpec, device: torch.device, seed: int):
        if spec.n_actions < 1:
            raise ValueError(f"the random agent needs at least one action, got n_actions={spec.n_actions}")
        self.cfg, self.spec, self.device = cfg, spec, device
        self.rng = np.random.default_rng(seed)

    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool,
            env_steps: int) -> np.ndarray:
        """One uniform random action in ``0..n_actions-1`` per row (never ``TERMINATE``)."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        check_batch("goal", goal, self.spec.frame_shape)
        t = np.atleast_1d(np.asarray(t))
        if not len(state) == len(goal) == len(t):
            raise ValueError(f"state, goal and t must have one row each per env, got {len(state)} states, "
                             f"{len(goal)} goals and {len(t)} time steps")
        return self.rng.integers(self.spec.n_actions, size=len(state), dtype=np.int64)

    def update(self, batch) -> dict[str, float]:
        """Nothing to learn."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
