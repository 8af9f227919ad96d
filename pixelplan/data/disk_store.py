"""An episode store served from a dataset file, for datasets larger than memory (numpy, h5py).

:class:`DiskEpisodeStore` opens a dataset written by :func:`~pixelplan.data.dataset.write_episodes`,
indexes its episodes' lengths once (metadata only: no frame is read), and then builds
hindsight batches by reading, for each episode a batch touches, that episode's frames and
actions whole (a contiguous read of each array, never an h5py fancy-index read, which is
about 30x slower). Episodes read are kept in a small LRU cache bounded in bytes.

Its sampling law is the :class:`~pixelplan.data.replay.ReplayBuffer`'s, random call for
random call: frames are numbered in storage order (episode by episode, as the file holds
them), and ``sample`` draws ``offsets = rng.integers(0, num_frames, size=B)`` then
``ks = rng.integers(1, max_k + 1, size=B)``, clips each k to the steps left in its episode,
and builds the same batch. So for the same generator state it returns exactly the batch a
ReplayBuffer holding the same episodes in the same order (capacity at least their frames,
filled from empty) returns, ``start`` included: the start's frame number, which is that
buffer's slot (tests/test_datasets.py checks this batch for batch).

Float actions come back float32 ``(B, max_k, *action_shape)``, the slots after ``k`` padded
with :data:`FLOAT_PAD` (0.0); integer actions int64 ``(B, max_k)`` padded with
:data:`~pixelplan.data.replay.PAD` (-1), as the ReplayBuffer's.

Cost: one read and gzip decompression of a whole episode (one HDF5 chunk) per episode a
batch touches that is not cached; with a dataset much larger than the cache, that is about
one episode per row. Measured (2-core CPU, the 7x7 grid world, 13-frame episodes, batches of
256, max_k 12): 0.2 ms a batch from a ReplayBuffer, 3 ms from this store with every episode
cached, 40 ms with none.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from .dataset import INT_ACTIONS, DatasetError, _h5py, action_spec, check_action_spec, read_attrs
from .replay import PAD, HindsightBatch

__all__ = ["DiskEpisodeStore", "FLOAT_PAD"]

#: Padding value for float action slots beyond ``k``.
FLOAT_PAD = 0.0


class DiskEpisodeStore:
    """Hindsight batches drawn from a dataset file, one episode read at a time.

    ``frame_stack`` frames per state; ``cache_bytes`` bounds the episodes kept in memory
    (at least the last one read is always kept). Close it with :meth:`close` (or use it
    as a context manager).
    """

    def __init__(self, path: str | os.PathLike, frame_stack: int = 4, cache_bytes: int = 256 * 2**20):
        frame_stack = int(frame_stack)
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.path = str(path)
        self.frame_stack = frame_stack
        self.cache_bytes = int(cache_bytes)
        attrs = read_attrs(path)
        self.action_dtype, self.action_shape = action_spec(attrs)
        self._file = _h5py().File(path, "r")
        try:
            self._index()
        except BaseException:
            self._file.close()
            raise
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0
        """episodes read from the file so far (cache misses)"""

    def _index(self) -> None:
        group = self._group = self._file["episodes"]
        self._names = sorted(group)
        if not self._names:
            raise DatasetError(f"{self.path} holds no episodes")
        lengths = np.empty(len(self._names), dtype=np.int64)
        shape = None
        for i, name in enumerate(self._names):
            frames, actions = group[name]["frames"], group[name]["actions"]
            shape = tuple(frames.shape[1:]) if shape is None else shape
            if tuple(frames.shape[1:]) != shape or frames.dtype != np.uint8 or frames.shape[0] < 1:
                raise DatasetError(f"{self.path}: episode {name} has frames {frames.dtype} {frames.shape}, "
                                   f"the first uint8 (L+1, *{shape})")
            if actions.shape[:1] != (frames.shape[0] - 1,):
                raise DatasetError(f"{self.path}: episode {name} has {frames.shape[0]} frames and actions of "
                                   f"shape {actions.shape}")
            check_action_spec((str(actions.dtype), tuple(actions.shape[1:])), (self.action_dtype, self.action_shape),
                              f"{self.path}: episode {name}")
            lengths[i] = frames.shape[0]
        self.frame_shape: tuple[int, ...] = shape
        self._lengths = lengths                  # frames per episode
        self._ends = np.cumsum(lengths)          # one past each episode's last frame number
        self._first = self._ends - lengths       # each episode's first frame number

    # ------------------------------------------------------------------ properties
    @property
    def num_frames(self) -> int:
        return int(self._ends[-1])

    @property
    def num_episodes(self) -> int:
        return len(self._names)

    @property
    def episode_lengths(self) -> np.ndarray:
        """Frames of each episode, in storage order (a copy)."""
        return self._lengths.copy()

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, max_k: int, rng: np.random.Generator,
               with_next: bool = False) -> HindsightBatch:
        """``batch_size`` hindsight tuples, drawn as :meth:`ReplayBuffer.sample` draws them."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        starts = rng.integers(0, self.num_frames, size=batch_size)
        ks = rng.integers(1, max_k + 1, size=batch_size)
        ks = np.minimum(ks, self.steps_left(starts))
        return self.gather(starts, ks, max_k, with_next)

    def steps_left(self, starts: np.ndarray) -> np.ndarray:
        """Actions remaining in the episode after each frame number."""
        ep, pos = self._locate(starts)
        return self._lengths[ep] - 1 - pos

    def _locate(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() >= self.num_frames):
            raise ValueError(f"frame numbers must be in [0, {self.num_frames})")
        ep = np.searchsorted(self._ends, starts, side="right")
        return ep, starts - self._first[ep]

    def gather(self, starts: np.ndarray, ks: np.ndarray, max_k: int, with_next: bool = False) -> HindsightBatch:
        """The batch for given start frame numbers and step counts, as :meth:`ReplayBuffer.gather`
        builds it (``0 <= ks[i] <= min(max_k, steps left)``)."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        max_k = int(max_k)
        if starts.shape != ks.shape:
            raise ValueError(f"starts and ks must have the same length, got {starts.shape} and {ks.shape}")
        if max_k < 0:
            raise ValueError(f"max_k must be >= 0, got {max_k}")
        ep, pos = self._locate(starts)
        left = self._lengths[ep] - 1 - pos
        if np.any(ks < 0) or np.any(ks > left) or np.any(ks > max_k):
            raise ValueError("each k must satisfy 0 <= k <= min(max_k, steps left in its episode)")

        B, fs = len(starts), self.frame_stack
        back = np.arange(-fs + 1, 1, dtype=np.int64)
        steps = np.arange(max_k, dtype=np.int64)
        # Positions within each row's episode: the state's stack (the first frame repeated
        # before the episode's start), the goal, the next state's stack, the actions.
        state_pos = np.maximum(pos[:, None] + back, 0)
        goal_pos = pos + ks
        next_pos = np.maximum((pos + (left > 0))[:, None] + back, 0) if with_next else None
        action_pos = np.minimum(pos[:, None] + steps, np.maximum(left + pos - 1, 0)[:, None])
        state = np.empty((B, fs, *self.frame_shape), dtype=np.uint8)
        goal = np.empty((B, *self.frame_shape), dtype=np.uint8)
        next_state = np.empty_like(state) if with_next else None
        integer = self.action_dtype == INT_ACTIONS
        dtype, pad = (np.int64, PAD) if integer else (np.float32, FLOAT_PAD)
        taken = np.full((B, max_k, *self.action_shape), pad, dtype=dtype)
        order = np.argsort(ep, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(ep[order])) + 1) if B else ():
            frames, acts = self._episode(int(ep[rows[0]]))
            state[rows] = frames[state_pos[rows]]
            goal[rows] = frames[goal_pos[rows]]
            if with_next:
                next_state[rows] = frames[next_pos[rows]]
            if len(acts):
                taken[rows] = acts[action_pos[rows]]
        used = (steps < ks[:, None]).reshape((B, max_k) + (1,) * len(self.action_shape))
        actions = np.where(used, taken, np.asarray(pad, dtype=dtype))
        return HindsightBatch(state=state, goal=goal, actions=actions, k=ks, start=starts, next_state=next_state)

    # ------------------------------------------------------------------ reading
    def _episode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Episode ``i``'s (frames, actions), from the cache or read whole from the file."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        name = self._names[i]
        frames = self._group[name + "/frames"][()]          # whole arrays: contiguous reads
        acts = self._group[name + "/actions"][()]
        if self.action_dtype == INT_ACTIONS and acts.size and acts.min() < 0:
            raise DatasetError(f"{self.path}: episode {name} has negative actions (-1 pads sequences)")
        self.reads += 1
        self._cache[i] = (frames, acts)
        self._cached_bytes += frames.nbytes + acts.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, (f, a) = self._cache.popitem(last=False)
            self._cached_bytes -= f.nbytes + a.nbytes
        return frames, acts

    def close(self) -> None:
        """Close the file and drop the cache (idempotent)."""
        self._cache.clear()
        self._cached_bytes = 0
        if self._file:
            self._file.close()

    def __enter__(self) -> "DiskEpisodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
