"""Fault injection: a run directory that no kill, full disk, second process or bad input breaks.

Real processes are killed with SIGKILL at chosen points (tests/support/fault_runner.py), then
resumed: nothing is lost, the metrics never restart, and the resumed run ends with exactly
the metrics of an uninterrupted run. Every bad input gets one line on stderr, exit code 2,
and leaves every file as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelplan import cli
from pixelplan.runs import online as online_mod
from pixelplan.runs.logging import read_metrics
from pixelplan.runs.rundir import LOCK_NAME, TMP_PREFIX, RunLock, RunLocked

from conftest import ROUND

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "support" / "fault_runner.py"
TIMING = ("wall_seconds", "env_steps_per_s")

# The small run of conftest.small_run_config, as CLI flags: rounds of 48 env steps (4 envs x
# T = 12), 6 rounds, a checkpoint every 2, an evaluation every 3, a log line every round.
SMALL = ["--preset", "debug", "--steps", str(6 * ROUND), "--checkpoint-every", str(2 * ROUND),
         "--eval-every", str(3 * ROUND), "--log-every", str(ROUND), "--min-steps-learn", str(ROUND),
         "--eval-episodes", "4", "--replay-ratio", "2", "--threads", "1", "--device", "cpu", "--no-progress"]


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", *SMALL, "--out", str(out), *extra]


def run_with_fault(fault: str, n: int, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), fault, str(n), "--", *train_args(out, *extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(out)]


def summary(out: Path) -> dict:
    return {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k != "wall_seconds"}


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with a hash of its bytes."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=False)["loop"]["env_steps"]


def temporaries(out: Path) -> list[Path]:
    return list(out.glob(f"{TMP_PREFIX}*"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The small run, start to end in one process of its own."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_with_fault("none", 0, out)
    assert done.returncode == 0, done.stderr
    return out


def assert_same_run(out: Path, reference: Path) -> None:
    assert metrics(out) == metrics(reference)
    assert summary(out) == summary(reference)
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "metrics restarted or repeated"
    assert not temporaries(out)


# ------------------------------------------------------------- kill -9, then resume
def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed = run_with_fault("kill-write:checkpoint", 2, out)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint_step(out / "checkpoint.pt") == 2 * ROUND      # the first one, intact
    assert temporaries(out), "the half-written temporary file should be there"
    assert max(r["step"] for r in read_metrics(out)) == 4 * ROUND   # rows logged after it are on disk
    resumed = run_with_fault("none", 0, out)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, uninterrupted)


@pytest.mark.parametrize("what, name", [("metrics file", "metrics.jsonl"), ("config", "config.json")])
def test_kill_during_a_write_at_resume_leaves_the_old_file_whole(tmp_path, uninterrupted, what, name):
    """The metrics rewrite and the config write of a resuming run, killed halfway."""
    out = tmp_path / "run"
    assert run_with_fault("kill-round", 4, out).returncode == -signal.SIGKILL   # checkpoint at 2 rounds
    before = (out / name).read_bytes()
    assert max(r["step"] for r in read_metrics(out)) == 3 * ROUND
    killed = run_with_fault(f"kill-write:{what}", 1, out)
    assert killed.returncode == -signal.SIGKILL
    assert (out / name).read_bytes() == before          # the old file, whole
    resumed = run_with_fault("none", 0, out)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, uninterrupted)


def test_kill_during_the_summary_write_then_rerun(tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert run_with_fault("kill-write:summary", 1, out).returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    assert run_with_fault("none", 0, out).returncode == 0
    assert_same_run(out, uninterrupted)


def test_tensorboard_keeps_the_rows_at_the_resumed_step(tmp_path, uninterrupted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert run_with_fault("kill-round", 4, out).returncode == -signal.SIGKILL
    assert run_with_fault("none", 0, out).returncode == 0

    def steps(run: Path) -> list[int]:
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return sorted(e.step for e in acc.Scalars("train/updates"))

    assert steps(out) == steps(uninterrupted) == [ROUND * i for i in range(1, 7)]


def test_sigint_checkpoints_at_the_next_round_and_exits_with_one_line(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pixelplan", *train_args(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")   # a very fast machine
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "checkpoint saved" in err and "re-run the same command to resume" in err.lower()
    step = checkpoint_step(out / "checkpoint.pt")
    assert step % ROUND == 0 and 0 < step < 6 * ROUND
    assert not (out / "summary.json").exists()
    assert run_with_fault("none", 0, out).returncode == 0
    assert_same_run(out, uninterrupted)


# ------------------------------------------------------------- two processes on one run
def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    first = subprocess.Popen([sys.executable, str(RUNNER), "pause-round", "3", "--", *train_args(out)], cwd=ROOT,
                             env={**os.environ, "FAULT_READY": str(ready)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        before = snapshot(out)
        code, err = cli_run(train_args(out))
        assert code == 2
        assert f"in use by process {first.pid}" in err and "--out" in err
        assert snapshot(out) == before
    finally:
        first.kill()
        first.wait()
    # The kernel dropped the dead process's lock: the run can be taken over.
    with RunLock(out):
        pass


def test_run_lock_is_exclusive_and_names_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match=f"process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):   # released: free again
        pass
    assert (tmp_path / LOCK_NAME).exists()


# ------------------------------------------------------------- torn and bad metrics lines
def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert run_with_fault("kill-round", 4, out).returncode == -signal.SIGKILL
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 192, "kind": "train", "loss": 2.6, "nll_id')     # a kill mid-append
    with pytest.warns(UserWarning, match="dropped a torn last line"):
        code, err = cli_run(train_args(out))
    assert code == 0, err
    assert_same_run(out, uninterrupted)


def test_a_bad_metrics_line_elsewhere_names_the_file_and_line(tmp_path):
    out = tmp_path / "run"
    assert run_with_fault("kill-round", 4, out).returncode == -signal.SIGKILL
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(out)
    code, err = cli_run(train_args(out))
    assert code == 2 and "metrics.jsonl, line 2" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(out) == before


# ------------------------------------------------------------- full disk
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, uninterrupted, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 100_000)       # part of it made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    code, err = cli_run(train_args(out))
    assert code == 1
    assert "no space left on device" in err and "checkpoint" in err and "MiB" in err and "intact" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert checkpoint_step(out / "checkpoint.pt") == 2 * ROUND
    assert not temporaries(out)
    monkeypatch.undo()
    code, err = cli_run(train_args(out))
    assert code == 0, err
    assert_same_run(out, uninterrupted)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_really_full_disk(tmp_path, uninterrupted, monkeypatch):
    """On a small tmpfs that fills up after the first checkpoint (where mounting is allowed)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "32m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected full disk above covers the same path")
    try:
        out, filler = disk / "run", disk / "filler"
        original, calls = online_mod.OnlineRun.collect_round, []

        def fill_the_disk_at_round_3(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 2**16)
                            f.flush()
                    except OSError:
                        pass
                os.truncate(filler, max(0, filler.stat().st_size - 2**16))   # room for metrics lines only
            return original(*args, **kwargs)

        monkeypatch.setattr(online_mod.OnlineRun, "collect_round", fill_the_disk_at_round_3)
        code, err = cli_run(train_args(out))
        assert code == 1, err
        assert "no space left on device" in err and "MiB" in err
        assert checkpoint_step(out / "checkpoint.pt") == 2 * ROUND
        assert not temporaries(out)
        monkeypatch.undo()
        filler.unlink()
        code, err = cli_run(train_args(out))
        assert code == 0, err
        assert_same_run(out, uninterrupted)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


