"""Run the pixelplan CLI with one fault injected, for tests/test_faults.py.

    python tests/support/fault_runner.py FAULT N -- <pixelplan arguments>

FAULT is one of:

* ``kill-write:<what>``: the N-th atomic write of that file (``checkpoint``, ``metrics file``,
  ``config``, ``summary``) writes half of its temporary file, fsyncs it, then the process
  kills itself with SIGKILL (as ``kill -9`` or the OOM killer would, mid-write).
* ``kill-round``: SIGKILL at the start of the N-th collection round.
* ``pause-round``: at the start of the N-th round, touch ``$FAULT_READY`` and sleep (so a
  test can start a second process on the same run directory).
* ``none``: no fault.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    fault, n = sys.argv[1], int(sys.argv[2])
    assert sys.argv[3] == "--"
    args = sys.argv[4:]

    from pixelplan import cli
    from pixelplan.runs import rundir
    from pixelplan.runs import checkpoints, online

    if fault.startswith("kill-write:"):
        target, seen = fault.split(":", 1)[1], []
        original = rundir.write_atomically

        def faulty(path, write, what="file", **kwargs):
            if what == target:
                seen.append(path)
                if len(seen) == n:
                    def half_then_die(f):
                        buf = io.BytesIO()
                        write(buf)
                        data = buf.getvalue()
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                        os.kill(os.getpid(), signal.SIGKILL)
                    return original(path, half_then_die, what, **kwargs)
            return original(path, write, what, **kwargs)

        rundir.write_atomically = faulty
        checkpoints.write_atomically = faulty     # the checkpoint writer's own reference
    elif fault in ("kill-round", "pause-round"):
        original_round, calls = online.OnlineRun.collect_round, []

        def round_(*a, **k):
            calls.append(1)
            if len(calls) == n:
                if fault == "kill-round":
                    os.kill(os.getpid(), signal.SIGKILL)
                Path(os.environ["FAULT_READY"]).touch()
                time.sleep(120)
            return original_round(*a, **k)

        online.OnlineRun.collect_round = round_
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")
    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
