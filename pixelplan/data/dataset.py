"""Episode datasets on disk (HDF5 through h5py; numpy only, no torch).

One file holds whole episodes, each in its own group with one chunk per array (gzip level
1, lossless)::

    /episodes/000000/frames    uint8   (L+1, *frame_shape)   the first observation, then one per action
    /episodes/000000/actions   int64   (L,)                  integer (Discrete) actions, or
                               float32 (L, *action_shape)    float (Box) actions
    /episodes/000000/rewards   float32 (L,)                  the env's reward (0 for goal tasks)
    /episodes/000000/features  float64 (L+1, F)              the env's evaluation features (optional)

Root attributes: ``format`` ("pixelplan-episodes"), ``format_version``, ``env``,
``env_options`` (JSON), ``agent``, ``seed``, ``frame_shape``, ``action_dtype`` ("int64" or
"float32"), ``action_shape`` (``[]`` for integer actions), ``episodes``, ``frames``,
``pixelplan_version`` and ``content_hash``: a SHA-256 over every episode's arrays in order,
which a run that trains from the file records, so that a changed file is refused on resume.

Every episode of a file has the same action kind and shape (checked when writing and when
verifying). Integer datasets are format 1, exactly as before float actions existed (same
arrays, same content hash; a file without the action attributes is read as int64); a float
dataset is format 2, so that a pixelplan that predates float actions refuses it by name.

HDF5 itself is not safe against a kill mid-write, so :func:`write_episodes` is meant to write a
temporary file that its caller renames into place: ``pixelplan collect`` (runs/collect.py)
writes every shard and the merged file through the drivers' atomic writer (runs/rundir.py).

Reading: :func:`read_episodes` reads one episode at a time (h5py's fancy-index reads of many
episodes at once are about 30x slower, stack-facts.md); a dataset too large for memory is
served from the file by :class:`~pixelplan.data.disk_store.DiskEpisodeStore`.
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
#: the newest format this pixelplan reads and writes: 1 = integer actions, 2 = float actions
FORMAT_VERSION = 2
INT_ACTIONS, FLOAT_ACTIONS = "int64", "float32"


@dataclass
class Episode:
    """One whole episode. ``actions`` are integers (stored int64, shape ``(L,)``, each >= 0:
    -1 pads action sequences) or floats (stored float32, shape ``(L, *action_shape)``, finite).
    An empty float64 ``(0,)`` array (``np.asarray([])``) counts as no integer actions."""

    frames: np.ndarray                 # uint8 (L+1, *frame_shape)
    actions: np.ndarray                # int64 (L,) or float32 (L, *action_shape)
    rewards: np.ndarray                # float32 (L,)
    features: np.ndarray | None = None  # (L+1, F)

    def __post_init__(self):
        self.frames = np.asarray(self.frames)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        if self.frames.dtype != np.uint8 or self.frames.ndim < 3:
            raise ValueError(f"episode frames must be uint8 (L+1, H, W[, C]), got {self.frames.dtype} {self.frames.shape}")
        n = len(self.frames) - 1
        self.actions = _normalise_actions(self.actions, n)
        if self.rewards.shape != (n,):
            raise ValueError(f"an episode of {n + 1} frames needs {n} actions and rewards, got "
                             f"{self.actions.shape} and {self.rewards.shape}")

    @property
    def action_spec(self) -> tuple[str, tuple[int, ...]]:
        """(``"int64"`` or ``"float32"``, the shape of one action: ``()`` for integers)."""
        return str(self.actions.dtype), tuple(self.actions.shape[1:])


def _normalise_actions(actions, n: int) -> np.ndarray:
    """``actions`` as int64 ``(n,)`` or float32 ``(n, *shape)``, or ValueError (one line)."""
    actions = np.asarray(actions)
    if actions.shape[:1] != (n,):
        raise ValueError(f"an episode of {n + 1} frames needs {n} actions, got actions of shape {actions.shape}")
    if np.issubdtype(actions.dtype, np.integer) or (actions.shape == (0,) and actions.dtype == np.float64):
        if actions.ndim != 1:
            raise ValueError(f"integer actions must have shape (L,), got {actions.shape}; give one index per step")
        actions = actions.astype(np.int64)
        if actions.size and actions.min() < 0:
            raise ValueError(f"integer actions must be >= 0 (-1 pads action sequences), got {actions.min()}")
        return actions
    if np.issubdtype(actions.dtype, np.floating):
        actions = actions.astype(np.float32)
        if not np.isfinite(actions).all():
            raise ValueError("float actions must be finite, got NaN or infinity")
        return actions
    raise ValueError(f"actions must be integers or floats, got dtype {actions.dtype}")


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
    # Integer actions are hashed as int64, exactly as before float actions existed, so an
    # integer dataset's hash is unchanged; float actions as float32 with their shape.
    actions = episode.actions.astype(np.int64 if episode.actions.dtype.kind in "iu" else np.float32)
    for arr in (episode.frames, actions, episode.rewards.astype(np.float32)):
        arr = np.ascontiguousarray(arr)
        hasher.update(str(arr.shape).encode())
        hasher.update(arr.tobytes())


def write_episodes(path: str | os.PathLike, episodes: Iterable[Episode], attrs: dict[str, Any]) -> dict[str, Any]:
    """Write ``episodes`` to a new HDF5 file at ``path`` (not atomically: see the module doc);
    returns the root attributes written, ``content_hash`` included."""
    h5py = _h5py()
    hasher = hashlib.sha256()
    count = frames = 0
    shape = spec = None
    with h5py.File(path, "w") as f:
        group = f.create_group("episodes")
        for ep in episodes:
            if shape is None:
                shape = ep.frames.shape[1:]
            elif ep.frames.shape[1:] != shape:
                raise DatasetError(f"episode {count} has frames of shape {ep.frames.shape[1:]}, the others {shape}")
            actions = _normalise_actions(ep.actions, len(ep.frames) - 1)   # as stored, whatever was set since
            if spec is not None and len(actions) == 0:
                actions = np.zeros((0, *spec[1]), spec[0])     # an episode without actions fits any kind
            ep = Episode(frames=ep.frames, actions=actions, rewards=ep.rewards, features=ep.features)
            spec = spec or ep.action_spec
            check_action_spec(ep.action_spec, spec, f"episode {count}")
            g = group.create_group(f"{count:06d}")
            g.create_dataset("frames", data=ep.frames, chunks=ep.frames.shape, compression="gzip",
                             compression_opts=1)
            g.create_dataset("actions", data=ep.actions)
            g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            if ep.features is not None:
                g.create_dataset("features", data=np.asarray(ep.features, dtype=np.float64))
            episode_digest(hasher, ep)
            count += 1
            frames += len(ep.frames)
        dtype, action_shape = spec or (INT_ACTIONS, ())
        out = {**attrs, "format": FORMAT, "format_version": 1 if dtype == INT_ACTIONS else 2, "episodes": count,
               "frames": frames, "frame_shape": list(shape or ()), "action_dtype": dtype,
               "action_shape": list(action_shape), "content_hash": hasher.hexdigest()}
        for key, value in out.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return out


def check_action_spec(got: tuple[str, tuple[int, ...]], want: tuple[str, tuple[int, ...]], what: str) -> None:
    """Refuse, in one line, actions of another kind or shape than the dataset's."""
    if tuple(got[1]) != tuple(want[1]) or got[0] != want[0]:
        raise DatasetError(f"{what} has {_describe(got)} actions, but the dataset holds {_describe(want)} actions; "
                           f"every episode of a dataset needs the same action kind and shape")


