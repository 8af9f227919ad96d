"""A user's own env, end to end: the README's example trains from the CLI, its evaluation goals
are built once and reused, bad ``module:attr`` names fail in one line, a script that registers
an env trains with env worker processes, frames are checked against the declared space, and a
failed sweep run prints its error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from pixelplan import cli, envs
from pixelplan.envs import GoalEnv, GoalSpec, GymGoalEnv, goals as goals_mod
from pixelplan.envs.vector import EnvFactory, EnvPool, EnvWorkerWarning

REPO = Path(__file__).resolve().parents[1]
SLIDER = "examples.slider:make_env"
# The debug preset cut to two rounds of 4 envs (T = 10): the second trains on the first's episodes.
TINY = ["--preset", "debug", "--steps", "80", "--min-steps-learn", "40", "--eval-episodes", "4",
        "--no-progress", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Goal-set cache in tmp_path, the repository root as the current directory (where the README's
    command runs), and sys.path and the env registry restored afterwards."""
    monkeypatch.setenv("PIXELPLAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(REPO))  # examples.slider, whichever way pytest was started
    monkeypatch.setattr(envs, "_FACTORIES", dict(envs._FACTORIES))


def _subprocess_env(tmp_path) -> dict:
    env = dict(os.environ, PIXELPLAN_CACHE=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    return env


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Your own environment", 1)[1].split("\n## ", 1)[0]


# ---------------------------------------------------------------- the README's example
def test_readme_shows_exactly_the_example_module():
    blocks = re.findall(r"```python\n(.*?)```", _readme_section(), flags=re.S)
    assert blocks and blocks[0] == (REPO / "examples" / "slider.py").read_text()


def test_readme_python_usage_runs():
    blocks = re.findall(r"```python\n(.*?)```", _readme_section(), flags=re.S)
    scope: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["frame"].shape == (32, 32) and scope["frame"].dtype == np.uint8
    assert scope["info"]["features"].tolist() == [4.0]
    assert scope["goal"].features.tolist() == [4.0]


def test_readme_command_trains_from_the_repo_root_with_the_console_script(tmp_path):
    """The README's one command, from the repository root through the installed console script
    (which, unlike ``python -m``, does not put the current directory on sys.path)."""
    script = Path(sys.executable).parent / "pixelplan"
    if not script.exists():
        pytest.skip("no pixelplan console script next to this interpreter")
    command = re.search(r"pixelplan (train --env examples\.slider:make_env[^\n]*)", _readme_section()).group(1)
    argv = command.split()
    argv = argv[:argv.index("--preset")] if "--preset" in argv else argv  # the README's budget -> TINY
    out = tmp_path / "run"
    proc = subprocess.run([str(script), *argv, *TINY, "--out", str(out)], cwd=REPO, env=_subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == SLIDER and summary["env_steps"] >= 80 and summary["eval_episodes"] == 4
    assert summary["updates"] > 0 and 0 <= summary["success_rate"] <= 1


# ---------------------------------------------------------------- evaluation goal sets
def test_evaluation_goals_are_one_per_distinct_state_deterministic_and_cached(tmp_path, monkeypatch):
    env = envs.make(SLIDER)
    first = env.evaluation_goals()
    # 8 reachable positions: 8 goals, not 30 with repeats; each frame shows its goal's bar
    assert sorted(g.features[0] for g in first) == list(range(8))
    for g in first:
        x = int(g.features[0])
        assert g.frame[:, 4 * x:4 * x + 4].min() == 255 and g.frame.sum() == 255 * 32 * 4
    path = env.goal_cache_path
    assert path.parent == tmp_path / "cache" / "goals" and path.name.startswith("slider-")

    # a second env (another process would do the same) loads the file: nothing is rebuilt
    def no_build(*args, **kwargs):
        raise AssertionError("the cached set should have been reused")
    with monkeypatch.context() as m:
        m.setattr(goals_mod, "pick_evaluation_goals", no_build)
        again = envs.make(SLIDER)
        assert again.evaluation_goals() == first and again.goal_cache_path == path

    # and a fresh build (empty cache) gives the same goals in the same order
    fresh = envs.make(SLIDER)
    fresh.goal_cache_dir = str(tmp_path / "other")
    assert fresh.evaluation_goals() == first

    # the count is an option and part of the key; so are the env's options
    few = GymGoalEnv(envs.make(SLIDER).env, lambda e: [e.x], envs.make(SLIDER).goal_spec, max_episode_steps=10,
                     name="slider", n_eval_goals=3)
    assert len(few.evaluation_goals()) == 3 and few.goal_cache_path != path
    longer = envs.make(SLIDER, max_episode_steps=12)
    longer.evaluation_goals()
    assert longer.goal_cache_path != path

    # training goals stay the default: random final states, deterministic given the rng
    a, b = env.training_goals(20, np.random.default_rng(3)), env.training_goals(20, np.random.default_rng(3))
    assert a == b and len({g.features[0] for g in a}) > 1


def test_a_change_to_the_env_rebuilds_its_goal_set():
    from examples.slider import Slider, make_env

    class Wider(Slider):
        def _obs(self):
            frame = super()._obs()
            frame[0] = 128  # same states, other pixels: a cached set of Slider frames would be wrong
            return frame

    spec = make_env().goal_spec
    base = GymGoalEnv(Slider(), lambda e: [e.x], spec, max_episode_steps=10, name="slider")
    changed = GymGoalEnv(Wider(), lambda e: [e.x], spec, max_episode_steps=10, name="slider")
    base.evaluation_goals()
    goals = changed.evaluation_goals()
    assert changed.goal_cache_path != base.goal_cache_path
    assert all(g.frame[0].max() == 128 for g in goals)


def test_given_evaluation_goals_are_served_as_they_are(tmp_path):
    env = envs.make(SLIDER)
    env.reset(seed=0)
    goals = [env.current_goal()]
    for _ in range(2):
        env.step(1)
        goals.append(env.current_goal())
    saved = goals_mod.save_goals(tmp_path / "mine", goals, env.goal_spec)
    from examples.slider import Slider
    for given in (goals, saved):
        mine = GymGoalEnv(Slider(), lambda e: [e.x], env.goal_spec, max_episode_steps=10, eval_goals=given)
        assert mine.evaluation_goals() == goals
    with pytest.raises(ValueError, match=r"eval_goals\[0\] has a frame of shape \(2, 2\)"):
        GymGoalEnv(Slider(), lambda e: [e.x], env.goal_spec, max_episode_steps=10,
                   eval_goals=[envs.Goal(np.zeros((2, 2), np.uint8), [0.0])])


class _Counter(GoalEnv):
    """A GoalEnv written from scratch (no adapter): a counter 0..3 shown as a grey level."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (2, 2), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.goal_spec = GoalSpec.from_ranges(["n"], [0], [3], tolerance=0.5)
        self.max_episode_steps = 5
        self.n = 0

    def _out(self):
        return np.full((2, 2), 60 * self.n, np.uint8), {"features": np.array([float(self.n)])}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n = 0
        return self._out()

    def step(self, action):
        self.n = min(3, self.n + int(action))
        frame, info = self._out()
        return frame, 0.0, False, False, info

    def current_goal(self):
        frame, info = self._out()
        return envs.Goal(frame, info["features"])


def test_any_goal_env_without_its_own_set_gets_one(tmp_path):
    env = _Counter()
    goals = env.evaluation_goals()
    assert sorted(g.features[0] for g in goals) == [0, 1, 2, 3]
    assert "_Counter-" in env.goal_cache_path.name  # named by the class's import path


# ---------------------------------------------------------------- module:attr names
@pytest.mark.parametrize("name,needle", [
    ("no_such_pkg.envs:make_env", "env 'no_such_pkg.envs:make_env': no module named 'no_such_pkg'"),
    ("examples.slider:make_envv", "module 'examples.slider' has no attribute 'make_envv' (did you mean 'make_env'?)"),
    ("examples.slider:Slider", "returned a Slider (examples.slider.Slider), not a pixelplan GoalEnv; wrap it"),
    ("examples.slider:np", "np is a module, not a callable"),
    ("dmcc:cartpole", "(did you mean dmc:cartpole?)"),
])
def test_bad_import_paths_exit_2_with_one_line(tmp_path, capsys, name, needle):
    assert cli.main(["train", "--env", name, *TINY, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("pixelplan train: error: ") and needle in err


def test_import_path_options_are_checked():
    with pytest.raises(ValueError, match="accepted options: max_episode_steps"):
        envs.make(SLIDER, size=3)
    with pytest.raises(ValueError, match="needs option"):
        envs.make("json:dumps")
    assert envs.make(SLIDER, max_episode_steps=4).max_episode_steps == 4


def test_a_registered_name_unknown_here_says_why():
    with pytest.raises(ValueError, match="exists only in the process that registered it"):
        envs.make("slider")


# ---------------------------------------------------------------- env worker processes
def test_registered_module_level_factories_reach_worker_processes():
    from examples.slider import make_env
    envs.register("test-slider", make_env)
    factory = EnvFactory("test-slider", {"max_episode_steps": 6})
    with EnvPool(factory, 2, workers=0) as local, EnvPool(factory, 2, workers=2) as remote:
        assert remote.workers == 2
        a, b = local.reset([0, 1], [1, 2]), remote.reset([0, 1], [1, 2])
        assert np.array_equal(a[0], b[0])
        assert np.array_equal(local.step([0, 1], [1, 0])[0], remote.step([0, 1], [1, 0])[0])


def test_a_lambda_factory_steps_in_this_process_with_one_warning():
    from examples.slider import make_env
    envs.register("test-lambda-slider", lambda: make_env())
    with pytest.warns(EnvWorkerWarning, match="cannot be sent to env worker processes") as caught:
        pool = EnvPool(EnvFactory("test-lambda-slider"), 2, workers=2)
    with pool:
        assert pool.workers == 0 and pool.reset([0, 1], [0, 0])[0].shape == (2, 32, 32)   # single frames
    assert len(caught) == 1 and "\n" not in str(caught[0].message)


SCRIPT = textwrap.dedent('''
    import json, sys, warnings
    from pixelplan import cli
    from pixelplan.envs import register
    from pixelplan.envs.vector import EnvFactory, EnvPool
    from examples.slider import Slider, make_env


    def make_slider(max_episode_steps=10):
        return make_env(max_episode_steps)


    if __name__ == "__main__":
        out, tiny = sys.argv[1], sys.argv[2:]
        register("myslider", make_slider)   # only in this process: spawned workers never run this
        rc = {"train": cli.main(["train", "--env", "myslider", "--env-workers", "1", "--out", out, *tiny])}
        rc["eval"] = cli.main(["eval", "--run", out, "--trials", "2", "--episodes", "2"])
        rc["goals"] = cli.main(["goals", "--env", "myslider", "--out", out + "/goals.png"])

        def guarded():  # defined under the main guard: the workers cannot find it
            return make_env()
        register("guarded", guarded)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's default: a warning once per place and text
            for _ in range(2):  # a run makes two pools: one failed spawn, one warning
                with EnvPool(EnvFactory("guarded"), 2, workers=1) as pool:
                    rc["guarded_workers"] = pool.workers
                    rc["guarded_obs"] = list(pool.reset([0, 1], [0, 1])[0].shape)
        rc["warnings"] = [str(w.message) for w in caught if w.category.__name__ == "EnvWorkerWarning"]
        print("RESULT " + json.dumps(rc))
''')


def test_a_script_that_registers_its_env_trains_with_env_worker_processes(tmp_path):
    script = tmp_path / "train_my_env.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = _subprocess_env(tmp_path)
    env["PYTHONPATH"] = str(REPO)  # the script lives elsewhere; it imports examples.slider
    proc = subprocess.run([sys.executable, str(script), str(out), *TINY], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["train"] == result["eval"] == result["goals"] == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "myslider" and summary["env_steps"] >= 80 and summary["updates"] > 0
    assert (out / "goals.png").is_file()
    assert result["guarded_workers"] == 0 and result["guarded_obs"] == [2, 32, 32]
    assert len(result["warnings"]) == 1 and "cannot be sent to env worker processes" in result["warnings"][0]


# ---------------------------------------------------------------- frame checks
class _Wrong(gym.Env):
    """Declares (32, 32) uint8 but returns other frames at reset or at the first step."""

    observation_space = gym.spaces.Box(0, 255, (32, 32), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, at="reset", shape=(32, 32), dtype=np.uint8):
        self.at, self.shape, self.dtype = at, shape, dtype

    def _obs(self, when):
        return np.zeros(self.shape if when == self.at else (32, 32), self.dtype if when == self.at else np.uint8)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs("reset"), {}

    def step(self, action):
        return self._obs("step"), 0.0, False, False, {}


@pytest.mark.parametrize("at,shape,dtype,needle", [
    ("reset", (32, 33), np.uint8, r"_Wrong.reset\(\) returned an observation of shape \(32, 33\) and dtype uint8, "
                                  r"but _Wrong.observation_space declares shape \(32, 32\) and dtype uint8"),
    ("step", (32, 32), np.float32, r"_Wrong.step\(\) returned an observation of shape \(32, 32\) and dtype float32"),
    ("step", (32, 32, 1), np.uint8, r"_Wrong.step\(\) returned an observation of shape \(32, 32, 1\)"),
])
def test_frames_that_do_not_match_the_declared_space_are_refused(at, shape, dtype, needle):
    env = GymGoalEnv(_Wrong(at, shape, dtype), lambda e: [0.0], GoalSpec.from_ranges(["x"], [0], [1]),
                     max_episode_steps=3)
    with pytest.raises(ValueError, match=needle):
        env.reset(seed=0)
        env.step(0)


def test_frame_fn_frames_must_keep_their_shape():
    from examples.slider import Slider
    frame_fn = lambda e, obs: obs if e.x == 4 else obs[:16]  # noqa: E731 - a half frame after a move
    env = GymGoalEnv(Slider(), lambda e: [e.x], GoalSpec.from_ranges(["x"], [0], [7]), frame_fn=frame_fn,
                     max_episode_steps=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"GymGoalEnv\(Slider\): frame_fn gave a frame of shape \(16, 32\) after "
                                         r"step\(\), but this env's frames have shape \(32, 32\)"):
        env.step(1)


# ---------------------------------------------------------------- sweeps
def test_a_failed_sweep_run_prints_its_error(tmp_path):
    from pixelplan.runs.sweep import plan_jobs, run_sweep
    jobs = plan_jobs(["random"], ["no_such_pkg.envs:make_env"], [0], tmp_path / "sweep")
    lines: list[str] = []
    failed = run_sweep(jobs, ["--preset", "debug"], log=lines.append)
    assert failed == jobs
    report = "\n".join(lines)
    assert "FAILED (exit 2" in report
    assert ("no_such_pkg.envs-make_env-random-seed0: pixelplan train: error: env 'no_such_pkg.envs:make_env': "
            "no module named 'no_such_pkg'") in report
