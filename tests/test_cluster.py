"""Sweeps and collection on Ray (runs/cluster.py), on a real cluster: a head node and a worker
node started with ``ray start`` on loopback, a worker node's raylet killed mid-sweep, and the
sweep checked against the same sweep run locally.

These tests need Ray (the test extras install it); without it they are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")          # a dependency of Ray's

from pixelplan import cli  # noqa: E402
from pixelplan.runs.cluster import check_token, read_attempts, train_task, write_token  # noqa: E402
from pixelplan.runs.sweep import plan_jobs  # noqa: E402

# 20 rounds of 4 grid-world episodes (T = 12), a checkpoint every 4 rounds: a run is long
# enough to be killed between checkpoints, and short enough for the suite.
TRAIN_FLAGS = ["--preset", "debug", "--steps", "960", "--checkpoint-every", "192", "--eval-every", "480",
               "--eval-episodes", "4", "--log-every", "96"]
AGENTS, SEEDS = ["glamor", "gcsl"], ["0", "1"]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"] = "disabled"        # loopback only; a real cluster keeps Ray's token auth (docs/cluster.md)
    return env


class LoopbackCluster:
    """A head and one worker node on this machine; ``close`` kills every process either
    started (and their children), whatever state the test left them in."""

    def __init__(self, head_cpus: int, worker_cpus: int):
        self.temp = tempfile.mkdtemp(prefix="ppray-", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
        self.port, self.worker_port = _free_port(), _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # `ray start --head` records its address as this machine's current cluster (for
        # --address auto); the user's own record is put back on close.
        self.current = Path("/tmp/ray/ray_current_cluster")
        self.saved = self.current.read_bytes() if self.current.exists() else None
        before = {p.pid for p in psutil.process_iter()}
        self.roots: set[int] = set()
        try:
            try:
                self._start(["start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                             "--num-cpus", str(head_cpus), "--include-dashboard", "false", "--disable-usage-stats",
                             "--ray-client-server-port", str(_free_port()), "--temp-dir", self.temp])
                self._start(["start", "--address", self.address, "--node-ip-address", "127.0.0.1",
                             "--num-cpus", str(worker_cpus), "--node-manager-port", str(self.worker_port),
                             "--disable-usage-stats"])
            finally:
                self.roots = {p.pid for p in psutil.process_iter()} - before
            self.worker_raylet = self._raylet(self.worker_port)
        except BaseException:
            self.close()                                  # a failed start leaves nothing running either
            raise

    def _start(self, args: list[str]) -> None:
        done = subprocess.run(RAY + args, env=_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"

    def _raylet(self, node_manager_port: int) -> psutil.Process:
        for pid in self.roots:
            try:
                proc = psutil.Process(pid)
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "raylet" in proc.name() and f"--node_manager_port={node_manager_port}" in cmd:
                return proc
        raise AssertionError(f"no raylet with node manager port {node_manager_port} among the cluster's processes")

    def descends_from_worker(self, pid: int) -> bool:
        try:
            return any(p.pid == self.worker_raylet.pid for p in psutil.Process(pid).parents())
        except psutil.Error:
            return False

    def close(self) -> None:
        procs = []
        for pid in self.roots:
            try:
                proc = psutil.Process(pid)
                procs += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        if self.saved is not None:
            self.current.write_bytes(self.saved)
        else:
            self.current.unlink(missing_ok=True)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster():
    c = LoopbackCluster(head_cpus=2, worker_cpus=2)
    try:
        yield c
    finally:
        c.close()


def _train_processes(sweep_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "train" in cmd and any(str(sweep_dir) in part for part in cmd):
            found.append(proc)
    return found


def _out_of(proc: psutil.Process) -> Path | None:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    return Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else None


def _records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_seconds" and "per_s" not in k and "seconds" not in k}
            for r in rows]


def test_a_ray_sweep_survives_a_killed_worker_node_and_matches_the_local_sweep(cluster, tmp_path):
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    sweep = [sys.executable, "-m", "pixelplan", "sweep", "--agents", *AGENTS, "--seeds", *SEEDS]
    driver = subprocess.Popen([*sweep, "--out", str(ray_dir), "--ray", "--address", cluster.address,
                               "--cpus-per-run", "1", "--", *TRAIN_FLAGS], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        # Kill the worker node once a run it holds has checkpointed and has not finished.
        victims: set[Path] = set()
        deadline = time.monotonic() + 300
        while not victims and time.monotonic() < deadline and driver.poll() is None:
            for proc in _train_processes(ray_dir):
                out = _out_of(proc)
                if (out is not None and cluster.descends_from_worker(proc.pid) and (out / "checkpoint.pt").exists()
                        and not (out / "summary.json").exists()):
                    victims.add(out)
            time.sleep(0.2)
        assert victims, "no run on the worker node reached a checkpoint before the sweep ended"
        doomed = [p for p in _train_processes(ray_dir) if cluster.descends_from_worker(p.pid)]
        on_worker = {_out_of(p) for p in doomed}
        cluster.worker_raylet.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(doomed, timeout=30)        # they die with their node's worker processes
        assert not alive, f"train processes outlived their node: {alive}"
        checkpointed = {out for out in on_worker if (out / "checkpoint.pt").exists()}
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output

    runs = sorted(p for p in ray_dir.iterdir() if p.is_dir() and p.name != "table")
    assert len(runs) == len(AGENTS) * len(SEEDS)
    for run in runs:                                     # every run finished
        assert json.loads((run / "summary.json").read_text())["env_steps"] == 960, run.name
    killed = {run for run in runs if len(read_attempts(ray_dir / f"{run.name}.attempts.jsonl")) > 1}
    assert victims <= killed <= on_worker | victims, (victims, killed, on_worker)
    assert victims <= checkpointed
    for run in killed:
        log = (ray_dir / f"{run.name}.log").read_text()
        resumed = [int(line.rsplit(" ", 1)[1].replace(",", "")) for line in log.splitlines()
                   if line.startswith("pixelplan train: resuming")]
        assert f"retried {run.name} (attempt 2)" in output
        if run not in checkpointed:                      # killed before its first checkpoint: starts afresh
            assert not resumed, log
            continue
        assert resumed and resumed[0] >= 192, f"{run.name} did not resume from its checkpoint:\n{log}"
        steps = [r["step"] for r in _records(run) if r["kind"] == "train"]
        assert steps == sorted(set(steps)) and steps[0] < resumed[0], f"{run.name}'s metrics restarted: {steps}"

    # The same sweep run locally, one thread per run as on Ray: the same table, and the same
    # metrics, run by run (a resumed run continues exactly as an uninterrupted one).
    done = subprocess.run([*sweep, "--out", str(local_dir), "--parallel", "2", "--", *TRAIN_FLAGS], env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert (json.loads((ray_dir / "table" / "table.json").read_text())
            == json.loads((local_dir / "table" / "table.json").read_text()))
    for run in runs:
        assert _records(run) == _records(local_dir / run.name), run.name

    # Re-running the finished sweep runs nothing again.
    again = subprocess.run([*sweep, "--out", str(ray_dir), "--ray", "--address", cluster.address, "--",
                            *TRAIN_FLAGS], env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("[sweep] finished already") == len(runs) and "[sweep] running" not in again.stderr


def test_a_run_directory_other_nodes_cannot_see_is_refused_clearly(tmp_path):
    job = plan_jobs(["random"], ["gridworld"], [0], tmp_path / "sweep")[0]
    token = write_token(job.out.parent)
    assert check_token(job.out.parent, token) is None
    result = train_task(job, ["--preset", "debug"], 1, "another-token", str(tmp_path), 0.0)
    assert result["status"] == "unreachable"
    assert "is not reachable from node" in result["reason"] and "shared filesystem" in result["reason"]
    assert not job.out.exists()                          # nothing started


def test_collect_on_ray_gives_the_same_dataset_with_one_or_two_tasks_at_a_time(tmp_path, capsys):
    hashes = {}
    for name, extra in (("local", []), ("ray1", ["--ray", "--parallel", "1"]), ("ray2", ["--ray", "--parallel", "2"])):
        out = tmp_path / f"{name}.h5"
        code = cli.main(["collect", "--episodes", "24", "--shard-episodes", "6", "--n-envs", "3", "--workers", "0",
                         "--no-progress", "--out", str(out), *extra])
        assert code == 0
        hashes[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["content_hash"]
        assert not (tmp_path / f"{name}.h5.parts").exists()
    assert hashes["ray1"] == hashes["ray2"] == hashes["local"]


def test_ray_flags_are_checked_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--out", str(out), "--ray", "--parallel", "2"]) == 2
    assert "--cpus-per-run" in capsys.readouterr().err
    assert cli.main(["sweep", "--out", str(out), "--address", "auto"]) == 2
    assert cli.main(["sweep", "--out", str(out), "--ray", "--cpus-per-run", "0"]) == 2
    capsys.readouterr()
    closed = f"127.0.0.1:{_free_port()}"                  # nothing listens there: refused at once, not after Ray's wait
    assert cli.main(["sweep", "--agents", "random", "--seeds", "0", "--out", str(out), "--ray", "--address", closed]) == 2
    assert "no Ray head answers at --address" in capsys.readouterr().err
    # a bad train flag: one line, status 2
    assert cli.main(["sweep", "--agents", "random", "--seeds", "0", "--out", str(out), "--ray", "--",
                     "--no-such-flag", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--no-such-flag" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_collect_ray_options_change_nothing_on_disk(tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert cli.main(["collect", "--episodes", "4", "--out", str(out), "--ray", "--parallel", "0"]) == 2
    assert "--parallel >= 1" in capsys.readouterr().err
    assert cli.main(["collect", "--episodes", "4", "--out", str(out), "--address", "auto"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_without_ray_installed_ray_flags_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)         # import ray now raises ImportError
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--agents", "random", "--seeds", "0", "--out", str(out), "--ray"]) == 2
    assert "pip install 'pixelplan[ray]'" in capsys.readouterr().err
    assert cli.main(["collect", "--episodes", "4", "--out", str(tmp_path / "d.h5"), "--ray"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_on_ray_is_reported_with_its_error_and_not_retried(tmp_path):
    from pixelplan.runs.cluster import run_sweep_ray
    jobs = plan_jobs(["random"], ["no_such_pkg.envs:make_env"], [0], tmp_path / "sweep")
    lines: list[str] = []
    failed = run_sweep_ray(jobs, ["--preset", "debug"], log=lines.append)
    assert failed == jobs
    report = "\n".join(lines)
    assert "FAILED (exit 2" in report and "retried" not in report.replace("0 retried", "")
    assert "no module named 'no_such_pkg'" in report
    assert len(read_attempts(tmp_path / "sweep" / f"{jobs[0].out.name}.attempts.jsonl")) == 1


def test_collect_over_two_nodes_gives_the_local_dataset(tmp_path, capsys, monkeypatch):
    """One CPU a node and two shard tasks at a time: the shards are written on both nodes."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")      # this process is the driver, as the cluster is started
    c = LoopbackCluster(head_cpus=1, worker_cpus=1)
    try:
        hashes = []
        for extra in ([], ["--ray", "--address", c.address, "--parallel", "2"]):
            out = tmp_path / f"d{len(hashes)}.h5"
            assert cli.main(["collect", "--episodes", "24", "--shard-episodes", "6", "--n-envs", "3", "--workers",
                             "0", "--no-progress", "--out", str(out), *extra]) == 0
            hashes.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["content_hash"])
        assert hashes[0] == hashes[1]
    finally:
        c.close()
