"""Frame ring buffer with hindsight relabelling (numpy only).

Every frame is stored once, as uint8, in a preallocated ring of ``capacity`` slots.
Frame stacks, goals and action sequences are rebuilt at sampling time from per-slot
metadata, so nothing is duplicated. See ``docs/replay.md`` for the layout, the eviction
rule and the sampling semantics.
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import NamedTuple

import numpy as np

__all__ = ["PAD", "FLOAT_PAD", "HindsightBatch", "ReplayBuffer", "ReplayTooLarge", "available_memory", "check_replay_fits"]

#: Padding value for discrete action slots beyond ``k`` (and the per-slot action at an
#: episode's final frame). Float actions are padded with :data:`FLOAT_PAD` instead.
PAD = -1
FLOAT_PAD = 0.0

# Per-slot int64 metadata arrays of shape (capacity,), besides the frames, actions and rewards.
_META = ("pos", "ep_len", "ep_id")
# What each per-slot array holds in a slot never written.
_EMPTY_SLOT = {"pos": 0, "ep_len": 0, "ep_id": -1}


class HindsightBatch(NamedTuple):
    """A batch of hindsight-relabelled samples.

    state:   uint8 (B, frame_stack, *frame_shape), oldest frame first; ``state[:, -1]`` is the start frame.
    goal:    uint8 (B, *frame_shape), the frame ``k`` steps after the start in the same episode.
    actions: int64 (B, max_k), a_1..a_k then ``PAD``; for float actions float32
             (B, max_k, *action_shape), padded with ``FLOAT_PAD``.
    k:       int64 (B,), number of steps from start to goal (0 at an episode's final frame).
    start:   int64 (B,), ring slot of the start frame.
    next_state: uint8 like ``state``, the stack one step after the start (the start's own
             stack where k = 0), or None unless asked for (``with_next``; one-step TD agents).
    """

    state: np.ndarray
    goal: np.ndarray
    actions: np.ndarray
    k: np.ndarray
    start: np.ndarray
    next_state: np.ndarray | None = None


class ReplayBuffer:
    """Ring buffer of whole episodes of frames, for goal-conditioned hindsight sampling.

    ``capacity`` counts frames (slots). Episodes are written contiguously at the write
    position, wrapping around the end of the arrays when needed. Writing an episode that
    overwrites any slot of an older episode evicts that whole older episode, so every
    retained episode is complete. Because episodes are written in order and evicted oldest
    first, the retained slots always form one contiguous arc of the ring ending at the
    write position; sampling a valid slot is therefore O(1).

    The per-step schema: ``action_shape`` and ``action_dtype`` say what an action is (a
    discrete index: ``()`` and int64, the default; a continuous action: its shape and float32),
    and every step has a float32 reward.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], frame_stack: int = 4,
                 action_shape: tuple[int, ...] = (), action_dtype: str | np.dtype = "int64", feature_dim: int = 0):
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        frame_stack = int(frame_stack)
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        frame_shape = tuple(int(d) for d in frame_shape)
        if any(d < 1 for d in frame_shape):
            raise ValueError(f"frame_shape dimensions must be >= 1, got {frame_shape}")
        action_dtype = np.dtype(action_dtype)
        if action_dtype not in (np.dtype(np.int64), np.dtype(np.float32)):
            raise ValueError(f"action_dtype must be int64 (discrete) or float32 (continuous), got {action_dtype}")
        action_shape = tuple(int(d) for d in action_shape)
        if action_dtype == np.int64 and action_shape:
            raise ValueError(f"discrete actions are scalars: action_shape must be (), got {action_shape}")
        self.capacity = capacity
        self.frame_shape = frame_shape
        self.frame_stack = frame_stack
        self.action_shape = action_shape
        self.action_dtype = action_dtype
        self.discrete = action_dtype == np.int64
        self.pad = PAD if self.discrete else FLOAT_PAD
        if int(feature_dim) < 0:
            raise ValueError(f"feature_dim must be >= 0 (0 = no features), got {feature_dim}")
        self.feature_dim = int(feature_dim)

        self._frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        # Action taken at the slot's frame, or the pad value at an episode's final frame.
        self._actions = np.full((capacity, *action_shape), self.pad, dtype=action_dtype)
        # Reward the env returned for that action (0 at an episode's final frame, and on goal tasks).
        self._rewards = np.zeros(capacity, dtype=np.float32)
        # Position of the slot's frame within its episode (0 = first observation).
        self._pos = np.zeros(capacity, dtype=np.int64)
        # Number of frames of the slot's episode.
        self._ep_len = np.zeros(capacity, dtype=np.int64)
        # Episode id of the slot, or -1 when the slot holds no retained frame.
        self._ep_id = np.full(capacity, -1, dtype=np.int64)
        # The env's evaluation features of the slot's frame (``info["features"]``), when the
        # store keeps them (``feature_dim`` > 0: MBOLD's negative mining reads the arm's joints).
        self._features = np.full((capacity if self.feature_dim else 0, self.feature_dim), np.nan, np.float32)

        # Retained episodes, oldest first: (episode id, start slot, number of frames).
        self._episodes: deque[tuple[int, int, int]] = deque()
        self._write = 0
        self._num_frames = 0
        self._next_id = 0
        self._total_steps = 0

    # ------------------------------------------------------------------ properties
    @property
    def num_frames(self) -> int:
        """Frames currently retained (valid slots)."""
        return self._num_frames

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def total_steps_added(self) -> int:
        """Environment steps (actions) ever added, including evicted ones."""
        return self._total_steps

    @property
    def nbytes(self) -> int:
        """Memory of all preallocated arrays."""
        return int(self._frames.nbytes + self._actions.nbytes + self._rewards.nbytes + self._features.nbytes
                   + sum(getattr(self, "_" + n).nbytes for n in _META))

    @staticmethod
    def bytes_needed(capacity: int, frame_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
                     feature_dim: int = 0) -> int:
        """Memory the arrays of a buffer with this capacity, frame shape and action shape will
        take (an int64 index, or float32 entries of ``action_shape``)."""
        capacity = int(capacity)
        per_frame = math.prod(int(d) for d in frame_shape)
        per_action = 4 * math.prod(action_shape) if action_shape else 8
        return capacity * (per_frame + 8 * len(_META) + per_action + 4 + 4 * int(feature_dim))   # + reward, features

    # ------------------------------------------------------------------ writing
    def add_episode(self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray | None = None,
                    features: np.ndarray | None = None) -> None:
        """Append one whole episode.

        frames: (L+1, *frame_shape) uint8, the first observation and the one after each action.
        actions: (L,) integers >= 0 (discrete), or (L, *action_shape) finite floats;
            ``actions[i]`` taken at ``frames[i]``.
        rewards: (L,) finite floats, ``rewards[i]`` returned for ``actions[i]``; None = zeros.
        features: (L+1, feature_dim) floats, one row per frame, when the store keeps features
            (None there stores NaN); must be None when it does not.
        """
        if features is not None:
            features = np.asarray(features, dtype=np.float32)
            if not self.feature_dim:
                raise ValueError("this store keeps no features (feature_dim 0); build it with feature_dim")
            if features.shape != (len(frames), self.feature_dim):
                raise ValueError(f"features must have shape ({len(frames)}, {self.feature_dim}), one row per "
                                 f"frame, got {features.shape}")
        frames = np.asarray(frames)
        actions = np.asarray(actions)
        rewards = np.zeros(len(actions), np.float32) if rewards is None else np.asarray(rewards, dtype=np.float32)
        if rewards.shape != actions.shape[:1] or not np.isfinite(rewards).all():
            raise ValueError(f"rewards must be {actions.shape[0]} finite numbers, one per action, got shape "
                             f"{rewards.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
        if frames.ndim != 1 + len(self.frame_shape) or tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(
                f"frames must have shape (L+1, *{self.frame_shape}), got {tuple(frames.shape)}"
            )
        n = frames.shape[0]
        if n < 1:
            raise ValueError("an episode needs at least one frame (the first observation)")
        if actions.ndim != 1 + len(self.action_shape) or tuple(actions.shape[1:]) != self.action_shape:
            raise ValueError(f"actions must have shape (L, *{self.action_shape}), got {tuple(actions.shape)}")
        if self.discrete and actions.size and not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if not self.discrete and actions.size and not (np.issubdtype(actions.dtype, np.number)
                                                        and np.isfinite(actions).all()):
            raise ValueError(f"continuous actions must be finite numbers, got dtype {actions.dtype}")
        if actions.shape[0] != n - 1:
            raise ValueError(
                f"len(actions) must be len(frames) - 1 = {n - 1}, got {actions.shape[0]}"
            )
        if self.discrete and actions.size and actions.min() < 0:
            raise ValueError(f"actions must be >= 0 ({PAD} is reserved for padding)")
        if n > self.capacity:
            raise ValueError(
                f"episode of {n} frames is longer than the buffer capacity of {self.capacity} frames"
            )

        C = self.capacity
        w = self._write
        # Evict, oldest first, every episode that intersects the slots [w, w+n) (mod C). The
        # retained slots are the arc [oldest start, w), so the episodes hit are exactly the
        # oldest ones whose start lies within n slots after w (a full ring has its oldest
        # start at w itself).
        while self._episodes:
            _, s, m = self._episodes[0]
            if (s - w) % C >= n:
                break
            self._episodes.popleft()
            self._num_frames -= m
            self._set_slots(s, m, self._ep_id, -1)

        ep_id = self._next_id
        self._next_id += 1
        acts = np.full((n, *self.action_shape), self.pad, dtype=self.action_dtype)
        acts[: n - 1] = actions
        self._set_slots(w, n, self._frames, frames)
        self._set_slots(w, n, self._actions, acts)
        if self.feature_dim:
            self._set_slots(w, n, self._features, np.nan if features is None else features)
        rew = np.zeros(n, dtype=np.float32)
        rew[: n - 1] = rewards
        self._set_slots(w, n, self._rewards, rew)
        self._set_slots(w, n, self._pos, np.arange(n, dtype=np.int64))
        self._set_slots(w, n, self._ep_len, n)
        self._set_slots(w, n, self._ep_id, ep_id)

        self._episodes.append((ep_id, w, n))
        self._num_frames += n
        self._write = (w + n) % C
        self._total_steps += n - 1

    def _set_slots(self, start: int, n: int, arr: np.ndarray, values) -> None:
        """arr[(start + arange(n)) % C] = values, as at most two slice assignments."""
        first = min(n, self.capacity - start)
        if np.ndim(values) == 0:
            arr[start : start + first] = values
            arr[: n - first] = values
        else:
            arr[start : start + first] = values[:first]
            arr[: n - first] = values[first:]

    # ------------------------------------------------------------------ reading
    def _oldest_start(self) -> int:
        return self._episodes[0][1] if self._episodes else self._write

    def valid_indices(self) -> np.ndarray:
        """Slots that currently hold a frame of a retained episode, sorted."""
        idx = (self._oldest_start() + np.arange(self._num_frames, dtype=np.int64)) % self.capacity
        idx.sort()
        return idx

    def episodes(self, with_rewards: bool = False) -> list[tuple[np.ndarray, ...]]:
        """Every retained episode, oldest first, as ``(frames, actions)`` copies in the form
        :meth:`add_episode` takes them, or ``(frames, actions, rewards)`` (for inspection,
        export and tests)."""
        out = []
        for _, start, n in self._episodes:
            slots = (start + np.arange(n)) % self.capacity
            ep = (self._frames[slots], self._actions[slots[:-1]])
            out.append(ep + (self._rewards[slots[:-1]],) if with_rewards else ep)
        return out

    def episode_slots(self) -> np.ndarray:
        """Retained episodes, oldest first, as an int64 array of (start slot, frames) rows."""
        return np.array([(s, n) for _, s, n in self._episodes], dtype=np.int64).reshape(-1, 2)

    def frames_at(self, slots: np.ndarray) -> np.ndarray:
        """The frames in ``slots`` (any shape of valid slots), a copy."""
        return self._frames[np.asarray(slots, dtype=np.int64)]

    def rewards_at(self, slots: np.ndarray) -> np.ndarray:
        """The reward for the action taken at each slot's frame (0 at an episode's final frame)."""
        return self._rewards[np.asarray(slots, dtype=np.int64)]

    def actions_at(self, slots: np.ndarray) -> np.ndarray:
        """The action taken at each slot's frame (the pad value at an episode's final frame)."""
        return self._actions[np.asarray(slots, dtype=np.int64)]

    def features_at(self, slots: np.ndarray) -> np.ndarray:
        """The features of each slot's frame, float32 (..., feature_dim) (NaN where an episode
        was added without them); only for a store built with ``feature_dim`` > 0."""
        if not self.feature_dim:
            raise ValueError("this store keeps no features: build it with feature_dim (the dataset's features)")
        return self._features[np.asarray(slots, dtype=np.int64)]

    def episode_ids(self, slots: np.ndarray) -> np.ndarray:
        """The id of each slot's episode (ids count episodes in the order they were added)."""
        return self._ep_id[np.asarray(slots, dtype=np.int64)]

    def positions(self, slots: np.ndarray) -> np.ndarray:
        """Each slot's position within its episode (0 = the first observation)."""
        return self._pos[np.asarray(slots, dtype=np.int64)]

    def stacks_at(self, slots: np.ndarray, step: int = 0) -> np.ndarray:
        """Frame stacks ending ``step`` steps after each slot's frame (clamped to its episode's
        last frame), the episode's first frame repeated before it."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        pos = self._pos[slots]
        target = np.minimum(pos + int(step), self._ep_len[slots] - 1)
        return self._stacks(slots - pos, target)

    def steps_left(self, slots: np.ndarray) -> np.ndarray:
        """Number of actions remaining in the episode after each (valid) slot."""
        slots = np.asarray(slots, dtype=np.int64)
        return self._ep_len[slots] - 1 - self._pos[slots]

    def sample(self, batch_size: int, max_k: int, rng: np.random.Generator,
               with_next: bool = False) -> HindsightBatch:
        """Sample ``batch_size`` hindsight tuples.

        The start slot is uniform over all retained frames; k is uniform in 1..max_k, then
        clipped to the steps left in the episode after the start (so k = 0 at a final frame).
        ``with_next`` adds ``next_state``; it draws no extra random numbers.
        """
        if self._num_frames == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        offsets = rng.integers(0, self._num_frames, size=batch_size)
        starts = (self._oldest_start() + offsets) % self.capacity
        ks = rng.integers(1, max_k + 1, size=batch_size)
        ks = np.minimum(ks, self.steps_left(starts))
        return self.gather(starts, ks, max_k, with_next)

    def gather(self, starts: np.ndarray, ks: np.ndarray, max_k: int, with_next: bool = False) -> HindsightBatch:
        """Deterministically build the batch for given start slots and step counts.

        Each ``starts[i]`` must be a valid slot and ``0 <= ks[i] <= min(max_k, steps left)``.
        """
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        max_k = int(max_k)
        C = self.capacity
        if starts.shape != ks.shape:
            raise ValueError(f"starts and ks must have the same length, got {starts.shape} and {ks.shape}")
        if max_k < 0:
            raise ValueError(f"max_k must be >= 0, got {max_k}")
        if starts.size and (starts.min() < 0 or starts.max() >= C):
            raise ValueError(f"start slots must be in [0, {C})")
        if np.any(self._ep_id[starts] < 0):
            raise ValueError("some start slots hold no retained frame (see valid_indices())")
        pos = self._pos[starts]
        left = self._ep_len[starts] - 1 - pos
        if np.any(ks < 0) or np.any(ks > left) or np.any(ks > max_k):
            raise ValueError("each k must satisfy 0 <= k <= min(max_k, steps left in its episode)")

        ep_start = starts - pos  # may be negative when the episode straddles the wrap point
        state = self._stacks(ep_start, pos)
        goal = self._frames[(starts + ks) % C]
        steps = np.arange(max_k, dtype=np.int64)
        acts = self._actions[(starts[:, None] + steps) % C]
        within = (steps < ks[:, None]).reshape(*ks.shape, max_k, *([1] * len(self.action_shape)))
        acts = np.where(within, acts, np.asarray(self.pad, dtype=self.action_dtype))
        next_state = self._stacks(ep_start, pos + (left > 0)) if with_next else None
        return HindsightBatch(state=state, goal=goal, actions=acts, k=ks, start=starts, next_state=next_state)

    def _stacks(self, ep_start: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Frame stacks ending at episode positions ``pos``, the first frame repeated before it."""
        stack_pos = np.maximum(pos[:, None] + np.arange(-self.frame_stack + 1, 1, dtype=np.int64), 0)
        return self._frames[(ep_start[:, None] + stack_pos) % self.capacity]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray | int]:
        """Everything needed to restore the buffer exactly.

        With ``copy=False`` the arrays are the buffer's own (no duplication of a large
        buffer's memory); they then change with later ``add_episode`` calls.
        """
        c = np.copy if copy else (lambda a: a)
        eps = np.array(list(self._episodes), dtype=np.int64).reshape(-1, 3)
        # Only slots ever written are saved: until the ring first wraps, those are a prefix,
        # so a large buffer early in a run does not checkpoint its empty tail.
        used = min(self.capacity, self._total_steps + self._next_id)   # frames ever added
        return {
            "capacity": self.capacity,
            "frame_shape": np.array(self.frame_shape, dtype=np.int64),
            "frame_stack": self.frame_stack,
            "frames": c(self._frames[:used]),
            "actions": c(self._actions[:used]),
            **{n: c(getattr(self, "_" + n)[:used]) for n in _META},
            "rewards": c(self._rewards[:used]),
            **({"features": c(self._features[:used])} if self.feature_dim else {}),
            "episodes": eps,
            "write": self._write,
            "num_frames": self._num_frames,
            "next_id": self._next_id,
            "total_steps": self._total_steps,
        }

    def load_state_dict(self, state) -> None:
        """Restore from :meth:`state_dict`; capacity, frame_shape and frame_stack must match."""
        cap = int(state["capacity"])
        shape = tuple(int(d) for d in np.asarray(state["frame_shape"]).reshape(-1))
        fs = int(state["frame_stack"])
        if cap != self.capacity:
            raise ValueError(f"state_dict has capacity {cap}, this buffer has capacity {self.capacity}")
        if shape != self.frame_shape:
            raise ValueError(f"state_dict has frame_shape {shape}, this buffer has frame_shape {self.frame_shape}")
        if fs != self.frame_stack:
            raise ValueError(f"state_dict has frame_stack {fs}, this buffer has frame_stack {self.frame_stack}")
        frames = np.asarray(state["frames"])
        used = frames.shape[0] if frames.ndim else -1
        if not 0 <= used <= cap or frames.shape[1:] != self.frame_shape or frames.dtype != np.uint8:
            raise ValueError(f"state_dict frames must be uint8 (at most {cap}, *{self.frame_shape}), "
                             f"got {frames.dtype} {frames.shape}")
        for n in _META:
            if np.shape(state[n]) != (used,):
                raise ValueError(f"state_dict[{n!r}] must have shape ({used},), got {np.shape(state[n])}")
        actions = np.asarray(state["actions"])
        if actions.shape != (used, *self.action_shape) or actions.dtype != self.action_dtype:
            raise ValueError(f"state_dict actions are {actions.dtype} {actions.shape}, this buffer stores "
                             f"{self.action_dtype} ({used}, *{self.action_shape})")
        eps = np.asarray(state["episodes"], dtype=np.int64).reshape(-1, 3)
        self._frames[:used] = frames
        self._frames[used:] = 0
        for n in _META:
            arr = getattr(self, "_" + n)
            arr[:used] = np.asarray(state[n])
            arr[used:] = _EMPTY_SLOT[n]
        self._actions[:used] = actions
        self._actions[used:] = self.pad
        # Checkpoints from before rewards were stored have none: those runs had reward 0.
        rewards = np.asarray(state.get("rewards", np.zeros(used, np.float32)))
        if rewards.shape != (used,):
            raise ValueError(f"state_dict['rewards'] must have shape ({used},), got {rewards.shape}")
        self._rewards[:used] = rewards
        self._rewards[used:] = 0
        if self.feature_dim:
            features = np.asarray(state.get("features", np.full((used, self.feature_dim), np.nan, np.float32)))
            if features.shape != (used, self.feature_dim):
                raise ValueError(f"state_dict['features'] must have shape ({used}, {self.feature_dim}), got "
                                 f"{features.shape}")
            self._features[:used] = features
            self._features[used:] = np.nan
        self._episodes = deque((int(i), int(s), int(m)) for i, s, m in eps)
        self._write = int(state["write"])
        self._num_frames = int(state["num_frames"])
        self._next_id = int(state["next_id"])
        self._total_steps = int(state["total_steps"])


