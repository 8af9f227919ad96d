"""Convolutional frame encoders.

Two encoders share one constructor, ``make_encoder``:

* ``ImpalaEncoder``: the IMPALA "large" network (Espeholt et al. 2018) as the GLAMOR
  paper uses it, with GroupNorm. Three stages of 16, 32, 32 channels; each stage is
  conv3x3 -> maxpool(3, stride 2) -> GroupNorm(4) -> ReLU -> two residual blocks. For
  104x80 input the flattened feature map is 32 x 12 x 9 = 3456.
* ``SmallEncoder``: a three-layer conv net for small frames (the grid world's 27x27).
  Three stride-2 max-pools would shrink such a frame to a few pixels and waste the
  IMPALA net's compute, so ``kind="auto"`` picks this one below 64 px.

Input is uint8 or float in [0, 255], shape (B, C, H, W); scaling to [0, 1] happens here,
on the training device, so the replay can hold uint8.

Speed (the planner encodes one state and one goal per decision, so batch-1 latency matters):

* The conv trunk runs in channels_last memory format, about 1.5x faster on the CPU (and
  the layout GPUs prefer). Parameters keep their logical shapes, so checkpoints do not care.
* PyTorch sends a batch-1 3x3 convolution whose input has at most 20480 elements to its
  generic kernel rather than oneDNN; on our 2-core CPU that is 2-3x slower for the IMPALA
  net's 32x25x19 maps. ``_Conv2d`` calls oneDNN directly for batch-1 CPU inputs of at least
  16x16 pixels (below that the generic kernel is faster). Larger batches already use oneDNN.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

EncoderKind = Literal["auto", "impala", "small"]

# Frames whose smaller side is below this many pixels get the small encoder under "auto".
IMPALA_MIN_PIXELS = 64


# Batch-1 CPU convolutions on maps with at least this many pixels go straight to oneDNN.
_ONEDNN_MIN_PIXELS = 256


class _Conv2d(nn.Conv2d):
    """nn.Conv2d that sends batch-1 CPU float32 inputs to oneDNN (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32
                and x.shape[-1] * x.shape[-2] >= _ONEDNN_MIN_PIXELS and _onednn_available()
                and isinstance(self.padding, tuple)):
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super().forward(x)


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


class _GroupNorm(nn.GroupNorm):
    """GroupNorm that keeps bf16 maps in bf16 but computes their backward in fp32.

    Under bf16 autocast the convolutions hand it bf16 maps. Its forward runs on them directly
    (PyTorch accumulates the statistics in fp32) and returns bf16, so the ReLUs, pools and
    residual adds around it move half the bytes; its backward casts to fp32 and uses the fp32
    kernel, because on this CPU PyTorch's bf16 GroupNorm backward on channels_last maps is
    4-5x slower than the fp32 one (and the gradient wants the precision). fp32 maps take the
    plain path, so fp32 encoders compute exactly what ``nn.GroupNorm`` does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return _LowPrecisionGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)


class _LowPrecisionGroupNorm(torch.autograd.Function):
    """GroupNorm of a bf16 (or fp16) map: forward in its dtype, backward in fp32."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        n, c = x.shape[:2]
        hw = x.numel() // max(1, n * c)
        out, mean, rstd = torch.native_group_norm(x, weight.to(x.dtype), bias.to(x.dtype), n, c, hw, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.sizes = (n, c, hw, groups)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, hw, groups = ctx.sizes
        grad_x, grad_w, grad_b = torch.ops.aten.native_group_norm_backward(
            grad.float(), x.float(), mean.float(), rstd.float(), weight, n, c, hw, groups, [True, True, True])
        return grad_x.to(x.dtype), grad_w, grad_b, None, None


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = _Conv2d(channels, channels, 3, padding=1)
        self.norm1 = _GroupNorm(groups, channels)
        self.conv2 = _Conv2d(channels, channels, 3, padding=1)
        self.norm2 = _GroupNorm(groups, channels)
        # Zero scale on the last norm: the block starts as the identity, which keeps the
        # early gradient flow of a deep residual stack clean.
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(y)))


