"""Smoke runs of the benchmark entry points: they run end to end and print their JSON line.

The figures themselves are measured by running the scripts (docs/results.md), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pixelplan import config as config_lib
from pixelplan.runs.train import train

ROOT = Path(__file__).resolve().parents[1]


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_planning_compute_on_a_saved_run(tmp_path):
    cfg = config_lib.preset("debug")
    cfg.out, cfg.progress, cfg.steps, cfg.threads = str(tmp_path / "run"), False, 200, 1
    train(cfg)
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "planning_compute.py"), "--run", cfg.out,
                           "--trials", "1", "3", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    assert [r["trials"] for r in result["rows"]] == [1, 3]
    assert all(0 <= r["success_rate"] <= 1 and 0 <= r["optimal_rate"] <= r["success_rate"] for r in result["rows"])
    assert all(r["episodes"] == result["goals"] for r in result["rows"])
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "table.md").exists()


def test_throughput_quick(tmp_path):
    env = {**os.environ, "PIXELPLAN_CACHE": str(tmp_path / "cache")}   # tiny goal sets, not the user's cache
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    cpu = _last_json(proc.stdout)["cpu"]
    for key in ("planner_ms_per_decision", "planner_ms_per_decision_early", "decision_ms_mpc", "decision_ms_cold",
                "train_samples_per_s_gridworld",
                "train_samples_per_s_paper_104x80", "train_env_steps_per_s"):
        assert cpu[key] is not None and cpu[key] > 0, key
    dmc = _last_json(proc.stdout)["dmc_env_steps_per_s"]
    assert set(dmc) == {"point_mass-easy", "cartpole-balance"}
    assert all(row["pool"] > 0 and row["in_process"] > 0 and row["in_process_workers"] == 0 for row in dmc.values())
    atari = _last_json(proc.stdout)["atari_env_steps_per_s"]
    assert set(atari) == {"pong", "seaquest"}
    assert all(row["pool"] > 0 and row["in_process"] > 0 for row in atari.values())
    train_run = _last_json(proc.stdout)["glamor_atari_train"]
    assert train_run["steps"] >= 300 and train_run["updates"] > 0 and train_run["wall_seconds_per_100k"] > 0
