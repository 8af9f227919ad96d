"""A pool of goal envs stepped side by side, in worker processes or in this one.

Collection and evaluation step many episodes at once. Rendering dominates the cost of a
DM Control step, so :class:`EnvPool` spreads its envs over ``workers`` processes (one per
core is the default the training loop uses) that step their envs while the other workers
step theirs. With ``workers=0`` the envs live in this process: cheaper for envs whose
step costs microseconds, like the grid world.

Why not Gymnasium's vector envs: they keep one process per env and step every env on
every call (finished ones included, or autoreset them); the loops here need per-row
resets with chosen seeds, steps for a subset of rows (episodes end at different times),
and a few envs per process.

Both modes give identical results: every env is reset with an explicit seed, and its
steps do not depend on which process runs it.

User envs in workers. Workers are spawned fresh: they import pixelplan (so the built-in
names and ``"package.module:factory"`` names work there as they do here) but not the
program's own ``register()`` calls. A pickled :class:`EnvFactory` therefore carries the
factory of a name the program registered, and the worker registers it before making the
env; a module-level function or class pickles by reference and is re-imported in the
worker. A factory that cannot travel (a lambda, a nested function, one defined under
``if __name__ == "__main__":``) is detected when the pool starts: the pool then steps its
envs in this process, with a one-line :class:`EnvWorkerWarning` saying how to get worker
processes (register a module-level function, or name it ``module:function``). Results do
not depend on the number of workers, so this changes speed only.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .wrappers import FrameStack

__all__ = ["EnvFactory", "EnvPool", "EnvWorkerWarning", "default_workers"]


class EnvWorkerWarning(UserWarning):
    """An env pool asked for worker processes steps its envs in this process instead."""


@dataclass(frozen=True)
class EnvFactory:
    """A picklable recipe for one env: ``make(name, **options)``, wrapped in a frame stack of
    ``frame_stack`` frames when that is more than 1."""

    name: str
    options: dict = field(default_factory=dict)
    frame_stack: int = 1

    def __call__(self):
        from . import make
        env = make(self.name, **self.options)
        # frame_stack = 1 (what the drivers use): the env itself, single frames as it makes them.
        return env if self.frame_stack == 1 else FrameStack(env, self.frame_stack)

    def __reduce__(self):
        # Pickled (to start a worker) with the factory of a name the program registered
        # itself, which the fresh worker process would not know.
        from . import runtime_registration
        return _rebuild_factory, (self.name, dict(self.options), self.frame_stack, runtime_registration(self.name))


def _rebuild_factory(name: str, options: dict, frame_stack: int, registration) -> EnvFactory:
    if registration is not None:
        from . import adopt_registration
        adopt_registration(*registration)
    return EnvFactory(name, options, frame_stack)


class _Unshippable(Exception):
    """The env factory cannot be sent to a worker process."""


#: pickled factories a worker could not unpickle, and why: later pools (a run makes two)
#: step them here at once instead of spawning workers to find out again
_UNSHIPPABLE: dict[bytes, str] = {}


def _shippable_bytes(factory: Callable) -> bytes:
    """``factory`` pickled for a spawned worker, or :class:`_Unshippable` saying why not."""
    try:
        return pickle.dumps(factory)
    except Exception as exc:  # noqa: BLE001 - PicklingError, AttributeError, TypeError...
        raise _Unshippable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _describe(factory: Callable) -> str:
    if isinstance(factory, EnvFactory):
        from . import runtime_registration
        found = runtime_registration(factory.name)
        if found is not None:
            fn = found[1]
            return f"env {factory.name!r} (factory {getattr(fn, '__qualname__', repr(fn))})"
        return f"env {factory.name!r}"
    return f"env factory {getattr(factory, '__qualname__', repr(factory))}"


def default_workers(n_envs: int) -> int:
    """One worker per core, never more than envs."""
    return max(1, min(n_envs, os.cpu_count() or 1))


def _call_env(env, name: str, calls: list | None):
    value = getattr(env.unwrapped, name)
    return value if calls is None else [value(*args) for args in calls]


def _reset(env, seed: int, options: dict | None):
    # without options, reset exactly as before options existed: a user's env may not take them
    return env.reset(seed=seed) if options is None else env.reset(seed=seed, options=options)


def _worker(conn, blob: bytes, count: int) -> None:
    # Ctrl-C reaches every process of the terminal's group; the training process handles it
    # (checkpoint, then exit) and closes its workers, which must not die under it meanwhile.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # Unpickled here rather than by multiprocessing, so that a factory the worker cannot
        # resolve (defined under the script's main guard, say) is reported, not a dead worker.
        factory = pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001
        conn.send(("unshippable", f"{type(exc).__name__}: {exc}"))
        return
    try:
        envs = [factory() for _ in range(count)]
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, payload = conn.recv()
            try:
                if command == "reset":
                    result = [_reset(envs[i], s, o) for i, (s, o) in payload]
                elif command == "step":
                    result = [envs[i].step(a) for i, a in payload]
                elif command == "call":
                    result = _call_env(envs[0], *payload)
                elif command == "close":
                    for env in envs:
                        env.close()
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", result))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # the parent is going away


def _action_value(action):
    """What one env's ``step`` gets: a Python int for a discrete action, else a float32 copy
    (a copy: the caller's batch array may change before a worker process reads it)."""
    arr = np.asarray(action)
    if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
        return int(arr)
    return np.array(arr, dtype=np.float32)


class EnvPool:
    """``n`` envs made by ``factory``; rows are addressed by index 0..n-1.

    ``reset(rows, seeds)`` and ``step(rows, actions)`` act on the given rows only and
    return their results in the same order. ``workers=0`` keeps the envs in this process;
    otherwise rows are split into ``workers`` contiguous blocks, one process each (started
    with ``spawn``, so ``factory`` must be picklable: use :class:`EnvFactory`). A factory
    that cannot reach the workers makes the pool step its envs here, with an
    :class:`EnvWorkerWarning` (see the module docstring).
    """

    def __init__(self, factory: Callable, n: int, workers: int = 0):
        if n < 1:
            raise ValueError(f"an env pool needs n >= 1 envs, got {n}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in this process), got {workers}")
        self.n = int(n)
        self.workers = min(int(workers), self.n)
        self._envs: list = []
        self._conns: list = []
        self._procs: list = []
        if self.workers:
            try:
                self._start_workers(factory)
            except _Unshippable as exc:
                self.close()
                warnings.warn(f"{_describe(factory)} cannot be sent to env worker processes ({exc}), so its "
                              "envs run in this process; to use workers, register a module-level "
                              "function or class, or name the env module.path:function", EnvWorkerWarning)
                # (stacklevel 1 and no pool size in the text: Python's default filter then shows
                # it once per env and process, not once for each of a run's pools)
                self.workers = 0
        if self.workers == 0:
            self._envs = [factory() for _ in range(self.n)]

    def _start_workers(self, factory: Callable) -> None:
        blob = _shippable_bytes(factory)
        if blob in _UNSHIPPABLE:
            raise _Unshippable(_UNSHIPPABLE[blob])
        sizes = [self.n // self.workers + (w < self.n % self.workers) for w in range(self.workers)]
        self._owner = np.repeat(np.arange(self.workers), sizes)
        self._local = np.concatenate([np.arange(s) for s in sizes])
        ctx = mp.get_context("spawn")  # fork would copy torch's threads and any GL context
        for size in sizes:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, blob, size), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            for conn in self._conns:
                self._receive(conn)
        except _Unshippable as exc:
            _UNSHIPPABLE[blob] = str(exc)
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self.n

    def reset(self, rows: Sequence[int], seeds: Sequence[int],
              options: Sequence[dict | None] | None = None) -> tuple[np.ndarray, list[dict]]:
        """Reset ``rows`` with ``seeds`` (and per-row reset ``options``, e.g. a test task's start
        state); returns their observations (stacked) and infos."""
        options = [None] * len(seeds) if options is None else list(options)
        if len(options) != len(seeds):
            raise ValueError(f"reset: {len(seeds)} seeds but {len(options)} options")
        results = self._call("reset", rows, [(int(s), o) for s, o in zip(seeds, options)])
        return np.stack([r[0] for r in results]), [r[1] for r in results]

    def step(self, rows: Sequence[int], actions):
        """Step ``rows`` with one action each (an int for ``Discrete`` envs, a float array of the
        action shape for ``Box`` envs); returns ``(obs, rewards, terminated, truncated, infos)``
        for those rows, as Gymnasium's step does (rewards float64, the env's own)."""
        results = self._call("step", rows, [_action_value(a) for a in actions])
        obs = np.stack([r[0] for r in results])
        rewards = np.array([float(r[1]) for r in results], dtype=np.float64)
        terminated = np.array([bool(r[2]) for r in results])
        truncated = np.array([bool(r[3]) for r in results])
        return obs, rewards, terminated, truncated, [r[4] for r in results]

    def get(self, name: str):
        """An attribute of the (unwrapped) envs, read from row 0, e.g. ``goal_spec``."""
        return self._on_first(name, None)

    def call(self, name: str, calls: Sequence[tuple]) -> list:
        """``[env.name(*args) for args in calls]`` on row 0's unwrapped env (pure methods only)."""
        return self._on_first(name, [tuple(c) for c in calls])

    def _on_first(self, name: str, calls):
        if self.workers == 0:
            return _call_env(self._envs[0], name, calls)
        self._conns[0].send(("call", (name, calls)))
        return self._receive(self._conns[0])

    def _call(self, command: str, rows: Sequence[int], args: list) -> list:
        rows = [int(r) for r in rows]
        if len(rows) != len(args):
            raise ValueError(f"{command}: {len(rows)} rows but {len(args)} values")
        if any(not 0 <= r < self.n for r in rows):
            raise IndexError(f"{command}: rows must be in 0..{self.n - 1}, got {rows}")
        if self.workers == 0:
            fn = (lambda env, a: _reset(env, *a)) if command == "reset" else (lambda env, a: env.step(a))
            return [fn(self._envs[r], a) for r, a in zip(rows, args)]
        per_worker: dict[int, list[tuple[int, Any]]] = {}
        order: dict[int, list[int]] = {}
        for pos, (r, a) in enumerate(zip(rows, args)):
            w = int(self._owner[r])
            per_worker.setdefault(w, []).append((int(self._local[r]), a))
            order.setdefault(w, []).append(pos)
        for w, payload in per_worker.items():  # all workers start before any is waited on
            self._conns[w].send((command, payload))
        out: list = [None] * len(rows)
        errors = []
        for w in per_worker:  # drain every worker's answer, so the pipes stay in step
            try:
                for pos, result in zip(order[w], self._receive(self._conns[w])):
                    out[pos] = result
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return out

    @staticmethod
    def _receive(conn):
        try:
            status, value = conn.recv()
        except EOFError as exc:
            raise RuntimeError("an env worker process died (out of memory, or killed?)") from exc
        if status == "unshippable":
            raise _Unshippable(value)
        if status != "ok":
            raise RuntimeError(f"an env worker process failed:\n{value}")
        return value

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