# ---------------------------------------------------------------------- memory check
class ReplayTooLarge(ValueError):
    """The replay asked for would not fit in this machine's memory."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_replay_fits(capacity: int, frame_shape: tuple[int, ...], available: int | None = None,
                      reserve: int = 3 * 2**30, action_shape: tuple[int, ...] = ()) -> int:
    """Refuse, before training starts, a replay that this machine could not hold.

    The arrays are allocated lazily (numpy's zeros), so a too-large buffer would only fail
    when the ring fills, hours into a run. ``reserve`` bytes are kept for everything else
    (model, batches, env processes). Returns the bytes the buffer needs.
    """
    need = ReplayBuffer.bytes_needed(capacity, frame_shape, action_shape)
    available = available_memory() if available is None else available
    if available is not None and need + reserve > available:
        per_frame = need / max(1, int(capacity))
        fits = max(0, int((available - reserve) / per_frame))
        raise ReplayTooLarge(
            f"a replay of {int(capacity):,} frames of shape {tuple(frame_shape)} needs {need / 2**30:.1f} GiB, "
            f"but this machine has {available / 2**30:.1f} GiB available ({reserve / 2**30:.0f} GiB is kept for "
            f"the rest of the run); use --replay-capacity {fits} or less, or a machine with more memory")
    return need
