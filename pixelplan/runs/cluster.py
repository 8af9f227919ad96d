"""Sweeps and dataset collection on a Ray cluster: ``pixelplan sweep --ray`` and
``pixelplan collect --ray`` (docs/cluster.md).

**A run is a Ray task.** Each (agent, env, seed) of a sweep becomes one task that asks for
``cpus_per_run`` CPUs (and ``gpus_per_run`` GPUs) and runs the very ``pixelplan train``
command a local sweep runs, in a child process, with its output appended to the same
``<run dir>.log``. So the run directories, the logs, the table and the learning curves are
those of a local sweep. Plain tasks, not Ray Tune trials: a sweep here is a fixed grid with
no search algorithm, scheduler or early stopping, and every run already checkpoints and
resumes itself; Tune would add its own trial state and checkpoint protocol beside ours, and
a second place where a run's state lives.

**Lost workers.** A node that dies (or a raylet that is killed) fails its tasks with a system
error; Ray resubmits them (``max_retries``) to a live node, and the retried ``pixelplan
train`` resumes from the run's last checkpoint: the run loses the time since that
checkpoint, and its metrics continue (``runs/logging.py`` trims what was logged after it).
A run killed by a signal on a live node (the kernel's OOM killer, a node shutting down) is
retried the same way. A run that *fails* (``pixelplan train`` exits with an error: bad
flags, a bad env) is not retried: it would fail again. Each attempt appends a line to
``<run dir>.attempts.jsonl`` (node, host, pid, time), which is how the sweep reports
"running" and "retried", and a record of where each run went.

**Storage.** The run directories must be on storage every node sees at the same path (a
shared filesystem: NFS, a cluster filesystem, or one machine's disk when the whole cluster
is that machine). The driver writes a token file into the sweep's directory before the
first task; each task checks it sees that token before it starts, and fails the run with a
clear message (it is not retried) on a node that does not. A retried run waits (up to
``lock_wait`` seconds) for its previous attempt's lock on the run directory to go: on a
network filesystem, the lock of a dead node's process lasts until its lease expires.

**Finished runs** are never run again: the driver skips every run whose ``summary.json``
shows it reached its budget before it submits anything, and ``pixelplan train`` on a
finished run trains nothing. Re-running the sweep command resumes the sweep.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pixelplan.runs.rundir import LOCK_NAME, RunLock, RunLocked, write_text_atomically
from pixelplan.runs.sweep import SweepJob, failure_reason, finished_jobs

INSTALL_HINT = "pip install 'pixelplan[ray]' (or .venv/bin/pip install 'ray>=2.40')"
TOKEN_NAME = ".pixelplan-cluster.json"
POLL_SECONDS = 1.0


class RunKilled(RuntimeError):
    """``pixelplan train`` was killed by a signal: the task is retried (the run resumes)."""


@dataclass
class Attempt:
    """One line of ``<run dir>.attempts.jsonl``."""
    attempt: int
    node: str
    host: str
    pid: int
    started: float


# ------------------------------------------------------------------------- connecting
def import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, log=print) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the one this machine belongs to;
    ``HOST:PORT``: its head), or start a local Ray instance when ``address`` is None. Returns
    whether this call connected (and so should disconnect at the end); a program that called
    ``ray.init`` itself keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _probe(address)
    kwargs = dict(log_to_driver=False, logging_level="warning")
    try:
        if address is None:
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at --address {address}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot start or reach {where} ({first}); start a cluster with `ray start --head` "
                         f"and give its address, or drop --address for a local instance") from None
    resources = ray.cluster_resources()
    log(f"[ray] connected: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs")
    return True


def _probe(address: str) -> None:
    """Refuse at once an address where nothing listens (Ray itself waits a minute or more)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address must be auto or HOST:PORT (the head's GCS port, 6379 by default), got {address!r}")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise ValueError(f"no Ray head answers at --address {address} ({exc.strerror or exc}): start one there with "
                         f"`ray start --head --port {port}`, or check the address") from None


def write_token(directory: Path) -> str:
    """Write a fresh token into ``directory`` (the sweep's or the dataset's): tasks check
    they see it, which proves the directory is on storage their node shares."""
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    write_text_atomically(directory / TOKEN_NAME, json.dumps({"token": token, "host": socket.gethostname(),
                                                               "cwd": os.getcwd()}) + "\n", what="cluster token")
    return token


def check_token(directory: Path, token: str) -> str | None:
    """None when this node sees ``directory``'s token, else why not (one line)."""
    try:
        seen = json.loads((directory / TOKEN_NAME).read_text()).get("token")
    except (OSError, ValueError):
        seen = None
    if seen == token:
        return None
    return (f"{directory} is not reachable from node {socket.gethostname()} (it does not see the driver's "
            f"{TOKEN_NAME} there): put --out on storage every node mounts at the same path, e.g. a shared "
            f"filesystem (docs/cluster.md)")