class _ConvEncoder(nn.Module):
    """A conv trunk, flattened, then a linear map to the code; scales uint8 input to [0, 1].

    ``compute_dtype`` (None = fp32; set by :func:`set_precision`) runs the trunk's convolutions
    under autocast in that dtype; normalisation, the final linear map and the output stay fp32.
    """

    compute_dtype: torch.dtype | None = None

    def _finish(self, conv: nn.Module, in_channels: int, frame_hw: tuple[int, int], out_dim: int) -> None:
        self.conv = conv.to(memory_format=torch.channels_last)
        self.flat_size = _flat_size(conv, in_channels, frame_hw)
        self.fc = nn.Linear(self.flat_size, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x / 255.0
        x = x.contiguous(memory_format=torch.channels_last)
        if self.compute_dtype is None:
            features = self.conv(x)
        else:
            with torch.autocast(x.device.type, dtype=self.compute_dtype):
                features = self.conv(x)
        # flatten(1) follows the logical (C, H, W) order whatever the memory format.
        return self.fc(features.float().flatten(1))


class ImpalaEncoder(_ConvEncoder):
    def __init__(self, in_channels: int, frame_hw: tuple[int, int], out_dim: int,
                 channels: tuple[int, ...] = (16, 32, 32), groups: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [_Conv2d(c_in, c, 3, padding=1), nn.MaxPool2d(3, stride=2),
                       _GroupNorm(groups, c), nn.ReLU(),
                       _ResidualBlock(c, groups), _ResidualBlock(c, groups)]
            c_in = c
        self._finish(nn.Sequential(*layers), in_channels, frame_hw, out_dim)


class SmallEncoder(_ConvEncoder):
    """Two stride-2 convs and one stride-1 conv: 27x27 -> 6x6x32, about 0.6M MACs a frame."""

    def __init__(self, in_channels: int, frame_hw: tuple[int, int], out_dim: int,
                 channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self._finish(nn.Sequential(
            _Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU(),
            _Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            _Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
        ), in_channels, frame_hw, out_dim)


def _flat_size(conv: nn.Module, in_channels: int, frame_hw: tuple[int, int]) -> int:
    with torch.no_grad():
        return int(conv(torch.zeros(1, in_channels, *frame_hw)).numel())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX (elsewhere bf16 is emulated, and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return precision


def set_precision(module: nn.Module, precision: str, device: torch.device) -> str:
    """Set the arithmetic of every IMPALA encoder in ``module`` (the small encoder stays fp32:
    on 27x27 frames bf16 saves nothing worth the rounding). Returns the resolved precision."""
    resolved = resolve_precision(precision, device)
    for m in module.modules():
        if isinstance(m, ImpalaEncoder):
            m.compute_dtype = torch.bfloat16 if resolved == "bf16" else None
    return resolved


def make_encoder(kind: EncoderKind, in_channels: int, frame_hw: tuple[int, int],
                 out_dim: int) -> nn.Module:
    """Build an encoder; ``auto`` picks IMPALA for frames of 64 px and up, else the small net."""
    if kind == "auto":
        kind = "impala" if min(frame_hw) >= IMPALA_MIN_PIXELS else "small"
    if kind == "impala":
        if min(frame_hw) < 16:
            raise ValueError(f"the IMPALA encoder needs frames of at least 16x16 pixels, got "
                             f"{frame_hw}; use encoder='small'")
        return ImpalaEncoder(in_channels, frame_hw, out_dim)
    if kind == "small":
        return SmallEncoder(in_channels, frame_hw, out_dim)
    raise ValueError(f"unknown encoder kind {kind!r}: choose 'auto', 'impala' or 'small'")
