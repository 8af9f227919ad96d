"""How well a learned distance orders frames by the true distance to a goal: one number per
run beside figure 6's heatmap (``pixelplan distances``; docs/mbold.md, "Checking a distance").

For each test task (a goal frame, the env's features of the goal and the mask of the features
that decide success), a pool of dataset frames is ranked twice: by the true distance (the
Euclidean distance of the relevant features to the goal's, the quantity success is judged on)
and by the run's learned distance to the goal frame. Their Spearman rank correlation, averaged
over the tasks, is 1 for a distance that orders the frames as the truth does, 0 for one that
is unrelated to it and -1 for one that has it backwards. The pixel MSE is ranked the same way,
as the reference that any learned distance has to beat.

A planner never scores real frames: MBOLD and Visual Foresight score the video model's
prediction of a plan's last frame. So, for a run with a video model, the check is made twice
on the same pool: on the true last frames of dataset windows, and on the model's open-loop
predictions of those frames (from each window's context frames and its actions). The drop
between the two is what the predictions' errors cost the distance; the rise of a learned
distance above the pixel MSE is what learning it bought.

A pool of dataset frames mixes frames near a goal with far ones. CEM compares something
narrower: the futures of one start state under random action sequences. So the check is also
made *from the tasks' starts* (:func:`futures_from_starts`, :func:`ranking_from_starts`): for
each task, the env is reset to its start state and runs a number of random action sequences of
the dataset's own policy (the distribution of CEM's first iteration, whose std is the
collection std). Their final frames, real and predicted, are ranked against the goal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["rank_correlation", "true_distances", "Windows", "sample_windows", "distance_ranking",
           "futures_from_starts", "ranking_from_starts"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x``, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays (ties get their mean rank);
    NaN when either is constant, where no order exists to agree with."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"rank_correlation needs two arrays of one length >= 2, got {x.shape} and {y.shape}")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / norm) if norm > 0 else float("nan")


def true_distances(tasks, features: np.ndarray) -> np.ndarray:
    """(tasks, frames): each task's distance from each frame's features (GoalTask.distance)."""
    f = np.asarray(features, np.float64)
    return np.stack([np.linalg.norm((f - t.features) * t.relevant, axis=1) for t in tasks])


def _mean_correlation(learned: np.ndarray, truth: np.ndarray) -> float:
    """Mean over tasks (rows) of the rank correlation, skipping tasks whose truth is constant."""
    values = [rank_correlation(a, b) for a, b in zip(learned, truth)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class Windows:
    """Dataset windows of ``length`` frames: their frames (N, L, H, W, C), the actions between
    them (N, L - 1, *action_shape) and the env's features of their last frame (N, F)."""

    frames: np.ndarray
    actions: np.ndarray
    last_features: np.ndarray


def sample_windows(episodes, count: int, length: int, rng: np.random.Generator) -> Windows:
    """``count`` windows, each from a random episode (of at least ``length`` frames, with
    features) at a random start."""
    usable = [e for e in episodes if e.features is not None and len(e.frames) >= length]
    if not usable:
        raise ValueError(f"no episode of the dataset has features and {length} frames; the check needs the env's "
                         f"features stored beside the frames (pixelplan collect stores them)")
    frames, actions, features = [], [], []
    for i in rng.integers(0, len(usable), count):
        e = usable[int(i)]
        t = int(rng.integers(0, len(e.frames) - length + 1))
        frames.append(e.frames[t:t + length])
        actions.append(e.actions[t:t + length - 1])
        features.append(e.features[t + length - 1])
    return Windows(np.stack(frames), np.stack(actions), np.stack(features))


def distance_ranking(agents: dict, tasks, windows: Windows, chunk: int = 64) -> dict[str, dict[str, float]]:
    """The mean rank correlation with the true distance, per run (``agents``: label -> an agent
    with ``distance(frames, goal)``, larger = farther) and for the pixel MSE: on the windows'
    true last frames (``true_frames``) and, for an agent with a video model
    (``uses_video``, ``predict_windows`` and ``prediction_window``, the frames a plan spans), on
    its open-loop predictions of them (``predicted_frames``, and the
    pixel MSE on those predictions, ``pixel_mse_predicted``)."""
    truth = true_distances(tasks, windows.last_features)
    last = windows.frames[:, -1]

    def pixel(frames):
        x = frames.astype(np.float32).reshape(len(frames), -1)
        return np.stack([((x - t.frame.astype(np.float32).reshape(1, -1)) ** 2).mean(1) for t in tasks])

    def learned(agent, frames):
        return np.stack([agent.distance(frames, t.frame) for t in tasks])

    out = {"pixel MSE": {"true_frames": _mean_correlation(pixel(last), truth)}}
    for label, agent in agents.items():
        record = {"true_frames": _mean_correlation(learned(agent, last), truth)}
        if getattr(agent, "uses_video", False):
            w = min(int(agent.prediction_window), windows.frames.shape[1])
            predicted = np.concatenate([
                agent.predict_windows(windows.frames[lo:lo + chunk, -w:], windows.actions[lo:lo + chunk, -(w - 1):])[:, -1]
                for lo in range(0, len(last), chunk)])
            record["predicted_frames"] = _mean_correlation(learned(agent, predicted), truth)
            record["pixel_mse_predicted"] = _mean_correlation(pixel(predicted), truth)
            record["prediction_mse"] = float(np.mean(((predicted.astype(np.float32) - last) / 255.0) ** 2))
        out[label] = record
    return out


def futures_from_starts(env, tasks, count: int, steps: int, pad: int, sample_actions: Callable,
                        rng: np.random.Generator) -> list[Windows]:
    """For each task, ``count`` futures of ``steps`` actions from its start state (``env`` is an
    unwrapped goal env that resets to ``options={"state": ...}`` and reports
    ``info["features"]``). Each window is the start frame ``pad`` times (zero actions between:
    a stack at an episode's first step), then the ``steps`` frames the actions led to; its last
    features are the final frame's. ``sample_actions(rng, steps)`` gives one (steps, A) sequence."""
    out = []
    for task in tasks:
        frames, actions, features = [], [], []
        for _ in range(count):
            first, info = env.reset(options={"state": task.start_state})
            seq = np.asarray(sample_actions(rng, steps), np.float32)
            seen = [first] * pad
            for a in seq:
                frame, _, _, _, info = env.step(a.reshape(env.action_space.shape))
                seen.append(frame)
            frames.append(np.stack(seen))
            actions.append(np.concatenate([np.zeros((pad - 1, *seq.shape[1:]), np.float32), seq]))
            features.append(np.asarray(info["features"], np.float64))
        out.append(Windows(np.stack(frames), np.stack(actions), np.stack(features)))
    return out


def ranking_from_starts(agents: dict, tasks, futures: list[Windows]) -> dict[str, dict[str, float]]:
    """:func:`distance_ranking` of each task against its own futures (``futures[i]`` for
    ``tasks[i]``), averaged over the tasks where the truth has an order (NaN skipped)."""
    per_task = [distance_ranking(agents, [task], windows) for task, windows in zip(tasks, futures)]
    out: dict[str, dict[str, float]] = {}
    for label, first in per_task[0].items():
        out[label] = {}
        for key in first:
            values = np.array([r[label][key] for r in per_task], np.float64)
            values = values[np.isfinite(values)]
            out[label][key] = float(values.mean()) if len(values) else float("nan")
    return out