def _describe(spec) -> str:
    dtype, shape = spec
    return "integer" if dtype == INT_ACTIONS else f"{dtype} {tuple(shape)}"


def action_spec(attrs: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """The dataset's (action dtype, action shape) from its attrs (files from before float
    actions have integer actions and no such attributes)."""
    return str(attrs.get("action_dtype", INT_ACTIONS)), tuple(int(d) for d in attrs.get("action_shape", ()))


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
    if action_spec(attrs)[0] not in (INT_ACTIONS, FLOAT_ACTIONS):
        raise DatasetError(f"{path} has action_dtype {attrs['action_dtype']!r}; this pixelplan reads "
                           f"{INT_ACTIONS} or {FLOAT_ACTIONS}")
    return attrs


def read_episodes(path: str | os.PathLike) -> Iterator[Episode]:
    """Every episode of the file, in order, one read per episode."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        group = f["episodes"]
        for name in sorted(group):
            yield _read_episode(path, group, name)


def read_some_episodes(path: str | os.PathLike, count: int, rng: np.random.Generator) -> list[Episode]:
    """``count`` episodes of the file drawn without replacement (all of them when it holds
    fewer), in file order, one read per episode: a sample for diagnostics, without reading the
    whole file."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        group = f["episodes"]
        names = sorted(group)
        if count < len(names):
            names = [names[i] for i in np.sort(rng.choice(len(names), count, replace=False))]
        return [_read_episode(path, group, name) for name in names]


def _read_episode(path, group, name: str) -> Episode:
    """Episode ``name`` of an open file's ``episodes`` group, one read per array."""
    g = group[name]
    try:
        return Episode(frames=g["frames"][()], actions=g["actions"][()], rewards=g["rewards"][()],
                       features=g["features"][()] if "features" in g else None)
    except ValueError as exc:
        raise DatasetError(f"{path}: episode {name}: {exc}") from None


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Read every episode and check the content hash (and the episode and frame counts)
    against the file's own; returns the attrs."""
    attrs = read_attrs(path)
    spec = action_spec(attrs)
    hasher = hashlib.sha256()
    count = frames = 0
    for ep in read_episodes(path):
        check_action_spec(ep.action_spec, spec, f"{path}: episode {count}")
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