def _node_id() -> str:
    import ray
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a task (tests call the task body directly)
        return "local"


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it when the task's worker dies, so a lost
    worker never leaves a ``pixelplan train`` running on (and locking) its run directory."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------- a sweep's task
def train_task(job: SweepJob, extra: list[str], threads: int, token: str, cwd: str, lock_wait: float) -> dict:
    """The body of one run's Ray task (on whatever node Ray picked)."""
    unreachable = check_token(job.out.parent, token)
    if unreachable is not None:
        return {"status": "unreachable", "reason": unreachable}
    if not Path(cwd).is_dir():
        return {"status": "unreachable", "reason": f"the sweep's working directory {cwd} does not exist on node "
                                                   f"{socket.gethostname()}: start the sweep from a directory "
                                                   f"every node has (a shared filesystem)"}
    attempts = job.out.parent / f"{job.out.name}.attempts.jsonl"
    previous = len(read_attempts(attempts))
    with open(attempts, "a") as f:
        f.write(json.dumps(Attempt(previous + 1, _node_id(), socket.gethostname(), os.getpid(),
                                   round(time.time(), 3)).__dict__) + "\n")
    _wait_for_lock(job.out, lock_wait)
    with open(job.logfile, "a") as log:
        start = log.tell()
        code = subprocess.run(job.command(threads, extra), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                              preexec_fn=_die_with_parent).returncode
    if code < 0:
        raise RunKilled(f"{job.out.name}: pixelplan train was killed by signal {-code}")
    if code != 0:
        return {"status": "failed", "code": code, "reason": failure_reason(job.logfile, start)}
    return {"status": "done"}


def _wait_for_lock(run_dir: Path, timeout: float) -> None:
    """Wait until no process holds the run's lock (a previous attempt's, still alive or whose
    lease has not expired yet), for at most ``timeout`` seconds; then let train decide."""
    if not (run_dir / LOCK_NAME).exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            RunLock(run_dir).acquire().release()
            return
        except RunLocked:
            if time.monotonic() > deadline:
                return
            time.sleep(1.0)
        except OSError:
            return


def read_attempts(path: Path) -> list[Attempt]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(Attempt(**json.loads(line)))
        except (ValueError, TypeError):
            continue     # a line cut short by a killed writer
    return out


# ------------------------------------------------------------------------- a sweep's driver
def run_sweep_ray(jobs: list[SweepJob], extra: list[str], *, address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0, max_retries: int = 3, lock_wait: float = 120.0,
                  log=print, header: str | None = None) -> list[SweepJob]:
    """Run every job as a Ray task; returns the jobs that failed (as ``run_sweep`` does);
    ``header`` is logged once every job's flags have been checked."""
    if cpus_per_run <= 0 or gpus_per_run < 0 or max_retries < 0:
        raise ValueError(f"--cpus-per-run must be > 0, --gpus-per-run >= 0 and --max-retries >= 0, got "
                         f"{cpus_per_run}, {gpus_per_run} and {max_retries}")
    given = {SweepJob(j.env, j.agent, j.seed, j.label, j.out.absolute()): j for j in jobs}  # one path on every node
    jobs = list(given)
    done = set(finished_jobs(jobs, extra))             # also checks every run's flags, before anything runs
    ray = import_ray()
    if header:
        log(header)
    if len(done) == len(jobs):
        for job in jobs:
            log(f"[sweep] finished already {job.out.name} (not run again)")
        log(f"[sweep] summary: 0 finished, {len(done)} finished already, 0 failed, 0 retried")
        return []
    connected = connect(address, log)
    try:
        return [given[j] for j in _drive(ray, jobs, done, extra, cpus_per_run, gpus_per_run, max_retries,
                                         lock_wait, log)]
    finally:
        if connected:
            ray.shutdown()


