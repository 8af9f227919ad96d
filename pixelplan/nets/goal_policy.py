"""A goal- and time-conditioned head over frame encoders, for the one-step baselines.

GCSL's policy pi(a | s, g, h) and DISCERN's Q(s, g, h, a) have the same shape: encode the
state stack and the goal frame with the encoders GLAMOR uses (same kind, same sizes), add
the time remaining h, and map the lot to one output per action (logits or Q-values).

Time remaining is given as ``(sin 2 pi h / T, cos 2 pi h / T)``, the periodic
representation the GLAMOR paper uses for both baselines (section 4.2). Note that it maps
h = 0 and h = T to the same point; agents only ever ask with 1 <= h <= T (an action is
being chosen, so at least one step is left), where the encoding is one-to-one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelplan.nets.encoders import make_encoder


def time_encoding(remaining: torch.Tensor, horizon: int) -> torch.Tensor:
    """(..., 2) features ``(sin 2 pi h / T, cos 2 pi h / T)`` of the steps remaining h."""
    if horizon < 1:
        raise ValueError(f"the horizon T must be >= 1, got {horizon}")
    angle = (2 * math.pi / horizon) * remaining.to(torch.float32)
    return torch.stack([torch.sin(angle), torch.cos(angle)], -1)


class GoalTimeNet(nn.Module):
    """state stack, goal frame, steps remaining -> one output per action."""

    def __init__(self, encoder: str, state_channels: int, goal_channels: int, frame_hw: tuple[int, int],
                 state_size: int, hidden: int, n_out: int, horizon: int):
        super().__init__()
        self.horizon = horizon
        self.state_encoder = make_encoder(encoder, state_channels, frame_hw, state_size)
        self.goal_encoder = make_encoder(encoder, goal_channels, frame_hw, state_size)
        self.head = nn.Sequential(nn.Linear(2 * state_size + 2, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    @classmethod
    def for_frames(cls, encoder: str, frame_shape: tuple[int, ...], frame_stack: int, state_size: int,
                   hidden: int, n_out: int, horizon: int) -> "GoalTimeNet":
        """Sized for stacks of ``frame_shape`` frames (grayscale H x W or colour H x W x C)."""
        colours = frame_shape[2] if len(frame_shape) == 3 else 1
        return cls(encoder, frame_stack * colours, colours, tuple(frame_shape[:2]), state_size, hidden,
                   n_out, horizon)

    def encode_goal(self, goal: torch.Tensor) -> torch.Tensor:
        """Goal features, for callers that reuse one goal over many states."""
        return torch.relu(self.goal_encoder(goal))

    def forward(self, state: torch.Tensor, goal_features: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """``state``: (B, C, H, W) frames in channels; ``goal_features`` from ``encode_goal``."""
        s = torch.relu(self.state_encoder(state))
        return self.head(torch.cat([s, goal_features, time_encoding(remaining, self.horizon)], -1))
