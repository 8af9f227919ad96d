"""What every agent shares: the shapes it is built for, and the interface the run loop uses.

An agent sees arrays and shapes, never an environment object. The run loop calls:

* ``act(state, goal, t, explore, env_steps) -> actions``: one action per row; the value
  ``TERMINATE`` means the agent declares the episode done (evaluation's early termination).
* ``update(batch) -> metrics``: one gradient step on a hindsight batch from the replay.
* ``state_dict()`` / ``load_state_dict()``: weights, optimiser, RNG and counters, for
  checkpoints and exact resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch

# An action value meaning "end this episode now" (only ever returned with explore=False).
TERMINATE = -1


@dataclass(frozen=True)
class ObsSpec:
    """What an agent is built for: frame shape, stack depth, actions, episode length T."""
    frame_shape: tuple[int, ...]
    frame_stack: int
    n_actions: int
    max_episode_steps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Agent(Protocol):
    batch_size: int
    # Optional, default True: an agent with ``learns = False`` (random) gets no replay and no
    # updates from the run loop.
    learns: bool

    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool,
            env_steps: int) -> np.ndarray: ...

    def update(self, batch) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def linear_epsilon(cfg, env_steps: int) -> float:
    """Collection epsilon at ``env_steps``: linear from ``cfg.eps_start`` to ``cfg.eps_final``
    over ``cfg.eps_steps`` env steps, then constant (GLAMOR's schedule, shared by the baselines)."""
    frac = 1.0 if cfg.eps_steps == 0 else min(1.0, env_steps / cfg.eps_steps)
    return cfg.eps_start + frac * (cfg.eps_final - cfg.eps_start)


def frames_to_channels(frames: torch.Tensor, n_frame_dims: int) -> torch.Tensor:
    """(B, [stack,] H, W[, C]) -> (B, channels, H, W), channels = stack x C."""
    if n_frame_dims == 3:  # colour frames: move C next to the stack axis
        if frames.dim() == 5:
            b, s, h, w, c = frames.shape
            return frames.permute(0, 1, 4, 2, 3).reshape(b, s * c, h, w)
        return frames.permute(0, 3, 1, 2)
    return frames if frames.dim() == 4 else frames.unsqueeze(1)


def check_batch(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    """Clear error for a batch of frames of the wrong shape or dtype."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape[1:] != expected:
        got = (f"{type(array).__name__} with dtype {getattr(array, 'dtype', '?')} and shape "
               f"{getattr(array, 'shape', '?')}")
        raise ValueError(f"{name} must be a uint8 array of shape (batch, {', '.join(map(str, expected))}), "
                         f"got {got}. Pass frames exactly as the environment returns them "
                         f"(the goal is a single frame; the state is the stack of the last frames).")
