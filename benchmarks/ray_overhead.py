"""What a Ray sweep costs over a local one on this machine.

    python benchmarks/ray_overhead.py [--agents glamor random] [--seeds 0 1] [--cpus 2] [--out bench_out/ray]

Runs the same small sweep (the debug preset, ``agents`` x ``seeds`` on the grid world) twice,
each into a fresh directory: locally with ``--parallel cpus`` (``cores // cpus`` threads a
run) and on a local Ray instance with ``--cpus-per-run cores // cpus`` (the same threads a
run, the same runs at once). Prints one JSON object: the wall-clock of each sweep command
(from its start to its table), the difference, and the time Ray takes to start and connect
(``ray.init`` and the first task), measured on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _sweep(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pixelplan", "sweep", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sweep {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _ray_start_seconds() -> float:
    import ray

    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="warning")
    ray.get(ray.remote(lambda: 1).remote())
    took = time.perf_counter() - started
    ray.shutdown()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["glamor", "random"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1"])
    parser.add_argument("--cpus", type=int, default=2, help="runs at once")
    parser.add_argument("--out", default="bench_out/ray")
    opts = parser.parse_args()
    cores = os.cpu_count() or 1
    per_run = max(1, cores // opts.cpus)
    out = Path(opts.out)
    shutil.rmtree(out, ignore_errors=True)
    common = ["--agents", *opts.agents, "--seeds", *opts.seeds]
    train = ["--", "--preset", "debug"]
    local = _sweep([*common, "--out", str(out / "local"), "--parallel", str(opts.cpus), *train])
    on_ray = _sweep([*common, "--out", str(out / "ray"), "--ray", "--cpus-per-run", str(per_run), *train])
    print(json.dumps({"runs": len(opts.agents) * len(opts.seeds), "at_once": opts.cpus, "threads_per_run": per_run,
                      "local_sweep_s": round(local, 1), "ray_sweep_s": round(on_ray, 1),
                      "overhead_s": round(on_ray - local, 1), "overhead_fraction": round(on_ray / local - 1, 3),
                      "ray_start_and_first_task_s": round(_ray_start_seconds(), 2), "cores": cores}))


if __name__ == "__main__":
    main()
