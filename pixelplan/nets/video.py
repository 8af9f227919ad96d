"""An action-conditioned video prediction model: MBOLD's dynamics model (docs/mbold.md).

MBOLD plans with "a convolutional video prediction model adapted from SAVP" (Lee et al. 2018),
in its deterministic variant. This is our own, smaller model in that spirit, sized so that a
2-core CPU can plan with it (CEM asks for 200 candidates x 13 steps x 3 iterations per plan):

* a conv encoder takes an observed frame to a 1/8-size feature map (three stride-2 convs:
  8 x 8 for MBOLD's 64 x 64 frames);
* a convolutional LSTM at 8 x 8 carries the model's memory from step to step; its input is the
  encoded frame where one is observed (the context frames) and zeros after, with the action
  a_t tiled over the map at every step;
* a decoder reads the LSTM's map with skip connections from the last observed frame's encoder
  features, up to half resolution, and emits per pixel a flow (dx, dy), a generated RGB image
  and three compositing masks (softmax), upsampled bilinearly to full size;
* the predicted frame composites three candidates, as SAVP's does: the last observed frame
  warped by the flow (bilinear, ``grid_sample``), the first context frame (what is static stays
  exactly as it was), and the generated image (what appears from behind the arm).

**Where it departs from SAVP (and why).** After the context, SAVP feeds each predicted frame
back through its encoder; here the rollout stays in the LSTM's latent map and each prediction
is decoded from it, warping the last observed frame by the motion accumulated since. A plan
then costs 13 LSTM steps and one decode per candidate (the planners score the final frame
only), about 10x less than re-encoding and decoding every step at full size, which is what
makes CEM affordable on a CPU. Training unrolls exactly as planning does, so SAVP's scheduled
sampling (which fights the gap between teacher-forced training and free-running prediction)
has nothing to do here and is not used. Frames are float in [0, 1], channels first.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvLSTMCell", "VideoModel"]


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: the four gates are one 3 x 3 convolution of [input, h]."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        # forget gate bias 1: start by remembering (the usual LSTM initialisation)
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden:2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(1, cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(1, cout),
                         nn.LeakyReLU(0.2))



class VideoModel(nn.Module):
    """Predicts frames from observed context frames and actions (see the module doc).

    ``width`` is the first conv's channels (then 2x, 2x); ``hidden`` the conv-LSTM's.
    Frames must have a height and width divisible by 8.
    """

    N_CANDIDATES = 3    # warped last observed frame, first context frame, generated image

    def __init__(self, action_dim: int, channels: int = 3, width: int = 16, hidden: int = 32,
                 max_flow: float = 0.5):
        super().__init__()
        self.action_dim, self.channels, self.max_flow, self.hidden = action_dim, channels, max_flow, hidden
        w = width
        self.enc1, self.enc2, self.enc3 = _down(channels, w), _down(w, 2 * w), _down(2 * w, 2 * w)
        self.feature_channels = 2 * w
        self.lstm = ConvLSTMCell(2 * w + action_dim + 1, hidden)
        self.dec3 = _up(hidden + 2 * w, 2 * w)              # 1/8 -> 1/4
        self.dec2 = _up(2 * w + 2 * w, w)                   # 1/4 -> 1/2
        self.head = nn.Conv2d(w + w, 2 + channels + self.N_CANDIDATES, 3, padding=1)
        with torch.no_grad():                               # start from "no motion"
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def encode(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder's three maps of ``frame`` (B, C, H, W) in [0, 1]."""
        e1 = self.enc1(frame)
        e2 = self.enc2(e1)
        return e1, e2, self.enc3(e2)

    def advance(self, features: torch.Tensor | None, action: torch.Tensor, state, batch: int):
        """One LSTM step: ``features`` an observed frame's encoding (None after the context)."""
        if features is None:
            features = action.new_zeros(batch, self.feature_channels, *state[0].shape[2:])
            seen = 0.0
        else:
            seen = 1.0
        size = features.shape[2:]
        tiled = action[:, :, None, None].to(features.dtype).expand(batch, self.action_dim, *size)
        flag = features.new_full((batch, 1, *size), seen)
        _, state = self.lstm(torch.cat([features, tiled, flag], 1), state)
        return state

    def decode(self, state, skips: tuple[torch.Tensor, ...], last: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """The frame the LSTM's ``state`` predicts, by warping ``last`` (the last observed frame,
        whose encoder maps are ``skips``) and compositing with ``first`` and a generated image."""
        e1, e2, e3 = skips
        b, _, hgt, wid = last.shape
        d = self.dec3(torch.cat([state[0], e3], 1))
        d = self.dec2(torch.cat([d, e2], 1))
        out = self.head(torch.cat([d, e1], 1)).float()
        out = F.interpolate(out, size=(hgt, wid), mode="bilinear", align_corners=False)
        flow = torch.tanh(out[:, :2]) * self.max_flow                 # in grid units (2 = the whole frame)
        generated = torch.sigmoid(out[:, 2:2 + self.channels])
        masks = torch.softmax(out[:, 2 + self.channels:], 1)
        warped = F.grid_sample(last.float(), _identity_grid(b, hgt, wid, last.device) + flow.permute(0, 2, 3, 1),
                               mode="bilinear", padding_mode="border", align_corners=False)
        return masks[:, :1] * warped + masks[:, 1:2] * first.float() + masks[:, 2:3] * generated

    def rollout(self, context_frames: torch.Tensor, actions: torch.Tensor, keep: str = "all") -> torch.Tensor:
        """Predict from ``context_frames`` (B, c, C, H, W) in [0, 1] and ``actions`` (B, c - 1 + H, A):
        the first c - 1 actions are those taken between the context frames, the other H the ones
        to predict. ``keep="all"`` returns the predictions of the H frames after the context
        (B, H, C, H, W); ``"last"`` only the final one (B, C, H, W), all that a planner scoring
        the last frame needs; ``"train"`` every step's prediction, the context steps' included
        (B, c - 1 + H, C, H, W): frames 1.. of the window."""
        b, c = context_frames.shape[:2]
        steps = actions.shape[1]
        if steps < c:
            raise ValueError(f"{c} context frames need at least {c} actions ({c - 1} between them and one "
                             f"to predict), got {steps}")
        first, state = context_frames[:, 0], None
        observed = [self.encode(context_frames[:, t]) for t in range(c)]    # encoder maps per context frame
        kept: list[tuple[torch.Tensor, int]] = []                           # (LSTM output, frame it warps)
        for t in range(steps):
            state = self.advance(observed[t][2] if t < c else None, actions[:, t], state, b)
            if keep == "train" or (keep == "all" and t >= c - 1):
                kept.append((state[0], min(t, c - 1)))
        if keep == "last":
            return self.decode(state, observed[c - 1], context_frames[:, c - 1], first)
        # Decoding reads only the LSTM's output and the frames, never an earlier prediction, so
        # every kept step is decoded in one batched call (fewer, larger convolutions).
        n = len(kept)
        hidden = torch.cat([h for h, _ in kept])
        index = [j for _, j in kept]
        skips = tuple(torch.cat([observed[j][level] for j in index]) for level in range(3))
        last = torch.cat([context_frames[:, j] for j in index])
        pred = self.decode((hidden,), skips, last, first.repeat(n, 1, 1, 1))
        return pred.view(n, b, *pred.shape[1:]).transpose(0, 1)

def _identity_grid(b: int, h: int, w: int, device) -> torch.Tensor:
    """The sampling grid of no motion, (B, H, W, 2) in grid_sample's [-1, 1] coordinates."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)        # (H, W, 2) as (x, y)
    return grid.unsqueeze(0).expand(b, h, w, 2)
