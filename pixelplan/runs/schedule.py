"""Clocks for the drivers: when the next evaluation, log or checkpoint is due, how many updates
a replay ratio asks for, and a stop request on SIGINT/SIGTERM honoured at a safe point."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass


def next_due(due: int, now: int, every: int) -> int:
    """The first multiple-of-``every`` step after ``now``, counting on from ``due`` (a schedule
    that a round of many steps may overshoot by more than one interval)."""
    while due <= now:
        due += every
    return due


@dataclass(frozen=True)
class ReplayRatio:
    """Training keeps pace with collection: from ``start`` env steps on, the samples trained on
    (updates x ``samples_per_update``, the sampler's ``samples_per_batch``: hindsight tuples for
    GLAMOR, windows for a sequence sampler) stay at ``ratio`` x the env steps collected since.

    Unit: samples per env step. GLAMOR's replay ratio of 8 with batches of 200 tuples is one
    update every 25 env steps.
    """

    ratio: float
    start: int
    samples_per_update: int

    def due(self, env_steps: int, updates: int) -> int:
        """Updates to make now, given the env steps collected and the updates made so far."""
        learn_steps = max(0, env_steps - self.start)
        return max(0, int(learn_steps * self.ratio // self.samples_per_update) - updates)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving a checkpoint; re-running resumes it."""


class StopOnSignal:
    """Turn the first SIGINT or SIGTERM into a request the loop honours at its next safe
    point; a second SIGINT aborts at once (KeyboardInterrupt), as a user pressing Ctrl-C
    twice expects. Only in the main thread (signal handlers cannot be set elsewhere)."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\npixelplan: {self.signal_name} received; saving a checkpoint at the end of this round "
              f"(Ctrl-C again to abort without it)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
