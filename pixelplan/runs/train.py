"""``pixelplan train``: the online driver, or the offline one when the config names a dataset.

The drivers live in small files: :mod:`~pixelplan.runs.online` (collect and train),
:mod:`~pixelplan.runs.offline` (train from a dataset), :mod:`~pixelplan.runs.checkpoints`
(save, resume, load a run's agent), :mod:`~pixelplan.runs.schedule` (when things are due, the
replay ratio, stop requests) and :mod:`~pixelplan.runs.common` (what every driver does around
its loop). This module keeps the names programs have imported from it.
"""

from __future__ import annotations

from pixelplan.runs.checkpoints import (CHECKPOINT, CHECKPOINT_FORMAT, IncompatibleCheckpoint, LoopState,
                                        checkpoint_now, load_agent, open_run)
from pixelplan.runs.common import default_out, env_factory, env_workers, parse_env_options, prepare, write_summary
from pixelplan.runs.online import EVAL_BATCH, OnlineRun, train
from pixelplan.runs.schedule import ReplayRatio, RunInterrupted, StopOnSignal, next_due

__all__ = ["CHECKPOINT", "CHECKPOINT_FORMAT", "EVAL_BATCH", "IncompatibleCheckpoint", "LoopState", "OnlineRun",
           "ReplayRatio", "RunInterrupted", "StopOnSignal", "checkpoint_now", "default_out", "env_factory",
           "env_workers", "load_agent", "next_due", "open_run", "parse_env_options", "prepare", "train",
           "write_summary"]
