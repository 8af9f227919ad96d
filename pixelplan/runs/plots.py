"""Figures: a run's learning curve and goal-versus-achieved image strip, and the
across-runs success curves of ``pixelplan table``."""

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


def success_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path,
                   title: str = "", labels: list[str] | None = None) -> None:
    """Evaluation success rate against env steps, one line per label, in the order given.

    ``curves`` maps a label (an agent) to ``(steps, mean, std)``; the band is mean +- std,
    clipped to [0, 1]. ``labels``, when given, fixes each label's colour by its position in
    it, so one agent keeps its colour across figures that miss some agents.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(labels) if labels is not None else list(curves)
    for label, (steps, mean, std) in curves.items():
        i = labels.index(label) if label in labels else len(labels) + list(curves).index(label)
        colour = colours[i % len(colours)]
        steps, mean, std = (np.asarray(a, dtype=float) for a in (steps, mean, std))
        ax.plot(steps, mean, marker="o", markersize=3, color=colour, label=label)
        ax.fill_between(steps, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=colour,
                        alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="best")
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


def goal_grid(frames: np.ndarray, path: Path, columns: int = 10, scale: int = 2) -> None:
    """Frames as an image grid in reading order (``pixelplan goals``), one grey border each."""
    import imageio.v3 as iio
    frames = np.asarray(frames)
    if len(frames) == 0:
        raise ValueError("goal_grid needs at least one frame")
    columns = max(1, min(columns, len(frames)))
    tiles = [_pad(_gray_to_rgb(f), (90, 90, 90)) for f in frames]
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
    iio.imwrite(path, np.concatenate(rows, 0).repeat(scale, 0).repeat(scale, 1))
