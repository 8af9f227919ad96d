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
* ``--random.policy correlated`` (continuous actions only) draws MBOLD's data-collection policy
  instead: per env row one filtered Gaussian sequence, ``u_t = beta n_t + (1 - beta) u_(t-1)``,
  restarted at 0 by ``begin_episodes`` (pixelplan/envs/noise.py). The tabletop presets choose it
  with the scene's std, so the random row of a tabletop table is the dataset's own policy.
* The only state is its own numpy Generator, seeded from ``seed`` (and, when correlated, each
  row's filter state); ``state_dict`` holds them, so a resumed run draws exactly the actions an
  uninterrupted one would.
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
        rcfg = getattr(cfg, "random", None)
        self.correlated = rcfg is not None and rcfg.policy == "correlated"
        # (explore, row) -> the filter's u_(t-1), unclipped: evaluation rows are not collection rows
        self._noise: dict[tuple[bool, int], np.ndarray] = {}
        if self.correlated:
            if spec.discrete:
                raise ValueError("--random.policy correlated needs continuous (Box) actions; this env's are "
                                 f"{spec.describe_actions()}: use --random.policy uniform")
            low, high = self._bounds
            size = low.size
            std = (np.full(size, 0.25) * (high - low).reshape(-1) if rcfg.noise_std is None
                   else np.asarray(rcfg.noise_std, np.float64))
            if std.shape != (size,):
                raise ValueError(f"--random.noise-std has {std.size} values; this env has {size} action "
                                 f"dimensions: give one std per dimension")
            self.noise_std, self.noise_beta = std, float(rcfg.noise_beta)

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
        if self.correlated:
            rows = np.arange(len(state)) if rows is None else np.asarray(rows)
            out = np.empty((len(state), low.size), np.float32)
            for j, row in enumerate(rows):
                key = (bool(explore), int(row))
                prev = self._noise.get(key, np.zeros(low.size))
                u = self.noise_beta * self.rng.standard_normal(low.size) * self.noise_std \
                    + (1 - self.noise_beta) * prev
                self._noise[key] = u
                out[j] = np.clip(u, low.reshape(-1), high.reshape(-1))
            return Decision.go(out.reshape(len(state), *self.spec.action_shape))
        u = self.rng.random((len(state), *self.spec.action_shape))
        return Decision.go((low + u * (high - low)).astype(np.float32))

    def begin_episodes(self, rows, goals, explore: bool) -> None:
        """New episodes in ``rows``: their correlated-noise filters restart at 0."""
        super().begin_episodes(rows, goals, explore)
        for row in np.atleast_1d(np.asarray(rows)):
            self._noise.pop((bool(explore), int(row)), None)

    def update(self, batch) -> dict[str, float]:
        """Nothing to learn."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "noise": [[e, r, v.tolist()] for (e, r), v in self._noise.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._noise = {(bool(e), int(r)): np.asarray(v, np.float64) for e, r, v in state.get("noise", [])}
