"""Writing frames as an animated GIF (evaluation videos, PlaNet's open-loop predictions).

GIF because it plays in a browser, a notebook and TensorBoard's file view without a codec;
written to a temporary name and renamed, so that a killed run never leaves half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write uint8 frames (T, H, W) or (T, H, W, 3) to ``path`` as a looping GIF."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(f"a video is a non-empty uint8 array (T, H, W[, 3]), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    imageio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """Videos of one length (T, H, W, C) placed left to right with a white gap."""
    t, h, _, c = videos[0].shape
    bar = np.full((t, h, gap, c), 255, np.uint8)
    parts = []
    for i, v in enumerate(videos):
        parts += [v] if i == 0 else [bar, v]
    return np.concatenate(parts, 2)
