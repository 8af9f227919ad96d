"""A run directory that no fault can break: one process at a time, files replaced atomically.

Every file of a run directory is written as a whole or not at all: the bytes go to a
temporary file with a unique name in the same directory, which is flushed, fsynced and then
renamed over the old file (and the directory is fsynced, so the rename survives a power
cut). A process killed at any point leaves either the old file or the new one, plus at worst
a stray temporary file, which the next start removes.

One process at a time: :class:`RunLock` holds an exclusive ``flock`` on ``.pixelplan.lock``
in the run directory for as long as the run lives. The kernel drops it when the process
dies, however it dies, so a killed run never leaves a stale lock. A second process on the
same directory is refused with the holder's pid.

Disk full: a write that runs out of space removes its temporary file (which would otherwise
keep the disk full), leaves the previous file intact and raises :class:`DiskFull`, whose
message says how much space the write needs and how much is free.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Callable

__all__ = ["LOCK_NAME", "TMP_PREFIX", "DiskFull", "RunLocked", "RunLock", "write_atomically", "write_text_atomically",
           "remove_stale_temporaries", "fsync_dir"]

LOCK_NAME = ".pixelplan.lock"
#: every temporary file this module writes starts with this, so stale ones can be found
TMP_PREFIX = ".tmp-"

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class RunLocked(ValueError):
    """Another live process holds the run directory."""


class DiskFull(OSError):
    """A write ran out of disk space; the file it would have replaced is intact."""


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` (or process death)."""

    def __init__(self, run_dir: str | os.PathLike, command: str = "pixelplan train"):
        self.run_dir = Path(run_dir)
        self.command = command
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise RunLocked(f"run directory {self.run_dir} is in use by {who} ({self.command}); wait for it "
                                f"to finish or stop it, or use another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(directory: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def disk_full_error(path: Path, what: str, need_bytes: int | None, keep_note: str) -> DiskFull:
    free = free_bytes(path.parent)
    need = f"needs about {_mib(need_bytes)}" if need_bytes else "needs more space"
    have = f", {_mib(free)} free there" if free is not None else ""
    return DiskFull(errno.ENOSPC, f"no space left on device writing the {what} {path} ({need}{have}); "
                                  f"{keep_note}free some space and re-run the same command to resume")


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:,.1f} MiB"


def write_atomically(path: str | os.PathLike, write: Callable, what: str = "file",
                     need_bytes: int | None = None, keep_previous: bool = False, to_path: bool = False) -> None:
    """Replace ``path`` with what ``write(f)`` writes to a binary file, atomically.

    With ``keep_previous`` the file being replaced stays as ``<stem>.prev<suffix>`` (a hard
    link, so nothing is copied), a fallback should the new one ever prove unreadable.
    ``need_bytes`` is the expected size, for the message should the disk fill up. With
    ``to_path``, ``write`` gets the temporary file's path instead of an open file, for
    writers that open files themselves (h5py).
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    if keep_previous and path.exists():
        # The fallback before last goes first, so that at most two versions and the one being
        # written are on disk at once; the current file stays as the fallback meanwhile.
        previous_path(path).unlink(missing_ok=True)
    try:
        if to_path:
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        else:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_as_previous(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, Exception) and _is_disk_full(exc):
            kept = f"the previous {what} is intact; " if path.exists() else ""
            raise disk_full_error(path, what, need_bytes, kept) from exc
        raise


def _keep_as_previous(path: Path) -> None:
    """Hard-link ``path`` as its ``.prev`` fallback; where the filesystem has no hard links,
    go without the fallback (with a warning) rather than fail the write."""
    prev = previous_path(path)
    staged = prev.with_name(f"{TMP_PREFIX}{prev.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.link(path, staged)
    except OSError as exc:
        if _is_disk_full(exc):
            raise
        warnings.warn(f"cannot keep {path.name} as {prev.name} ({exc.strerror}): this filesystem has no hard "
                      f"links; running without the fallback checkpoint", stacklevel=3)
        return
    os.replace(staged, prev)


def write_text_atomically(path: str | os.PathLike, text: str, what: str = "file") -> None:
    write_atomically(path, lambda f: f.write(text.encode()), what=what, need_bytes=len(text.encode()))


def previous_path(path: str | os.PathLike) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by killed writers (call it holding the run's lock)."""
    removed = []
    legacy = [Path(run_dir) / "checkpoint.tmp"]   # the fixed name pixelplan used before
    for p in [*Path(run_dir).glob(f"{TMP_PREFIX}*"), *[q for q in legacy if q.exists()]]:
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