def _drive(ray, jobs, done, extra, cpus_per_run, gpus_per_run, max_retries, lock_wait, log) -> list[SweepJob]:
    resources = ray.cluster_resources()
    if cpus_per_run > resources.get("CPU", 0) or gpus_per_run > resources.get("GPU", 0):
        raise ValueError(f"each run asks for {cpus_per_run:g} CPUs and {gpus_per_run:g} GPUs, but the cluster has "
                         f"{resources.get('CPU', 0):g} and {resources.get('GPU', 0):g}: lower --cpus-per-run / "
                         f"--gpus-per-run, or add nodes")
    tokens = {parent: write_token(parent) for parent in sorted({j.out.parent for j in jobs})}
    remote = ray.remote(train_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries,
                                            retry_exceptions=[RunKilled])
    threads = max(1, int(cpus_per_run))
    pending: dict = {}
    seen: dict[SweepJob, int] = {}
    started: dict[SweepJob, float] = {}
    for job in jobs:
        if job in done:
            log(f"[sweep] finished already {job.out.name} (not run again)")
            continue
        attempts = job.out.parent / f"{job.out.name}.attempts.jsonl"
        seen[job] = len(read_attempts(attempts))       # attempts of earlier sweeps are not this one's
        pending[remote.remote(job, extra, threads, tokens[job.out.parent], os.getcwd(), lock_wait)] = job
    failed: list[SweepJob] = []
    counts = {"done": 0, "failed": 0, "retried": 0, "skipped": len(done)}
    log(f"[sweep] {len(pending)} run(s) submitted as Ray tasks ({cpus_per_run:g} CPUs, {gpus_per_run:g} GPUs "
        f"each, up to {max_retries} retries)")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
        for job in pending.values():
            _report_attempts(job, seen, started, counts, log)
        for ref in ready:
            job = pending.pop(ref)
            _report_attempts(job, seen, started, counts, log)
            took = f" in {time.time() - started[job]:.0f} s" if job in started else ""
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - every way a task can end after its last retry
                result = {"status": "lost", "reason": _one_line(exc)}
            if result["status"] == "done":
                counts["done"] += 1
                log(f"[sweep] done {job.out.name}{took}")
                continue
            counts["failed"] += 1
            failed.append(job)
            what = {"failed": f"FAILED (exit {result.get('code')}, see {job.logfile})",
                    "unreachable": "FAILED (run directory not reachable)",
                    "lost": f"FAILED (lost after {max_retries} retries, see {job.logfile})"}[result["status"]]
            log(f"[sweep] {what} {job.out.name}{took}")
            log(f"[sweep]   {job.out.name}: {result['reason']}")
    log(f"[sweep] summary: {counts['done']} finished, {counts['skipped']} finished already, {counts['failed']} "
        f"failed, {counts['retried']} retried")
    return failed


def _report_attempts(job: SweepJob, seen: dict, started: dict, counts: dict, log) -> None:
    """Print a line for each new attempt of ``job`` since the last look: its first attempt in
    this sweep is "running", each later one "retried"."""
    attempts = read_attempts(job.out.parent / f"{job.out.name}.attempts.jsonl")
    for a in attempts[seen[job]:]:
        where = f"node {a.node[:12]} ({a.host})"
        if job not in started:
            started[job] = a.started
            log(f"[sweep] running {job.out.name} on {where}")
        else:
            counts["retried"] += 1
            log(f"[sweep] retried {job.out.name} (attempt {a.attempt}) on {where}: the previous attempt's worker "
                f"was lost; it resumes from the run's last checkpoint")
    seen[job] = len(attempts)


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RunKilled):
        return f"{cause} in every attempt"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


# ------------------------------------------------------------------------- collection
def collect_shard_task(shard_path: str, make_shard, token: str) -> str:
    """The body of one shard's Ray task: ``make_shard()`` writes the shard (atomically)."""
    unreachable = check_token(Path(shard_path).parent, token)
    if unreachable is not None:
        raise ValueError(unreachable)
    make_shard()
    return shard_path


def check_collect_options(cpus_per_task: float, parallel: int | None, **_):
    """Refuse bad ``collect --ray`` options, or a missing Ray, before anything is written; returns ray."""
    if cpus_per_task <= 0 or (parallel is not None and parallel < 1):
        raise ValueError(f"collect --cpus-per-task must be > 0 and --parallel >= 1, got {cpus_per_task} and {parallel}")
    return import_ray()


def run_shards_ray(parts: Path, shards: dict[int, object], *, address: str | None, cpus_per_task: float,
                   parallel: int | None, max_retries: int = 3, log=print, progress=None) -> None:
    """Write each shard ``k`` with its ``shards[k]()`` as one Ray task, at most ``parallel`` at a
    time (None: as many as the cluster schedules). A lost worker's shard is retried from its
    start (a shard is a pure function of the seed and its episode indices)."""
    ray = check_collect_options(cpus_per_task, parallel)
    connected = connect(address, log)
    try:
        token = write_token(parts)
        remote = ray.remote(collect_shard_task).options(num_cpus=cpus_per_task, max_retries=max_retries)
        todo = sorted(shards)
        pending: dict = {}
        while todo or pending:
            while todo and (parallel is None or len(pending) < parallel):
                k = todo.pop(0)
                pending[remote.remote(str(shards[k].path), shards[k], token)] = k
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001
                    for other in pending:
                        ray.cancel(other, force=True)
                    raise ValueError(f"collect --ray: shard {k} failed: {_one_line(exc)}") from None
                if progress is not None:
                    progress(k)
    finally:
        (parts / TOKEN_NAME).unlink(missing_ok=True)
        if connected:
            ray.shutdown()
