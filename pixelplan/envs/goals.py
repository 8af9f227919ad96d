"""Generic goal-set helpers: picking a diverse evaluation set, saving and loading goals."""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from .core import Goal, GoalSpec, as_rng

__all__ = ["diverse_goals", "save_goals", "load_goals"]


def _nearest_excluding(points: np.ndarray, x: np.ndarray, skip: int) -> float:
    d = np.sqrt(((points - x) ** 2).sum(axis=1))
    d[skip] = np.inf
    return float(d.min())


def diverse_goals(
    candidates: Sequence[Goal],
    n: int,
    spec: GoalSpec,
    rng: np.random.Generator | int | None = None,
) -> list[Goal]:
    """Pick ``n`` well-spread goals from ``candidates`` (DISCERN-style greedy max-min).

    Distances are Euclidean in range-normalised feature space
    (:meth:`GoalSpec.normalise`). The set starts as the first ``n`` candidates;
    each further candidate, in order, is compared with one incumbent chosen
    uniformly at random: the candidate replaces it when the candidate's
    distance to its nearest *other* incumbent is larger than the incumbent's
    own nearest-neighbour distance in the set. One streaming pass, so the
    result depends on the candidates' order and on ``rng``; it is
    deterministic given both. With ``n >= len(candidates)`` all candidates are
    returned.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    candidates = list(candidates)
    if len(candidates) <= n:
        return candidates
    rng = as_rng(rng)
    chosen = candidates[:n]
    pts = np.stack([spec.normalise(g.features) for g in chosen])
    if n == 1:
        return chosen  # no neighbours to compare with
    for cand in candidates[n:]:
        x = spec.normalise(cand.features)
        j = int(rng.integers(n))
        if _nearest_excluding(pts, x, j) > _nearest_excluding(pts, pts[j], j):
            chosen[j] = cand
            pts[j] = x
    return chosen


def _npz_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def save_goals(path: str | os.PathLike, goals: Sequence[Goal], spec: GoalSpec) -> str:
    """Save goals and their spec to a compressed ``.npz`` (``.npz`` appended if missing).

    Arrays: ``frames`` (N, *frame_shape) uint8, ``features`` (N, D) float64,
    ``spec`` (the spec as a JSON string). Returns the path written.
    """
    goals = list(goals)
    if not goals:
        raise ValueError("save_goals needs at least one goal")
    shapes = {g.frame.shape for g in goals}
    if len(shapes) != 1:
        raise ValueError(f"all goal frames must have the same shape, got {sorted(shapes)}")
    feats = np.stack([g.features for g in goals])
    if feats.shape[1] != spec.dim:
        raise ValueError(f"goals have {feats.shape[1]} features, spec has {spec.dim}")
    out = _npz_path(path)
    np.savez_compressed(
        out,
        frames=np.stack([g.frame for g in goals]),
        features=feats,
        spec=np.array(json.dumps(spec.to_dict())),
    )
    return out


def load_goals(path: str | os.PathLike) -> tuple[list[Goal], GoalSpec]:
    """Load what :func:`save_goals` wrote: ``(goals, spec)``."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    with np.load(path, allow_pickle=False) as data:
        missing = {"frames", "features", "spec"} - set(data.files)
        if missing:
            raise ValueError(f"{path} is not a goal file (missing {sorted(missing)})")
        spec = GoalSpec.from_dict(json.loads(str(data["spec"])))
        goals = [Goal(f, x) for f, x in zip(data["frames"], data["features"])]
    return goals, spec
