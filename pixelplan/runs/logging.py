"""Metrics of a run: ``metrics.jsonl`` (one JSON object per log step) and TensorBoard events.

On resume, lines logged after the checkpoint being resumed are dropped (they will be
logged again: the run continues exactly from the checkpoint), and TensorBoard purges its
events after that step, so a resumed run's metrics continue instead of restarting or
repeating. The trimmed file replaces the old one atomically, so a kill during the resume
loses nothing.

A line torn by a kill or a full disk in the middle of an append can only be the last one:
it is dropped with a warning. A bad line anywhere else is an error naming the file and
the line.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from pixelplan.runs.rundir import DiskFull, _is_disk_full, disk_full_error, write_text_atomically

METRICS = "metrics.jsonl"


class MetricsFileError(ValueError):
    """metrics.jsonl holds a line that is not a metrics record (other than a torn last line)."""


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            lines = [line for line, record in _parse(self.path) if record["step"] <= resume_step]
            write_text_atomically(self.path, "".join(line + "\n" for line in lines), what="metrics file")
        self._file = open(self.path, "a")
        from torch.utils.tensorboard import SummaryWriter
        # purge_step drops events at steps >= it: the rows at the resumed step itself were
        # logged before the checkpoint and are kept.
        self._tb = SummaryWriter(str(Path(run_dir) / "tb"),
                                 purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, kind: str, values: dict) -> None:
        record = {"step": int(step), "kind": kind, **values}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            if _is_disk_full(exc):
                raise disk_full_error(self.path, "metrics file", 4096,
                                      "rows up to the last checkpoint are kept; ") from exc
            raise
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(f"{kind}/{key}", value, step)

    def sync(self) -> None:
        """Make every row logged so far durable (called before each checkpoint)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._tb.flush()

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # a full disk: the error that got us here says so
        self._tb.close()


def _parse(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for every line of a metrics file; a torn last line is dropped with a warning."""
    text = path.read_text()
    lines = text.split("\n")
    torn_possible = not text.endswith("\n")  # an append cut short never wrote its newline
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "kind" not in record:
                raise ValueError("not a metrics record")
        except ValueError as exc:
            if torn_possible and i == len(lines) - 1:
                warnings.warn(f"{path}: dropped a torn last line ({len(line)} characters, from a killed run "
                              f"or a full disk)", stacklevel=3)
                continue
            raise MetricsFileError(f"{path}, line {i + 1}: not a metrics record ({exc}); fix or delete that "
                                   f"line to resume") from None
        out.append((line, record))
    return out


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [record for _, record in _parse(path)]


__all__ = ["METRICS", "MetricsLog", "MetricsFileError", "read_metrics", "DiskFull"]
