"""Goal sets: picking a diverse evaluation set, estimating feature ranges, building, caching,
saving and loading goals. Shared by every env suite (DM Control, Atari, ...)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np

from .core import Goal, GoalSpec, GoalTask, as_rng, random_action

__all__ = ["diverse_goals", "save_goals", "load_goals", "GoalSets", "estimate_ranges", "build_goal_sets",
           "pick_evaluation_goals", "distinct_goals", "cached_goal_sets", "default_cache_dir", "FixedGoalSets",
           "automatic_evaluation_goals", "env_fingerprint", "save_tasks", "load_tasks", "cached_tasks"]


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


def _existing_npz(path: str | os.PathLike) -> str:
    """``path``, or ``path + ".npz"`` when only that exists (numpy adds the suffix on save)."""
    path = os.fspath(path)
    return path + ".npz" if not os.path.exists(path) and os.path.exists(path + ".npz") else path


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
    path = _existing_npz(path)
    with np.load(path, allow_pickle=False) as data:
        missing = {"frames", "features", "spec"} - set(data.files)
        if missing:
            raise ValueError(f"{path} is not a goal file (missing {sorted(missing)})")
        spec = GoalSpec.from_dict(json.loads(str(data["spec"])))
        goals = [Goal(f, x) for f, x in zip(data["frames"], data["features"])]
    return goals, spec


# ---------------------------------------------------------------------- goal sets
#: bump when the way goal sets are built changes, so stale caches are rebuilt
GOAL_SET_FORMAT = 1


@dataclass(frozen=True)
class GoalSets:
    """What an env's evaluation protocol needs: the feature ranges and two fixed goal sets.

    ``spec`` has feasible ranges estimated from random rollouts; ``evaluation`` is the
    fixed, diverse set every agent is evaluated on; ``training`` the goals that collection
    draws from. ``meta`` records how they were built (seed, counts, versions).
    """

    spec: GoalSpec
    evaluation: list
    training: list
    meta: dict


def estimate_ranges(env, rollouts: int, rng: np.random.Generator | int | None,
                    names: Sequence[str], tolerance_fraction: float = 0.1) -> GoalSpec:
    """Feasible feature ranges: min..max over the final states of random-policy rollouts.

    Each rollout starts from ``reset`` and lasts ``L ~ Uniform{1..T}`` uniform-random
    actions (the GLAMOR authors' recipe); the tolerance is ``tolerance_fraction`` of each
    range (ranges under 1e-2 count as 1). ``env`` must provide ``random_rollout``.
    """
    if rollouts < 2:
        raise ValueError(f"estimating ranges needs at least 2 rollouts, got {rollouts}")
    rng = as_rng(rng)
    feats = np.stack([env.random_rollout(rng, capture_frame=False).features for _ in range(rollouts)])
    return GoalSpec.from_ranges(names, feats.min(axis=0), feats.max(axis=0), tolerance_fraction)


def build_goal_sets(env, names: Sequence[str], seed: int = 0, n_evaluation: int = 30, n_training: int = 1000,
                    range_rollouts: int = 500, n_candidates: int | None = None,
                    tolerance_fraction: float = 0.1) -> GoalSets:
    """Build an env's goal sets, deterministically from ``seed``.

    1. Ranges from ``range_rollouts`` random rollouts (:func:`estimate_ranges`).
    2. ``n_training`` training goals: final states of random rollouts.
    3. ``n_evaluation`` evaluation goals: the greedy max-min pick (:func:`diverse_goals`, in
       range-normalised feature space) from ``n_candidates`` (default ``n_training``) further
       random final states, drawn independently of the training goals.

    ``env`` provides ``random_rollout(rng, capture_frame) -> Goal`` (see
    :meth:`pixelplan.envs.core.GoalEnv.random_rollout`). Each stage has its own stream
    ``np.random.default_rng([seed, stage])``.
    """
    for what, n in (("n_evaluation", n_evaluation), ("n_training", n_training)):
        if n < 1:
            raise ValueError(f"{what} must be >= 1, got {n}")
    n_candidates = n_training if n_candidates is None else n_candidates
    if n_candidates < n_evaluation:
        raise ValueError(f"n_candidates ({n_candidates}) must be >= n_evaluation ({n_evaluation})")
    spec = estimate_ranges(env, range_rollouts, np.random.default_rng([seed, 0]), names, tolerance_fraction)
    rng = np.random.default_rng([seed, 1])
    training = [env.random_rollout(rng, capture_frame=True) for _ in range(n_training)]
    evaluation = pick_evaluation_goals(env, spec, seed, n_evaluation, n_candidates)
    meta = {"format": GOAL_SET_FORMAT, "seed": int(seed), "n_evaluation": int(n_evaluation),
            "n_training": int(n_training), "range_rollouts": int(range_rollouts),
            "n_candidates": int(n_candidates), "tolerance_fraction": float(tolerance_fraction)}
    return GoalSets(spec, evaluation, training, meta)


def distinct_goals(goals: Sequence[Goal]) -> list[Goal]:
    """The first goal of each distinct feature vector, in their order.

    Success is judged on features alone, so two goals with equal features are one task;
    a small env (a few states) would otherwise fill its evaluation set with repeats.
    """
    seen: set[bytes] = set()
    out = []
    for goal in goals:
        key = goal.features.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(goal)
    return out


def pick_evaluation_goals(env, spec: GoalSpec, seed: int, n_evaluation: int, n_candidates: int,
                          distinct: bool = False) -> list[Goal]:
    """Evaluation goals: the greedy max-min pick (:func:`diverse_goals`) of ``n_evaluation``
    from ``n_candidates`` random final states (stream ``[seed, 2]``).

    With ``distinct=True`` candidates with equal features are dropped first, so an env with
    fewer distinct reachable states than ``n_evaluation`` gets one goal per state found.
    """
    rng = np.random.default_rng([seed, 2])
    candidates = [env.random_rollout(rng, capture_frame=True) for _ in range(n_candidates)]
    if distinct:
        candidates = distinct_goals(candidates)
    return diverse_goals(candidates, min(n_evaluation, len(candidates)), spec, rng)


def default_cache_dir() -> Path:
    """``$PIXELPLAN_CACHE`` if set, else ``~/.cache/pixelplan``."""
    root = os.environ.get("PIXELPLAN_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "pixelplan"


def _cache_file(key: dict, folder: str, infix: str, cache_dir) -> tuple[str, Path]:
    """The canonical JSON text of ``key`` and the cache file it names:
    ``<cache>/<folder>/<env>-<infix><hash of the text>.npz``."""
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(key.get("env", "env")))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return text, root / folder / f"{name}-{infix}{digest}.npz"


def cached_goal_sets(key: dict, build: Callable[[], GoalSets], cache_dir: str | os.PathLike | None = None,
                     ) -> tuple[GoalSets, Path]:
    """Load the goal sets that ``key`` identifies from the cache, or ``build()`` and store them.

    ``key`` is a JSON-serialisable dict of everything the sets depend on (env name and
    options, seed, counts, library versions); its hash names the file, and the file
    stores it so that a mismatch is detected. Writes are atomic, so processes building
    the same sets at once cannot leave a torn file.
    """
    key = {**key, "format": GOAL_SET_FORMAT}
    text, path = _cache_file(key, "goals", "", cache_dir)
    if path.exists():
        try:
            sets, stored_key = _load_sets(path)
            if stored_key == json.loads(text):
                return sets, path
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild below
    sets = build()
    if not sets.evaluation:
        raise ValueError(f"goal sets for {key.get('env')!r} have no evaluation goal")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    frame_shape, dim = sets.evaluation[0].frame.shape, sets.spec.dim

    def stack(goals: list, what: str, shape: tuple) -> np.ndarray:
        # An empty set (envs whose training goals are not cached) is stored as a 0-row array.
        arrays = [getattr(g, what) for g in goals]
        return np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8 if what == "frame" else np.float64)

    np.savez_compressed(
        tmp, key=np.array(text), spec=np.array(json.dumps(sets.spec.to_dict())), meta=np.array(json.dumps(sets.meta)),
        eval_frames=stack(sets.evaluation, "frame", frame_shape),
        eval_features=stack(sets.evaluation, "features", (dim,)),
        train_frames=stack(sets.training, "frame", frame_shape),
        train_features=stack(sets.training, "features", (dim,)))
    os.replace(tmp, path)
    return sets, path


def _load_sets(path: Path) -> tuple[GoalSets, dict]:
    with np.load(path, allow_pickle=False) as data:
        key = json.loads(str(data["key"]))
        spec = GoalSpec.from_dict(json.loads(str(data["spec"])))
        meta = json.loads(str(data["meta"]))
        evaluation = [Goal(f, x) for f, x in zip(data["eval_frames"], data["eval_features"])]
        training = [Goal(f, x) for f, x in zip(data["train_frames"], data["train_features"])]
    return GoalSets(spec, evaluation, training, meta), key


class FixedGoalSets:
    """Mixin for suite envs (DM Control, Atari) whose goals are fixed, cached goal sets.

    The env calls :meth:`_load_goal_sets` at the end of ``__init__``, once it can step;
    :meth:`evaluation_goals` and :meth:`training_goals` then serve the cached sets, so
    every run and every agent on the env sees the same goals.
    """

    name: str
    goal_sets: GoalSets
    goal_cache_path: Path

    def _load_goal_sets(self, key: dict, feature_names: Sequence[str], seed: int, n_evaluation: int,
                        n_training: int, range_rollouts: int, cache_dir: str | os.PathLike | None) -> None:
        # A provisional spec lets the builder step the env; the estimated ranges replace it.
        self.goal_spec = GoalSpec.from_ranges(feature_names, np.zeros(len(feature_names)),
                                              np.ones(len(feature_names)))
        key = {**key, "seed": int(seed), "n_eval": int(n_evaluation), "n_train": int(n_training),
               "range_rollouts": int(range_rollouts)}
        self.goal_sets, self.goal_cache_path = cached_goal_sets(
            key, lambda: build_goal_sets(self, feature_names, int(seed), int(n_evaluation), int(n_training),
                                         int(range_rollouts)), cache_dir)
        self.goal_spec = self.goal_sets.spec

    @property
    def n_training_goals(self) -> int:
        """All of the cached training goals (``n_train_goals``, 1000 by default)."""
        return len(self.goal_sets.training)

    def evaluation_goals(self) -> list[Goal]:
        """The env's fixed evaluation goals (30 by default), the same for every run."""
        return list(self.goal_sets.evaluation)

    def training_goals(self, n: int, rng: np.random.Generator | int | None = None) -> list[Goal]:
        """The first ``n`` cached training goals (``rng`` unused: the set is fixed per env)."""
        if not 0 <= n <= len(self.goal_sets.training):
            raise ValueError(f"{self.name} has {len(self.goal_sets.training)} cached training goals, asked for {n}; "
                             f"build more with the env option n_train_goals")
        return list(self.goal_sets.training[:n])


# ------------------------------------------------------------- automatic evaluation sets
#: agent steps of the fingerprint rollout (see env_fingerprint)
FINGERPRINT_STEPS = 16


def env_fingerprint(env, steps: int = FINGERPRINT_STEPS) -> str:
    """A hash of what the env shows on one fixed rollout: ``reset(seed=0)``, then up to
    ``steps`` actions drawn from ``default_rng(0)``; every frame, feature vector and ending.

    Part of the cache key of an automatic evaluation set: an env's name, options and spec
    do not change when its code does (new dynamics, another rendering), its fingerprint
    does, and so a stale cached set is not served. Leaves the env mid-episode.
    """
    digest = hashlib.blake2b(digest_size=8)

    def add(goal: Goal) -> None:
        digest.update(repr(goal.frame.shape).encode())
        digest.update(goal.frame.tobytes())
        digest.update(goal.features.tobytes())

    env.reset(seed=0)
    add(env.current_goal())
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):   # the draws discrete envs' fingerprints always had
        actions = [int(space.start) + int(a) for a in np.random.default_rng(0).integers(space.n, size=steps)]
    else:
        rng = np.random.default_rng(0)
        actions = [random_action(space, rng) for _ in range(steps)]
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        add(env.current_goal())
        digest.update(bytes([bool(terminated), bool(truncated)]))
        if terminated or truncated:
            break
    return digest.hexdigest()