# ------------------------------------------------------------- bad input: one line, exit 2, nothing changed
def cli_run(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in this process; returns (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def glamor_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("glamor") / "run"
    assert cli_run(train_args(out, "--steps", str(2 * ROUND)))[0] == 0
    return out


@pytest.fixture(scope="module")
def gcsl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gcsl") / "run"
    assert cli_run(train_args(out, "--steps", str(2 * ROUND), "--agent", "gcsl"))[0] == 0
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


BAD_INPUTS = {
    "negative threads": (lambda run, tmp: train_args(tmp / "new", "--threads", "-1"), "threads"),
    "negative seed": (lambda run, tmp: train_args(tmp / "new", "--seed", "-1"), "seed"),
    "out is a file": (lambda run, tmp: train_args(run / "config.json"), "is a file"),
    "other agent on a run without config.json":
        (lambda run, tmp: [(run / "config.json").unlink(), train_args(run, "--agent", "gcsl")][1], "agent"),
    "other seed on a run": (lambda run, tmp: train_args(run, "--seed", "3"), "seed"),
    "eval on a truncated checkpoint":
        (lambda run, tmp: [(run / "checkpoint.prev.pt").unlink(missing_ok=True),
                           truncate(run / "checkpoint.pt"), ["eval", "--run", run]][2], "cannot read the checkpoint"),
    "eval on an empty checkpoint":
        (lambda run, tmp: [(run / "checkpoint.prev.pt").unlink(missing_ok=True),
                           (run / "checkpoint.pt").write_bytes(b""), ["eval", "--run", run]][2], "checkpoint"),
    "eval on a checkpoint of no agent":
        (lambda run, tmp: [_replace_agent_state(run / "checkpoint.pt"), ["eval", "--run", run]][1],
         "does not fit"),
    "eval on a file": (lambda run, tmp: ["eval", "--run", run / "config.json"], "not a pixelplan run directory"),
    "eval with bad episodes": (lambda run, tmp: ["eval", "--run", run, "--episodes", "0"], "--episodes"),
}


def _replace_agent_state(path: Path) -> None:
    payload = torch.load(path, weights_only=False)
    payload["agent"] = {"something": "else"}
    torch.save(payload, path)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_line_exit_2_and_changes_nothing(case, glamor_run, tmp_path):
    make_argv, needle = BAD_INPUTS[case]
    run = copy_run(glamor_run, tmp_path / "run")
    argv = make_argv(run, tmp_path)
    before, before_tmp = snapshot(run), snapshot(tmp_path / "new")
    code, err = cli_run(argv)
    lines = [line for line in err.strip().splitlines() if not line.startswith("pixelplan: warning:")]
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert snapshot(run) == before
    assert snapshot(tmp_path / "new") == before_tmp == {}


def test_eval_trials_on_a_run_without_a_planner_is_refused(gcsl_run, tmp_path):
    run = copy_run(gcsl_run, tmp_path / "run")
    before = snapshot(run)
    code, err = cli_run(["eval", "--run", run, "--trials", "5"])
    assert code == 2 and "gcsl" in err and "no planner" in err
    assert snapshot(run) == before


def test_a_truncated_config_json_is_recovered_from_the_checkpoint(glamor_run, tmp_path):
    run = copy_run(glamor_run, tmp_path / "run")
    truncate(run / "config.json", 40)
    with pytest.warns(UserWarning, match="config.json.*checkpoint's own copy"):
        code, err = cli_run(["eval", "--run", run, "--episodes", "2"])
    assert code == 0, err
    code, err = cli_run(train_args(run, "--steps", str(3 * ROUND)))     # and the run resumes
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["steps"] == 3 * ROUND


def test_memory_advice_can_be_pasted(tmp_path, monkeypatch):
    from pixelplan.data import replay as replay_mod
    monkeypatch.setattr(replay_mod, "available_memory", lambda: 4 * 2**30)
    code, err = cli_run(train_args(tmp_path / "big", "--replay-capacity", "2000000"))
    assert code == 2
    advice = err.split("--replay-capacity ")[1].split()[0]
    assert advice.isdigit(), advice
    assert not (tmp_path / "big").exists()
