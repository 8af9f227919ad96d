"""Learned distances between two frames: MBOLD's Q-function and actor, and the ablations'
temporal-distance regressor and VAE (MBOLD paper A.1, B.1, C.2; docs/mbold.md).

Every network here reads a (state, goal) pair as one 6-channel image (the two RGB frames
stacked on the channel axis, float in [0, 1]) through the paper's "convolutional encoder":
four 4 x 4 stride-2 convolutions of [8, 16, 32, 64] filters, a leaky ReLU after each of the
first three, batch norm after the second and third (A.1). The VAE encodes one frame.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvEncoder", "Critic", "Actor", "TemporalDistance", "FrameVAE", "mlp"]

FILTERS = (8, 16, 32, 64)


class ConvEncoder(nn.Module):
    """The paper's convolutional encoder (A.1), flattened; ``out_size`` is its output width."""

    def __init__(self, in_channels: int, frame_hw: tuple[int, int]):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(FILTERS):
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
            if i < len(FILTERS) - 1:
                layers.append(nn.LeakyReLU(0.2))
                if i in (1, 2):                  # after the second and third leaky ReLUs
                    layers.append(nn.BatchNorm2d(cout))
            cin = cout
        self.net = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_size = int(self.net(torch.zeros(2, in_channels, *frame_hw)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(n_in: int, width: int, n_linear: int, n_out: int) -> nn.Sequential:
    """``n_linear`` linear layers, the last to ``n_out``; a ReLU then batch norm after each of
    the others (A.1's fully connected stacks)."""
    layers: list[nn.Module] = []
    for _ in range(n_linear - 1):
        layers += [nn.Linear(n_in, width), nn.ReLU(), nn.BatchNorm1d(width)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """Q(s, a, g): the encoder of [s, g], the action appended, 6 linear layers of 128 (A.1)."""

    def __init__(self, frame_shape: tuple[int, int, int], action_dim: int, width: int = 128, layers: int = 6):
        super().__init__()
        h, w, c = frame_shape
        self.encoder = ConvEncoder(2 * c, (h, w))
        self.head = mlp(self.encoder.out_size + action_dim, width, layers, 1)

    def forward(self, pair: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(pair), action], 1)).squeeze(1)


class Actor(nn.Module):
    """pi(s, g) in [-1, 1]^A: the encoder of [s, g], 10 linear layers of 128, tanh (A.1)."""

    def __init__(self, frame_shape: tuple[int, int, int], action_dim: int, width: int = 128, layers: int = 10):
        super().__init__()
        h, w, c = frame_shape
        self.encoder = ConvEncoder(2 * c, (h, w))
        self.head = mlp(self.encoder.out_size, width, layers, action_dim)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.encoder(pair)))


class TemporalDistance(nn.Module):
    """Regresses the steps between two frames of one trajectory (C.2): the encoder of [s, g],
    then 5 fully connected layers of 256."""

    def __init__(self, frame_shape: tuple[int, int, int], width: int = 256, layers: int = 5):
        super().__init__()
        h, w, c = frame_shape
        self.encoder = ConvEncoder(2 * c, (h, w))
        self.head = mlp(self.encoder.out_size, width, layers, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pair)).squeeze(1)


class FrameVAE(nn.Module):
    """A beta-VAE of single frames (B.1's RIG VAE: latent 8, KL weight 1e-3 by default); the
    distance is the l2 between the means of two frames' posteriors."""

    def __init__(self, frame_shape: tuple[int, int, int], latent: int = 8):
        super().__init__()
        h, w, c = frame_shape
        self.frame_shape = frame_shape
        self.encoder = ConvEncoder(c, (h, w))
        self.to_stats = nn.Linear(self.encoder.out_size, 2 * latent)
        self.map_hw = (h // 16, w // 16)
        self.from_latent = nn.Linear(latent, 64 * self.map_hw[0] * self.map_hw[1])
        layers: list[nn.Module] = []
        for cin, cout in ((64, 32), (32, 16), (16, 8)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.ConvTranspose2d(8, c, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*layers)

    def stats(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.to_stats(self.encoder(frame)).chunk(2, 1)
        return mean, log_std.clamp(-10, 2)

    def forward(self, frame: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction logits... as [0, 1] means, posterior mean, posterior log std)."""
        mean, log_std = self.stats(frame)
        z = mean + log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)
        x = self.from_latent(z).view(-1, 64, *self.map_hw)
        out = self.decoder(x)
        if out.shape[2:] != frame.shape[2:]:
            out = nn.functional.interpolate(out, size=frame.shape[2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out), mean, log_std