def automatic_evaluation_goals(env, key: dict, seed: int = 0, n_evaluation: int = 30, n_candidates: int = 1000,
                               cache_dir: str | os.PathLike | None = None) -> tuple[list[Goal], Path]:
    """The fixed evaluation set of an env that has no set of its own (the default of
    :meth:`pixelplan.envs.core.GoalEnv.evaluation_goals`), built once and cached.

    The DM Control / Atari recipe (:func:`pick_evaluation_goals`: greedy max-min from
    ``n_candidates`` random final states, stream ``[seed, 2]``) with two differences: the
    env's ``goal_spec`` is kept (no range estimate: an adapted env's ranges are its
    author's), and candidates with equal features are dropped before the pick, so the set
    holds ``min(n_evaluation, distinct states found)`` goals. ``key`` identifies the env
    (:meth:`~pixelplan.envs.core.GoalEnv.goal_set_key`); the spec, seed, counts and
    :func:`env_fingerprint` are added to it. Returns the goals and the cache file.
    """
    spec = env.goal_spec
    fingerprint = env_fingerprint(env)
    if env_fingerprint(env) != fingerprint:
        warnings.warn(
            f"env {key.get('env')!r} is not deterministic given its reset seed (two identical rollouts "
            "differed), so its evaluation goals cannot be rebuilt from a seed and runs on it are not "
            "reproducible: draw every random number from self.np_random, seeded by reset(seed=...)",
            RuntimeWarning, stacklevel=3)
    key = {**key, "spec": spec.to_dict(), "seed": int(seed), "n_eval": int(n_evaluation),
           "n_candidates": int(n_candidates), "distinct": True, "fingerprint": fingerprint}

    def build() -> GoalSets:
        goals = pick_evaluation_goals(env, spec, int(seed), int(n_evaluation), int(n_candidates), distinct=True)
        meta = {"format": GOAL_SET_FORMAT, "seed": int(seed), "n_evaluation": len(goals),
                "n_candidates": int(n_candidates), "distinct": True}
        return GoalSets(spec, goals, [], meta)

    sets, path = cached_goal_sets(key, build, cache_dir)
    return list(sets.evaluation), path


