"""Figures of a run: the learning curve and the goal-versus-achieved image strip."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def learning_curve(records: list[dict], path: Path, title: str = "") -> None:
    """Evaluation success (and optimal) rate against env steps."""
    evals = [r for r in records if r["kind"] == "eval"]
    if not evals:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [r["step"] for r in evals]
    ax.plot(steps, [r["success_rate"] for r in evals], marker="o", label="success rate")
    if all("optimal_rate" in r for r in evals):
        ax.plot(steps, [r["optimal_rate"] for r in evals], marker="s", label="optimal rate")
    ax.set_xlabel("env steps")
    ax.set_ylabel("fraction of evaluation goals")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def goal_strip(goal_frames: np.ndarray, final_frames: np.ndarray, success: np.ndarray, path: Path,
               max_goals: int = 16, scale: int = 3) -> None:
    """Top row: goal frames; bottom row: the frame the agent ended on, framed white if achieved."""
    import imageio.v3 as iio
    n = min(max_goals, len(goal_frames))
    tiles_top, tiles_bottom = [], []
    for i in range(n):
        g, f = _gray_to_rgb(goal_frames[i]), _gray_to_rgb(final_frames[i])
        border = (255, 255, 255) if success[i] else (200, 40, 40)
        tiles_top.append(_pad(g, (90, 90, 90)))
        tiles_bottom.append(_pad(f, border))
    strip = np.concatenate([np.concatenate(tiles_top, 1), np.concatenate(tiles_bottom, 1)], 0)
    strip = strip.repeat(scale, 0).repeat(scale, 1)
    iio.imwrite(path, strip)


def _gray_to_rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame[..., None], 3, -1) if frame.ndim == 2 else frame


def _pad(tile: np.ndarray, colour) -> np.ndarray:
    out = np.empty((tile.shape[0] + 2, tile.shape[1] + 2, 3), np.uint8)
    out[:] = colour
    out[1:-1, 1:-1] = tile
    return out
