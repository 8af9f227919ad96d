"""``pixelplan sweep``: agents x envs x seeds, one after the other or in parallel processes,
ending with the results table and learning curves (``runs/table.py``).

Each run is an ordinary ``pixelplan train`` in its own process and run directory,
``<out>/<env>-<label>-seed<seed>`` (``:`` and ``/`` in the env name become ``-``; the label
is the agent's name, or ``<agent>-<label_suffix>`` for an ablation). Flags after ``--`` go
to every run unchanged, so a sweep compares agents on identical envs, goal sets, budgets
and shared hyperparameters. Re-running the same sweep resumes each unfinished run and
leaves finished ones as they are (``train`` resumes from a run's checkpoint; a run whose
``summary.json`` shows it reached its budget is not started at all), then writes the table
again. Every run's flags are checked (its config resolved) before the first run starts.

With ``--ray`` the runs are Ray tasks on a cluster instead (``runs/cluster.py``): the same
commands, run directories, logs and table.

With ``parallel`` > 1, that many runs go at once, each with ``cores // parallel`` torch
threads so they do not fight over cores. A run that fails does not stop the others; the
sweep prints the run's error (the ``pixelplan train: error:`` line, or the last line of its
traceback) where it reports the failure, its log (``<run dir>.log``) holds the whole output,
and the sweep's exit status says it failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepJob:
    env: str
    agent: str
    seed: int
    label: str
    out: Path

    def train_args(self, extra: list[str]) -> list[str]:
        """The ``pixelplan train`` flags of this run (``extra`` last, as the user gave them)."""
        return ["--env", self.env, "--agent", self.agent, "--seed", str(self.seed), "--label", self.label,
                "--out", str(self.out), *extra]

    def command(self, threads: int, extra: list[str], python: str | None = None) -> list[str]:
        return [python or sys.executable, "-m", "pixelplan", "train", *self.train_args([]),
                "--threads", str(threads), "--no-progress", *extra]

    @property
    def logfile(self) -> Path:
        return self.out.parent / f"{self.out.name}.log"


def safe_name(text: str) -> str:
    for ch in (":", "/", "\\"):
        text = text.replace(ch, "-")
    return text


def plan_jobs(agents: list[str], envs: list[str], seeds: list[int], out, label_suffix: str | None = None) -> list[SweepJob]:
    """The runs of a sweep, seed-major (every agent and env gets seed 0 before any seed 1)."""
    from pixelplan.agents import AGENTS

    for agent in agents:
        if agent not in AGENTS:
            raise ValueError(f"unknown agent {agent!r}; known agents: {', '.join(sorted(AGENTS))}")
    if not agents or not envs or not seeds:
        raise ValueError("a sweep needs at least one agent, one env and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    jobs = []
    for seed in seeds:
        for env in envs:
            for agent in agents:
                label = f"{agent}-{label_suffix}" if label_suffix else agent
                jobs.append(SweepJob(env, agent, seed, label, Path(out) / f"{safe_name(env)}-{label}-seed{seed}"))
    return jobs


def finished_jobs(jobs: list[SweepJob], extra: list[str]) -> list[SweepJob]:
    """The jobs whose run already reached its budget (``run_finished``). Resolving each run's
    config here also checks every run's flags before any run starts: a bad flag exits with
    pixelplan train's message (status 2) and nothing written."""
    from pixelplan.runs.common import run_finished, train_config

    return [job for job in jobs if run_finished(job.out, train_config(job.train_args(extra)))]


def failure_reason(logfile, start: int = 0) -> str:
    """The line that says why a run failed, from its log's output after byte ``start``: the
    last ``pixelplan <command>: error:`` line, else the last line (a traceback's exception),
    else a note that the run printed nothing."""
    try:
        with open(logfile, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {logfile}: {exc})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]  # splits at "\r" too (tqdm)
    for line in reversed(lines):
        if line.startswith("pixelplan ") and ": error:" in line:
            return line
    return lines[-1] if lines else "(the run printed nothing)"


def run_sweep(jobs: list[SweepJob], extra: list[str], parallel: int = 1, log=print,
              header: str | None = None) -> list[SweepJob]:
    """Run every job (``parallel`` at a time); returns the jobs that failed. ``header`` is
    logged once every job's flags have been checked."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    threads = max(1, (os.cpu_count() or 1) // parallel)
    failed: list[SweepJob] = []

    done = set(finished_jobs(jobs, extra))
    if header:
        log(header)

    def run(job: SweepJob) -> None:
        if job in done:
            log(f"[sweep] finished already {job.out.name} (not run again)")
            return
        job.out.parent.mkdir(parents=True, exist_ok=True)
        logfile = job.logfile
        started = time.perf_counter()
        log(f"[sweep] start {job.out.name}")
        with open(logfile, "a") as f:
            start = f.tell()  # the log is appended to by every attempt; this one's output starts here
            code = subprocess.run(job.command(threads, extra), stdout=f, stderr=subprocess.STDOUT).returncode
        status = "done" if code == 0 else f"FAILED (exit {code}, see {logfile})"
        log(f"[sweep] {status} {job.out.name} in {time.perf_counter() - started:.0f} s")
        if code != 0:
            log(f"[sweep]   {job.out.name}: {failure_reason(logfile, start)}")
            failed.append(job)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(run, jobs))
    return failed