# ------------------------------------------------------------------ test tasks (GoalTask sets)
def save_tasks(path: str | os.PathLike, tasks: Sequence[GoalTask], meta: dict | None = None) -> str:
    """Write test tasks (:class:`~pixelplan.envs.core.GoalTask`) to ``path`` (``.npz``), atomically;
    returns the path written. :func:`load_tasks` reads them back."""
    tasks = list(tasks)
    if not tasks or not all(isinstance(t, GoalTask) for t in tasks):
        raise ValueError("save_tasks needs a non-empty list of GoalTask")
    out = _npz_path(path)
    tmp = f"{out}.{os.getpid()}.tmp.npz"
    np.savez_compressed(
        tmp, goal_frames=np.stack([t.frame for t in tasks]), goal_features=np.stack([t.features for t in tasks]),
        start_states=np.stack([t.start_state for t in tasks]), start_frames=np.stack([t.start_frame for t in tasks]),
        start_features=np.stack([t.start_features for t in tasks]), relevant=np.stack([t.relevant for t in tasks]),
        threshold=np.array([t.threshold for t in tasks]), meta=np.array(json.dumps(meta or {}, sort_keys=True)))
    os.replace(tmp, out)
    return out


def load_tasks(path: str | os.PathLike) -> tuple[list[GoalTask], dict]:
    """``(tasks, meta)`` from a file that :func:`save_tasks` wrote."""
    path = _existing_npz(path)
    with np.load(path, allow_pickle=False) as data:
        need = {"goal_frames", "goal_features", "start_states", "start_frames", "start_features", "relevant",
                "threshold", "meta"}
        if need - set(data.files):
            raise ValueError(f"{path} is not a task file (missing {sorted(need - set(data.files))}); write one "
                             "with pixelplan tasks")
        tasks = [GoalTask(f, x, start_state=s, start_frame=sf, start_features=sx, relevant=r, threshold=float(th))
                 for f, x, s, sf, sx, r, th in zip(data["goal_frames"], data["goal_features"], data["start_states"],
                                                   data["start_frames"], data["start_features"], data["relevant"],
                                                   data["threshold"])]
        meta = json.loads(str(data["meta"]))
    return tasks, meta


def cached_tasks(key: dict, build: Callable[[], list], cache_dir: str | os.PathLike | None = None,
                 ) -> tuple[list[GoalTask], Path]:
    """The task set ``key`` identifies, from the cache or ``build()`` then stored (atomically), as
    :func:`cached_goal_sets` does for goal sets."""
    key = {**key, "format": GOAL_SET_FORMAT, "kind": "tasks"}
    text, path = _cache_file(key, "tasks", f"{key.get('tasks', 'tasks')}-", cache_dir)
    if path.exists():
        try:
            tasks, meta = load_tasks(path)
            if meta.get("key") == json.loads(text):
                return tasks, path
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild below
    tasks = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tasks(path, tasks, {"key": json.loads(text)})
    return tasks, path
