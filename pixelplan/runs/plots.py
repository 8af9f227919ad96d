"""Figures: a run's learning curve and goal-versus-achieved image strip, and the
across-runs evaluation curves of ``pixelplan table``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def is_rate(metric: str) -> bool:
    """A rate (``success_rate``, ``optimal_rate``, ...) lies in [0, 1]; other metrics need not."""
    return metric.endswith("_rate")


def metric_label(metric: str) -> str:
    """A metric's name for an axis or legend: ``mean_return`` -> ``mean return``."""
    return metric.replace("_", " ")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def learning_curve(records: list[dict], path: Path, title: str = "", metric: str | None = None,
                   x: str = "steps") -> None:
    """An evaluation metric against env steps (``x="steps"``) or training episodes
    (``x="episodes"``, PlaNet's axis; evaluation records carry the episode count), from
    ``metrics.jsonl`` records.

    ``metric`` None: the success rate (and the optimal rate, where every evaluation has it)
    when the evaluations report one (goal tasks), else the mean return (reward tasks); no
    figure when they report neither, or when there was no evaluation. A named ``metric``
    that no evaluation reports is a ``ValueError``. The y axis is [0, 1] for rates only.
    """
    if x not in ("steps", "episodes"):
        raise ValueError(f"x must be 'steps' or 'episodes', got {x!r}")
    evals = [r for r in records if r.get("kind") == "eval"]
    if x == "episodes":
        evals = [r for r in evals if _number(r.get("episodes"))]
    if not evals:
        return
    if metric is None:
        metric = next((m for m in ("success_rate", "mean_return") if any(_number(r.get(m)) for r in evals)), None)
        if metric is None:
            return
        shown = [metric]
        if metric == "success_rate" and all(_number(r.get("optimal_rate")) for r in evals):
            shown.append("optimal_rate")
    else:
        if not any(_number(r.get(metric)) for r in evals):
            raise ValueError(f"no evaluation record has {metric!r}; cannot plot it")
        shown = [metric]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, marker in zip(shown, "os"):
        points = [(r["step" if x == "steps" else "episodes"], r[name]) for r in evals if _number(r.get(name))]
        ax.plot(*zip(*points), marker=marker, label=metric_label(name))
    ax.set_xlabel("env steps" if x == "steps" else "training episodes")
    if all(name in ("success_rate", "optimal_rate") for name in shown):
        ax.set_ylabel("fraction of evaluation goals")
    else:
        ax.set_ylabel(f"eval {metric_label(metric)}")
    if all(is_rate(name) for name in shown):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def eval_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path,
                title: str = "", labels: list[str] | None = None, metric: str = "success_rate") -> None:
    """An evaluation metric against env steps, one line per label, in the order given.

    ``curves`` maps a label (an agent) to ``(steps, mean, std)``; the band is mean +- std,
    clipped to [0, 1] for a rate (and the y axis is [0, 1]). ``labels``, when given, fixes
    each label's colour by its position in it, so one agent keeps its colour across figures
    that miss some agents.
    """
    rate = is_rate(metric)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(labels) if labels is not None else list(curves)
    for label, (steps, mean, std) in curves.items():
        i = labels.index(label) if label in labels else len(labels) + list(curves).index(label)
        colour = colours[i % len(colours)]
        steps, mean, std = (np.asarray(a, dtype=float) for a in (steps, mean, std))
        low, high = mean - std, mean + std
        if rate:
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        ax.plot(steps, mean, marker="o", markersize=3, color=colour, label=label)
        ax.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval {metric_label(metric)}")
    if rate:
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


def distance_heatmaps(maps: dict[str, np.ndarray], xs: np.ndarray, ys: np.ndarray, goal_xy, goal_frame: np.ndarray,
                      path: Path, title: str = "") -> None:
    """MBOLD's figure 6: the goal image, then one heatmap per distance of the distance from the
    frames with an object at each grid position (``maps[name]`` of shape (len(ys), len(xs)))
    to that goal; each map is min-max normalised, and the goal's position is marked."""
    plt = _pyplot()
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2))
    axes[0].imshow(goal_frame)
    axes[0].set_title("goal")
    axes[0].axis("off")
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    for ax, (name, values) in zip(axes[1:], maps.items()):
        v = np.asarray(values, dtype=np.float64)
        span = v.max() - v.min()
        ax.imshow((v - v.min()) / (span if span > 0 else 1.0), origin="lower", extent=extent, cmap="viridis")
        ax.plot([goal_xy[0]], [goal_xy[1]], marker="*", color="red", markersize=12)
        ax.set_title(name)
        ax.set_xlabel("object x (m)")
    axes[1].set_ylabel("object y (m)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
