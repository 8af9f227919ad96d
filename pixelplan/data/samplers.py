"""Samplers: separate objects that draw training batches from an episode store (numpy only).

The store (:class:`~pixelplan.data.replay.ReplayBuffer`) keeps each frame once and knows its
episodes; a sampler decides what a training example is. Three kinds, one per family of
methods in ARCHITECTURE.md:

* :class:`HindsightSampler` (GLAMOR, GCSL, DISCERN): a start frame stack, the frame k steps
  later as the goal, and the k actions between. It is the store's own ``sample``, so it draws
  exactly the samples it always drew for the same seed.
* :class:`SequenceSampler` (PlaNet, video models): windows of ``length`` consecutive frames of
  one episode and the ``length - 1`` actions between them, uniform over every such window in
  the store (PlaNet trains on 50 chunks of 50 steps).
* :class:`GoalPairSampler` (MBOLD's dynamical distance): a start stack, the action taken there,
  the next stack, and a goal frame ``offset`` steps ahead in the same episode, the offset drawn
  from a *future-offset law* (``uniform`` on 1..max_offset, or ``geometric`` with success
  probability p, MBOLD's choice for its distance learning), truncated to the steps the episode
  has left. A ``negative_prob`` fraction of rows gets a goal from anywhere in the store
  instead (``negative`` True, ``offset`` -1): the negatives a distance function needs.

Each sampler states the unit its batch counts (``samples_per_batch``), so that a driver's
replay ratio can say exactly what it counts. Each is tested against a naive reference across
the ring's wrap (tests/test_samplers.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from .replay import HindsightBatch, ReplayBuffer

__all__ = ["HindsightSampler", "SequenceSampler", "SequenceBatch", "GoalPairSampler", "GoalPairBatch",
           "ArmNeighbours", "MboldSampler", "MboldBatch",
           "offset_probabilities"]

OffsetLaw = Literal["uniform", "geometric"]


@dataclass(frozen=True)
class HindsightSampler:
    """Hindsight tuples (paper: GLAMOR 3.5): start uniform over stored frames, k uniform in
    1..max_k clipped to the steps left (k = 0 at an episode's final frame)."""

    batch_size: int
    max_k: int
    with_next: bool = False

    @property
    def samples_per_batch(self) -> int:
        return self.batch_size

    def sample(self, store: ReplayBuffer, rng: np.random.Generator) -> HindsightBatch:
        return store.sample(self.batch_size, self.max_k, rng, with_next=self.with_next)


class SequenceBatch(NamedTuple):
    """Windows of consecutive steps of one episode each.

    frames:  uint8 (B, length, *frame_shape), oldest first.
    actions: int64 (B, length - 1); ``actions[:, i]`` was taken at ``frames[:, i]``.
    rewards: float32 (B, length - 1); ``rewards[:, i]`` was returned for ``actions[:, i]``.
    start:   int64 (B,), ring slot of each window's first frame.
    first:   bool (B,), whether the window starts at its episode's first frame (a state
             model resets its belief there).
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    start: np.ndarray
    first: np.ndarray


@dataclass(frozen=True)
class SequenceSampler:
    """``batch_size`` windows of ``length`` frames, uniform over all windows in the store."""

    batch_size: int
    length: int

    def __post_init__(self):
        _positive(batch_size=self.batch_size)
        if self.length < 2:
            raise ValueError(f"a sequence window needs length >= 2 (frames), got {self.length}")

    @property
    def samples_per_batch(self) -> int:
        """Steps per batch: each window holds ``length - 1`` transitions."""
        return self.batch_size * (self.length - 1)

    def sample(self, store: ReplayBuffer, rng: np.random.Generator) -> SequenceBatch:
        episodes = store.episode_slots()                      # (E, 2): start slot, frames
        windows = np.maximum(episodes[:, 1] - self.length + 1, 0)
        total = int(windows.sum())
        if total == 0:
            longest = int(episodes[:, 1].max()) if len(episodes) else 0
            raise ValueError(f"no stored episode has {self.length} frames for a sequence window "
                             f"(longest: {longest}); collect longer episodes or lower the length")
        pick = rng.integers(0, total, size=self.batch_size)
        ends = np.cumsum(windows)
        ep = np.searchsorted(ends, pick, side="right")
        offset = pick - (ends[ep] - windows[ep])
        starts = (episodes[ep, 0] + offset) % store.capacity
        return self.gather(store, starts)

    def gather(self, store: ReplayBuffer, starts: np.ndarray) -> SequenceBatch:
        """The windows starting at ``starts`` (valid slots with ``length - 1`` steps left)."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        if np.any(store.steps_left(starts) < self.length - 1):
            raise ValueError(f"every window start needs {self.length - 1} steps left in its episode")
        slots = (starts[:, None] + np.arange(self.length)) % store.capacity
        frames, actions = store.frames_at(slots), store.actions_at(slots[:, :-1])
        return SequenceBatch(frames=frames, actions=actions, rewards=store.rewards_at(slots[:, :-1]),
                             start=starts, first=store.positions(starts) == 0)


class GoalPairBatch(NamedTuple):
    """(state, action, next state, goal) rows for learning a goal-conditioned distance.

    state, next_state: uint8 (B, frame_stack, *frame_shape).
    action:  int64 (B,), taken at the state's last frame.
    goal:    uint8 (B, *frame_shape).
    offset:  int64 (B,), steps from the state's last frame to the goal (>= 1), or -1 for a
             negative (a goal from anywhere in the store).
    negative: bool (B,).
    start:   int64 (B,), ring slot of the state's last frame.
    """

    state: np.ndarray
    action: np.ndarray
    next_state: np.ndarray
    goal: np.ndarray
    offset: np.ndarray
    negative: np.ndarray
    start: np.ndarray


@dataclass(frozen=True)
class GoalPairSampler:
    """Start uniform over frames with at least one step after them; goal ``offset`` steps later,
    the offset drawn from ``law`` truncated to the steps the episode has left."""

    batch_size: int
    law: OffsetLaw = "geometric"
    p: float = 0.3
    """success probability of the geometric law (mean offset 1/p before truncation)"""
    max_offset: int | None = None
    """largest offset (both laws); None = no limit but the episode's end"""
    negative_prob: float = 0.0

    def __post_init__(self):
        _positive(batch_size=self.batch_size)
        if self.law not in ("uniform", "geometric"):
            raise ValueError(f"offset law must be 'uniform' or 'geometric', got {self.law!r}")
        if self.law == "geometric" and not 0 < self.p <= 1:
            raise ValueError(f"the geometric law's p must be in (0, 1], got {self.p}")
        if self.law == "uniform" and self.max_offset is None:
            raise ValueError("the uniform offset law needs max_offset")
        if self.max_offset is not None and self.max_offset < 1:
            raise ValueError(f"max_offset must be >= 1, got {self.max_offset}")
        if not 0 <= self.negative_prob <= 1:
            raise ValueError(f"negative_prob must be in [0, 1], got {self.negative_prob}")

    @property
    def samples_per_batch(self) -> int:
        return self.batch_size

    def sample(self, store: ReplayBuffer, rng: np.random.Generator) -> GoalPairBatch:
        slots = store.valid_indices()
        starts = slots[store.steps_left(slots) > 0]
        if len(starts) == 0:
            raise ValueError("cannot sample goal pairs: no stored episode has a step")
        starts = starts[rng.integers(0, len(starts), size=self.batch_size)]
        limit = store.steps_left(starts)
        if self.max_offset is not None:
            limit = np.minimum(limit, self.max_offset)
        offset = self.draw_offsets(limit, rng)
        negative = rng.random(self.batch_size) < self.negative_prob
        anywhere = slots[rng.integers(0, len(slots), size=self.batch_size)]
        goal_slots = np.where(negative, anywhere, (starts + offset) % store.capacity)
        state, next_state = store.stacks_at(starts), store.stacks_at(starts, step=1)
        return GoalPairBatch(state=state, action=store.actions_at(starts), next_state=next_state,
                             goal=store.frames_at(goal_slots), offset=np.where(negative, -1, offset),
                             negative=negative, start=starts)

    def draw_offsets(self, limit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Offsets in 1..limit[i], each from the law truncated to that range (inverse CDF)."""
        limit = np.asarray(limit, dtype=np.int64)
        u = rng.random(limit.shape)
        if self.law == "uniform":
            return 1 + np.minimum((u * limit).astype(np.int64), limit - 1)
        if self.p == 1.0:
            return np.ones_like(limit)
        q = 1.0 - self.p
        # P(k <= x | k <= m) = (1 - q^x) / (1 - q^m)  =>  k = ceil(log(1 - u (1 - q^m)) / log q)
        k = np.ceil(np.log1p(-u * (1.0 - q ** limit)) / math.log(q)).astype(np.int64)
        return np.clip(k, 1, limit)


def offset_probabilities(law: OffsetLaw, limit: int, p: float = 0.3) -> np.ndarray:
    """P(offset = 1..limit) under ``law`` truncated to 1..limit (the reference for tests)."""
    k = np.arange(1, limit + 1)
    w = np.ones(limit) if law == "uniform" else p * (1 - p) ** (k - 1)
    return w / w.sum()


def _positive(**values) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


class ArmNeighbours:
    """MBOLD's negative goals (A.1): for a state, a frame of *another* trajectory whose actuated
    features (the arm's joints) are among the ``neighbours`` nearest to the state's, by l2.

    The index holds the actuated features of ``n_index`` stored frames (MBOLD: 200,000, about
    60% of its dataset), drawn once with a generator of their own (``index_seed``), so that the
    same store always gives the same index and a resumed run draws the same negatives; it is
    searched exactly (faiss ``IndexFlatL2``). A state whose nearest indexed frames all belong to
    its own trajectory gets a frame of another trajectory uniformly at random instead.
    """

    def __init__(self, store: ReplayBuffer, actuated: tuple[int, ...], n_index: int = 200_000,
                 neighbours: int = 10, index_seed: int = 0):
        if not actuated:
            raise ValueError("negative mining needs the env's actuated features (EnvSpec.actuated_features), and "
                             "this env declares none; use uniform negatives or none")
        if not store.feature_dim:
            raise ValueError("negative mining needs the dataset's features, and this store keeps none: collect "
                             "the dataset with an env that reports info['features']")
        if max(actuated) >= store.feature_dim:
            raise ValueError(f"actuated features {actuated} index past the dataset's {store.feature_dim} features")
        import faiss

        slots = store.valid_indices()
        keep = np.random.default_rng(index_seed).permutation(len(slots))[:n_index]
        self.slots = np.sort(slots[keep])
        self.actuated = tuple(actuated)
        keys = self._keys(store, self.slots)
        if np.isnan(keys).any():
            raise ValueError("some stored frames have no features (NaN): negative mining needs them for every frame")
        self.neighbours = int(neighbours)
        self.index = faiss.IndexFlatL2(keys.shape[1])
        self.index.add(keys)
        self.episodes = store.episode_ids(self.slots)
        self.n_episodes = len(np.unique(self.episodes))

    def _keys(self, store: ReplayBuffer, slots: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(store.features_at(slots)[:, list(self.actuated)], dtype=np.float32)

    def draw(self, store: ReplayBuffer, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative goal slot per start slot."""
        starts = np.asarray(starts, dtype=np.int64)
        if self.n_episodes < 2:
            raise ValueError("negative goals come from other trajectories, and the store holds one")
        # search a margin beyond k, since the state's own trajectory is excluded
        k = min(len(self.slots), 4 * self.neighbours)
        _, found = self.index.search(self._keys(store, starts), k)
        own = store.episode_ids(starts)
        out = np.empty(len(starts), dtype=np.int64)
        u = rng.random(len(starts))
        for i, row in enumerate(found):
            row = row[row >= 0]
            other = row[self.episodes[row] != own[i]][: self.neighbours]
            if len(other):
                out[i] = self.slots[other[int(u[i] * len(other))]]
            else:                                   # every near frame is the state's own: any other trajectory
                pool = np.flatnonzero(self.episodes != own[i])
                out[i] = self.slots[pool[int(u[i] * len(pool))]]
        return out


class MboldBatch(NamedTuple):
    """What one MBOLD update trains on: video windows (None when the video model is not
    trained) and goal pairs (None when no distance is learned)."""

    windows: SequenceBatch | None
    pairs: GoalPairBatch | None


class MboldSampler:
    """Video windows (a :class:`SequenceSampler`) and distance pairs, drawn together.

    The pairs are a :class:`GoalPairSampler`'s (goals ``offset`` steps later by ``law``); then
    exactly ``round(negative_frac * batch)`` rows, chosen at random, get a negative goal instead
    (``negative`` True, ``offset`` -1): from :class:`ArmNeighbours` (``negatives="arm_knn"``,
    MBOLD's), uniformly from the whole store (``"uniform"``), or none (``"none"``, the paper's
    no-negatives ablation). The negatives' index is built on the first batch from the store.
    """

    def __init__(self, windows: SequenceSampler | None, pairs: GoalPairSampler | None,
                 negatives: Literal["arm_knn", "uniform", "none"] = "arm_knn", negative_frac: float = 0.5,
                 actuated: tuple[int, ...] = (), n_index: int = 200_000, neighbours: int = 10, index_seed: int = 0):
        if negatives not in ("arm_knn", "uniform", "none"):
            raise ValueError(f"negatives must be arm_knn, uniform or none, got {negatives!r}")
        if pairs is not None and pairs.negative_prob:
            raise ValueError("MboldSampler draws the negatives itself: give it a GoalPairSampler without negative_prob")
        if not 0 <= negative_frac <= 1:
            raise ValueError(f"negative_frac must be in [0, 1], got {negative_frac}")
        self.windows, self.pairs = windows, pairs
        self.negatives, self.negative_frac = negatives, float(negative_frac) if negatives != "none" else 0.0
        self.actuated, self.n_index, self.neighbours, self.index_seed = tuple(actuated), n_index, neighbours, index_seed
        self._index: ArmNeighbours | None = None
        self._index_of: int | None = None

    @property
    def samples_per_batch(self) -> int:
        if self.pairs is not None:
            return self.pairs.batch_size
        return self.windows.samples_per_batch if self.windows is not None else 0

    def neighbours_of(self, store: ReplayBuffer) -> ArmNeighbours:
        if self._index is None or self._index_of != id(store):
            self._index = ArmNeighbours(store, self.actuated, self.n_index, self.neighbours, self.index_seed)
            self._index_of = id(store)
        return self._index

    def sample(self, store: ReplayBuffer, rng: np.random.Generator) -> MboldBatch:
        windows = self.windows.sample(store, rng) if self.windows is not None else None
        pairs = self.pairs.sample(store, rng) if self.pairs is not None else None
        if pairs is not None and self.negative_frac > 0:
            n = len(pairs.start)
            rows = rng.permutation(n)[: int(round(self.negative_frac * n))]
            if self.negatives == "arm_knn":
                goal_slots = self.neighbours_of(store).draw(store, pairs.start[rows], rng)
            else:
                valid = store.valid_indices()
                goal_slots = valid[rng.integers(0, len(valid), size=len(rows))]
            goal, offset, negative = pairs.goal.copy(), pairs.offset.copy(), pairs.negative.copy()
            goal[rows], offset[rows], negative[rows] = store.frames_at(goal_slots), -1, True
            pairs = pairs._replace(goal=goal, offset=offset, negative=negative)
        return MboldBatch(windows, pairs)
