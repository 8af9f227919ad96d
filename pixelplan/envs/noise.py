"""Random data-collection policies for continuous actions: uniform, and MBOLD's correlated noise.

MBOLD (appendix A.3) collects its offline datasets with temporally correlated random actions,
the filtering of Nagabandi et al. (2020, PDDM): per episode one sequence

    u_t = beta * n_t + (1 - beta) * u_{t-1},    n_t ~ Normal(0, diag(std^2)),    u_{-1} = 0

with beta = 0.5 and a per-dimension ``std`` (tabletop reach and push: [0.6, 0.6, 0.3, 0.3];
door: [0.3, 0.3, 0.3, 0.15]). The executed action is ``clip(u_t, low, high)``; the filter runs
on the unclipped ``u`` (clipping is the env's bound, not part of the noise process).

Facts the tests check (``tests/test_tabletop.py``): with ``u_{-1} = 0`` the variance at step t is
``beta^2 std^2 (1 - (1 - beta)^(2 (t + 1))) / (1 - (1 - beta)^2)``, tending to
``beta std^2 / (2 - beta)`` (std^2 / 3 at beta = 0.5), and the stationary lag-1
autocorrelation is ``1 - beta``. Starting from 0 is our choice (the paper does not say); it
makes the first action small, as a robot at rest would move.

Numpy only: the collect driver, the random agent and the tabletop task builder share it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["CorrelatedNoise", "correlated_sequence", "stationary_std", "step_std", "POLICIES"]

#: the random policies ``pixelplan collect --policy`` and ``--random.policy`` accept
POLICIES = ("uniform", "correlated")


def _check(std, beta: float) -> np.ndarray:
    std = np.asarray(std, dtype=np.float64)
    if std.ndim != 1 or std.size < 1 or not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError(f"correlated noise needs one finite std >= 0 per action dimension, got {std.tolist()}")
    if not (np.isfinite(beta) and 0 < beta <= 1):
        raise ValueError(f"correlated noise needs 0 < beta <= 1 (1 = white noise), got {beta}")
    return std


def step_std(std: Sequence[float], beta: float, t: int) -> np.ndarray:
    """The standard deviation of ``u_t`` (t = 0, 1, ...), per dimension, for ``u_{-1} = 0``."""
    std, a = _check(std, beta), 1.0 - beta
    if a == 0:
        return beta * std
    return beta * std * np.sqrt((1 - a ** (2 * (t + 1))) / (1 - a * a))


def stationary_std(std: Sequence[float], beta: float) -> np.ndarray:
    """The limit of :func:`step_std` as t grows: ``std * sqrt(beta / (2 - beta))``."""
    std = _check(std, beta)
    return std * np.sqrt(beta / (2 - beta))


class CorrelatedNoise:
    """The filter of one episode: ``sample(rng)`` returns the next clipped action.

    ``state`` is the unclipped ``u_{t-1}``; ``reset()`` starts a new episode at 0.
    """

    def __init__(self, std: Sequence[float], low: Sequence[float], high: Sequence[float], beta: float = 0.5):
        self.std = _check(std, beta)
        self.beta = float(beta)
        try:
            self.low = np.broadcast_to(np.asarray(low, dtype=np.float64), self.std.shape).copy()
            self.high = np.broadcast_to(np.asarray(high, dtype=np.float64), self.std.shape).copy()
        except ValueError:
            self.low = self.high = None
        if self.low is None or np.any(self.low > self.high):
            raise ValueError(f"correlated noise: {self.std.size} stds for bounds of shape {np.shape(low)} and "
                             f"{np.shape(high)}; give one std per action dimension, and low <= high")
        self.state = np.zeros_like(self.std)

    def reset(self) -> None:
        self.state = np.zeros_like(self.std)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        n = rng.standard_normal(self.std.shape) * self.std
        self.state = self.beta * n + (1.0 - self.beta) * self.state
        return np.clip(self.state, self.low, self.high).astype(np.float32)


def correlated_sequence(rng: np.random.Generator, steps: int, std: Sequence[float], low, high,
                        beta: float = 0.5) -> np.ndarray:
    """``steps`` clipped actions of one episode, shape ``(steps, A)`` float32."""
    noise = CorrelatedNoise(std, low, high, beta)
    return np.stack([noise.sample(rng) for _ in range(steps)]) if steps else np.zeros((0, len(noise.std)), np.float32)
