"""Episode datasets on disk (HDF5 through h5py; numpy only, no torch).

One file holds whole episodes, each in its own group with one chunk per array (gzip level
1, lossless)::

    /episodes/000000/frames    uint8   (L+1, *frame_shape)   the first observation, then one per action
    /episodes/000000/actions   int64   (L,)
    /episodes/000000/rewards   float32 (L,)                  the env's reward (0 for goal tasks)
    /episodes/000000/features  float64 (L+1, F)              the env's evaluation features (optional)

Root attributes: ``format`` ("pixelplan-episodes"), ``format_version``, ``env``,
``env_options`` (JSON), ``agent``, ``seed``, ``frame_shape``, ``episodes``, ``frames``,
``pixelplan_version`` and ``content_hash``: a SHA-256 over every episode's arrays in order,
which a run that trains from the file records, so that a changed file is refused on resume.

HDF5 itself is not safe against a kill mid-write, so :func:`write_episodes` is meant to write a
temporary file that its caller renames into place: ``pixelplan collect`` (runs/collect.py)
writes every shard and the merged file through the drivers' atomic writer (runs/rundir.py).

Reading: :func:`read_episodes` reads one episode at a time (h5py's fancy-index reads of many
episodes at once are about 30x slower, stack-facts.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

FORMAT = "pixelplan-episodes"
FORMAT_VERSION = 1


@dataclass
class Episode:
    frames: np.ndarray                 # uint8 (L+1, *frame_shape)
    actions: np.ndarray                # int64 (L,)
    rewards: np.ndarray                # float32 (L,)
    features: np.ndarray | None = None  # (L+1, F)

    def __post_init__(self):
        self.frames = np.asarray(self.frames)
        self.actions = np.asarray(self.actions)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        if self.frames.dtype != np.uint8 or self.frames.ndim < 3:
            raise ValueError(f"episode frames must be uint8 (L+1, H, W[, C]), got {self.frames.dtype} {self.frames.shape}")
        n = len(self.frames) - 1
        if self.actions.shape[:1] != (n,) or self.rewards.shape != (n,):
            raise ValueError(f"an episode of {n + 1} frames needs {n} actions and rewards, got "
                             f"{self.actions.shape} and {self.rewards.shape}")


class DatasetError(ValueError):
    """A file that is not a readable pixelplan dataset, or one that does not fit its use."""


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise DatasetError("datasets need h5py: pip install h5py") from None
    return h5py


def episode_digest(hasher, episode: Episode) -> None:
    """Feed one episode into a running SHA-256 (the content hash's definition)."""
    for arr in (episode.frames, episode.actions.astype(np.int64), episode.rewards.astype(np.float32)):
        arr = np.ascontiguousarray(arr)
        hasher.update(str(arr.shape).encode())
        hasher.update(arr.tobytes())


def write_episodes(path: str | os.PathLike, episodes: Iterable[Episode], attrs: dict[str, Any]) -> dict[str, Any]:
    """Write ``episodes`` to a new HDF5 file at ``path`` (not atomically: see the module doc);
    returns the root attributes written, ``content_hash`` included."""
    h5py = _h5py()
    hasher = hashlib.sha256()
    count = frames = 0
    shape = None
    with h5py.File(path, "w") as f:
        group = f.create_group("episodes")
        for ep in episodes:
            if shape is None:
                shape = ep.frames.shape[1:]
            elif ep.frames.shape[1:] != shape:
                raise DatasetError(f"episode {count} has frames of shape {ep.frames.shape[1:]}, the others {shape}")
            g = group.create_group(f"{count:06d}")
            g.create_dataset("frames", data=ep.frames, chunks=ep.frames.shape, compression="gzip",
                             compression_opts=1)
            g.create_dataset("actions", data=ep.actions.astype(np.int64))
            g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            if ep.features is not None:
                g.create_dataset("features", data=np.asarray(ep.features, dtype=np.float64))
            episode_digest(hasher, ep)
            count += 1
            frames += len(ep.frames)
        out = {**attrs, "format": FORMAT, "format_version": FORMAT_VERSION, "episodes": count,
               "frames": frames, "frame_shape": list(shape or ()), "content_hash": hasher.hexdigest()}
        for key, value in out.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return out


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a dataset file (lists and dicts decoded), checked for format."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path}; write one with `pixelplan collect --out {path}`")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise DatasetError(f"{path} is not a readable HDF5 file ({exc})") from None
    if attrs.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a pixelplan dataset (no format={FORMAT!r} attribute)")
    if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise DatasetError(f"{path} has dataset format {attrs['format_version']}; this pixelplan reads "
                           f"up to {FORMAT_VERSION}: upgrade pixelplan")
    return attrs


def read_episodes(path: str | os.PathLike) -> Iterator[Episode]:
    """Every episode of the file, in order, one read per episode."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        group = f["episodes"]
        for name in sorted(group):
            g = group[name]
            yield Episode(frames=g["frames"][()], actions=g["actions"][()], rewards=g["rewards"][()],
                          features=g["features"][()] if "features" in g else None)


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Read every episode and check the content hash (and the episode and frame counts)
    against the file's own; returns the attrs."""
    attrs = read_attrs(path)
    hasher = hashlib.sha256()
    count = frames = 0
    for ep in read_episodes(path):
        episode_digest(hasher, ep)
        count += 1
        frames += len(ep.frames)
    if (count, frames) != (int(attrs["episodes"]), int(attrs["frames"])) or hasher.hexdigest() != attrs["content_hash"]:
        raise DatasetError(f"{path} does not match its own content hash (changed or damaged since it was "
                           f"written); collect it again")
    return attrs


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
