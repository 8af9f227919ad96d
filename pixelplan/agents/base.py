"""What every agent shares: the shapes it is built for, and the interface the run loop uses.

An agent sees arrays and shapes, never an environment object. The run loop calls:

* ``act(state, goal, t, explore, env_steps) -> actions``: one action per row; the value
  ``TERMINATE`` means the agent declares the episode done (evaluation's early termination).
* ``update(batch) -> metrics``: one gradient step on a hindsight batch from the replay.
* ``state_dict()`` / ``load_state_dict()``: weights, optimiser, RNG and counters, for
  checkpoints and exact resume.

``Learner`` is the optimiser step every learning agent shares (GLAMOR, GCSL, DISCERN).
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


class Learner:
    """What every learning agent repeats, in one place: an AdamW optimiser over its
    parameters, one gradient step with global-norm clipping, and the update counter.

    ``step(loss)`` runs zero_grad, backward, the clip and the optimiser step, and returns the
    gradient norm before clipping; ``count()`` counts an update (an agent may count one that
    took no gradient step, as DISCERN does before it has any loss). Its ``state_dict`` keys
    (``optimizer``, ``updates``) are the ones agents' checkpoints have always used, so an agent
    merges them into its own and older checkpoints still load.
    """

    def __init__(self, params, lr: float, weight_decay: float, grad_clip: float):
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.updates = 0

    @classmethod
    def from_shared(cls, params, shared) -> "Learner":
        """The optimiser settings of a ``SharedConfig``."""
        return cls(params, lr=shared.lr, weight_decay=shared.weight_decay, grad_clip=shared.grad_clip)

    def step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        self.optimizer.step()
        return norm

    def count(self) -> int:
        self.updates += 1
        return self.updates

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])


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
