"""Smoke runs of the benchmark entry points: they run end to end and print their JSON line.

The figures themselves are measured by running the scripts (docs/results.md), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    for key in ("planner_ms_per_decision", "planner_ms_per_decision_early", "decision_ms_mpc", "decision_ms_mpc_fp32",
                "decision_ms_cold", "train_samples_per_s_gridworld",
                "train_samples_per_s_paper_104x80", "train_env_steps_per_s"):
        assert cpu[key] is not None and cpu[key] > 0, key
    assert cpu["decision_precision"] in ("fp32", "bf16")
    _check_update_parts(cpu)
    dmc = _last_json(proc.stdout)["dmc_env_steps_per_s"]
    assert set(dmc) == {"point_mass-easy", "cartpole-balance"}
    assert all(row["pool"] > 0 and row["in_process"] > 0 and row["in_process_workers"] == 0 for row in dmc.values())
    atari = _last_json(proc.stdout)["atari_env_steps_per_s"]
    assert set(atari) == {"pong", "seaquest"}
    assert all(row["pool"] > 0 and row["in_process"] > 0 for row in atari.values())
    train_run = _last_json(proc.stdout)["glamor_atari_train"]
    assert train_run["steps"] >= 300 and train_run["updates"] > 0 and train_run["wall_seconds_per_100k"] > 0


def _positive(row: dict, keys) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, (key, value)


def _check_update_parts(cpu: dict) -> None:
    """The update A/B, FLOP, peak and projection figures of throughput.py: present, positive,
    and consistent with one another (quick-mode values: smoke, not figures)."""
    ab = cpu["update_ab"]
    assert ab["figure"] is False     # --quick numbers are labelled as not figures
    _positive(ab, ("before_s", "after_s", "ratio", "loss_before", "loss_after", "sample_ms", "batch_size", "max_k"))
    assert ab["ratio"] == pytest.approx(ab["after_s"] / ab["before_s"], rel=0.01)
    assert ab["before"] == {"precision": "fp32", "lstm_buckets": 1}
    assert ab["after"]["precision"] in ("fp32", "bf16") and ab["after"]["lstm_buckets"] >= 1
    assert ab["same_initial_weights"] is True
    assert 0 <= ab["loss_rel_diff"] < 1e-2   # the same model on the same batch: only rounding differs
    flops = cpu["flops"]
    for name in ("before", "after"):
        _positive(flops[name], ("total", "encoders", "lstm_recurrence", "conv"))
        assert flops[name]["encoders"] + flops[name]["lstm_recurrence"] <= flops[name]["total"] * (1 + 1e-6)
    assert flops["after"]["total"] <= flops["before"]["total"]   # buckets only ever drop padding
    peak = cpu["peak"]
    _positive(peak, ("fp32_gflops", "bf16_gflops", "threads", "n"))
    roof = cpu["roofline"]
    _positive(roof["before"], ("gflops_achieved", "fraction_of_fp32_peak", "bound_s_fp32", "bound_s_bf16"))
    _positive(roof["after"], ("gflops_achieved", "fraction_of_fp32_peak", "fraction_of_bf16_peak",
                              "bound_s_fp32", "bound_s_bf16"))
    _positive(cpu["plan_costs"], ("collect_plan_ms", "eval_decision_ms", "collect_rows", "eval_rows"))
    proj = cpu["projection_500k"]
    assert proj["figure"] is False
    _positive(proj, ("updates", "update_s", "env_steps_per_s", "episodes", "evaluations", "total_hours"))
    assert proj["updates"] == (proj["steps"] - proj["min_steps_learn"]) * proj["replay_ratio"] / proj["batch_size"]
    terms = proj["hours"]
    assert set(terms) >= {"updates", "env_steps_train", "env_steps_eval", "planning_collection", "planning_eval"}
    assert all(v >= 0 for v in terms.values()) and terms["updates"] > 0 and terms["env_steps_train"] > 0
    assert proj["total_hours"] == pytest.approx(sum(terms.values()), abs=0.01 + 0.001 * len(terms))


def test_grid_diagnostics_on_a_saved_run(tmp_path):
    cfg = config_lib.preset("debug")
    cfg.out, cfg.progress, cfg.steps, cfg.threads = str(tmp_path / "run"), False, 200, 1
    train(cfg)
    evaluated = subprocess.run([sys.executable, "-m", "pixelplan", "eval", "--run", cfg.out],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    evaluated = _last_json(evaluated.stdout)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grid_diagnostics.py"), "--run", cfg.out,
                           "--gammas", "0.3", "--trials", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    rows = result["by_distance"]
    # Every cell of the 7x7 grid is a goal once, and the buckets add up to `pixelplan eval`'s
    # figures for the same checkpoint (both start from its saved planner RNG).
    assert sum(r["goals"] for r in rows) == 49
    for key, metric in (("success", "success_rate"), ("optimal", "optimal_rate")):
        assert abs(sum(r[key] * r["goals"] for r in rows) / 49 - evaluated[metric]) < 1e-9
    assert all(r["fail_end"] + r["fail_time"] == round(r["goals"] * (1 - r["success"])) for r in rows)
    # The debug run's episodes all start at the centre and take up to T = 12 steps.
    assert [c["third"] for c in result["coverage"]] == ["oldest", "middle", "newest"]
    assert all(0 <= c["mean"] <= 12 for c in result["coverage"])
    assert [(p["gamma"], p["trials"]) for p in result["planner"]] == [(0.3, 2)]


def test_planet_speed_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "planet_speed.py"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    for rows in ("rows1", "rows10"):
        _positive(result["cem"][rows], ("ms_per_decision", "gflop", "bound_ms"))
    assert result["cem"]["size"]["transitions_per_row"] == 4 * 2 * 16      # the debug preset's CEM
    _positive(result["update"]["fp32"], ("s_per_update", "gflop", "fraction_of_fp32_peak"))
    assert result["update"]["batch"] == [4, 8]


def test_tabletop_speed_quick(tmp_path):
    env = {**os.environ, "PIXELPLAN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tabletop_speed.py"), "--steps", "30",
                           "--tasks", "3", "--scenes", "reach", "push1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [(r["scene"], r.get("set")) for r in rows] == [("reach", None), ("reach", "regular"), ("push1", None),
                                                        ("push1", "regular"), ("push1", "hard")]
    for r in rows:
        if "set" in r:
            assert r["tasks"] == 3 and 0 <= r["random"]["success_rate"] <= 1 and 0 <= r["oracle"]["success_rate"] <= 1
        else:
            _positive(r, ("steps_per_s", "physics_steps_per_s", "render_ms"))


def test_mbold_speed_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mbold_speed.py"), "--quick", "--rows", "1", "2",
                           "--precision", "fp32"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for name in ("video", "q", "vae", "temporal"):
        assert result["train"][name]["seconds"] > 0
    assert [(p["precision"], p["rows"]) for p in result["plan"]] == [("fp32", 1), ("fp32", 2)]
    assert all(p["seconds_per_action"] > 0 for p in result["plan"])
