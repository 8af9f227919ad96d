"""PlaNet (agents/planet.py): it plans better than random on a task it has to learn, it trains on
what the env produced through the real loop and on the paper's schedule, it resumes exactly,
its variants and diagnostics work, its presets are the paper's, and it refuses envs it cannot
take with one line. (The model's own tests are in test_rssm.py; CEM's in test_cem.py.)"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import is_piece_of_an_episode
from pixelplan import config as config_lib
from pixelplan.agents import make_agent
from pixelplan.envs.core import spec_of
from pixelplan.runs import online as online_mod
from pixelplan.runs.logging import read_metrics
from pixelplan.runs.train import train

REPO = Path(__file__).resolve().parents[1]
BAR_ENV = "tests.support.bar_env:make_bar_env"
TIMING = {"wall_seconds", "env_steps_per_s"}


@pytest.fixture(autouse=True)
def repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))     # tests.support.bar_env, however pytest was started


def bar_config(out, **overrides) -> config_lib.Config:
    """PlaNet's debug preset on the bar task: 2 envs, episodes of 10 steps (a round is 20)."""
    cfg = config_lib.preset("debug", BAR_ENV, "planet")
    planet = {k.split(".", 1)[1]: overrides.pop(k) for k in list(overrides) if k.startswith("planet.")}
    run = dict(out=str(out), progress=False, device="cpu", threads=1, steps=80, eval_every=40, checkpoint_every=40,
               log_every=20, eval_episodes=2, seed_episodes=2, updates_per_episode=2)
    cfg = dataclasses.replace(cfg, **{**run, **overrides})
    cfg.planet = dataclasses.replace(cfg.planet, **planet)
    return cfg


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


# ------------------------------------------------------------------ it learns to plan
def test_planet_plans_better_than_random_on_a_task_it_must_learn(tmp_path):
    """The bar task pays 1 - 2|x - 0.5| per step: heading for the centre (about 8.5 per episode)
    beats wandering (about 4.3). After 300 updates from 12 episodes PlaNet, planning in the
    latent space of a model learned from pixels alone, must clearly beat the random agent on
    the same evaluation episodes."""
    kw = dict(n_envs=4, seed_episodes=4, updates_per_episode=25, steps=120, eval_every=120, checkpoint_every=120,
              log_every=40, eval_episodes=8, eval_video=False)
    planet_cfg = bar_config(tmp_path / "planet", **kw, **{
        "planet.cnn_depth": 8, "planet.batch_size": 8, "planet.horizon": 5, "planet.candidates": 64,
        "planet.elites": 8, "planet.iterations": 3, "planet.openloop_videos": 0})
    planet = train(planet_cfg)
    rand = train(dataclasses.replace(planet_cfg, agent="random", out=str(tmp_path / "random")))
    assert planet["updates"] == 300 and planet["eval_episodes"] == rand["eval_episodes"] == 8
    assert planet["mean_return"] > rand["mean_return"] + 0.75, (planet["mean_return"], rand["mean_return"])


# ------------------------------------------------------------------ what it trains on, and when
def test_windows_trained_on_are_what_the_env_produced_on_the_papers_schedule(tmp_path, monkeypatch):
    """Through the real loop: every chunk PlaNet's update gets (frames, float actions, rewards)
    is a contiguous piece of an episode the env produced; the seed episodes are uniform random
    actions; updates happen only between rounds (the model is fixed while an episode is
    collected), ``updates_per_episode`` per episode of each round that ends with learning on."""
    Bar = importlib.import_module("tests.support.bar_env").Bar
    produced: list[dict] = []
    seen: list = []
    real_reset, real_step = Bar.reset, Bar.step

    def reset(self, **kwargs):
        frame, info = real_reset(self, **kwargs)
        produced.append({"env": id(self), "frames": [frame.copy()], "actions": [], "rewards": [], "updates": []})
        return frame, info

    def step(self, action):
        frame, reward, *rest = real_step(self, action)
        ep = [e for e in produced if e["env"] == id(self)][-1]
        ep["frames"].append(frame.copy())
        ep["actions"].append(np.array(action, np.float32).reshape(1))
        ep["rewards"].append(np.float32(reward))
        ep["updates"].append(len(seen))
        return (frame, reward, *rest)

    monkeypatch.setattr(Bar, "reset", reset)
    monkeypatch.setattr(Bar, "step", step)
    from pixelplan.agents.planet import PlanetAgent
    real_update = PlanetAgent.update

    def update(self, batch):
        seen.append(batch)
        return real_update(self, batch)

    monkeypatch.setattr(PlanetAgent, "update", update)
    cfg = bar_config(tmp_path / "run", seed_episodes=3, updates_per_episode=3, eval_video=True)
    summary = train(cfg)
    train_envs = list(dict.fromkeys(e["env"] for e in produced))[:cfg.n_envs]   # the training pool resets first
    train_eps = [e for e in produced if e["env"] in train_envs]
    # Rounds of 2 episodes; learning starts when 3 are stored, so after round 2: 3 x 2 per round from then on.
    assert summary["episodes"] == 8 and summary["updates"] == len(seen) == 3 * (8 - 2)
    for ep in train_eps:
        assert len(set(ep["updates"])) == 1                   # no update while an episode is collected
    assert all(ep["updates"][0] == 0 for ep in train_eps[:4])  # rounds 1 and 2: before any update
    seed_actions = np.concatenate([np.concatenate(ep["actions"]) for ep in train_eps[:4]])
    assert seed_actions.min() >= -1 and seed_actions.max() <= 1 and seed_actions.std() > 0.4   # uniform: std 0.58

    for batch in seen:
        assert batch.frames.shape == (4, 8, 64, 64, 3) and batch.actions.shape == (4, 7, 1)
        for frames, actions, rewards in zip(batch.frames, batch.actions, batch.rewards):
            assert is_piece_of_an_episode(train_eps, frames, actions, rewards)

    # What a world-model user looks at: the loss terms, the return, the videos.
    records = read_metrics(cfg.out)
    trains = [r for r in records if r["kind"] == "train" and "loss" in r]
    evals = [r for r in records if r["kind"] == "eval"]
    assert trains and {"recon_nll", "reward_nll", "kl", "grad_norm"} <= set(trains[-1])
    assert evals and {"mean_return", "openloop_mse", "episodes"} <= set(evals[-1])
    videos = sorted(p.name for p in (Path(cfg.out) / "videos").iterdir())
    assert videos == ["eval_000000040.gif", "eval_000000080.gif", "openloop_000000040.gif", "openloop_000000080.gif"]
    import imageio.v2 as imageio
    grid = imageio.mimread(Path(cfg.out) / "videos" / "openloop_000000080.gif")
    assert grid[0].shape == (2 * 64, 3 * 64 + 2 * 2, 3)       # 2 chunks; truth | prediction | error


# ------------------------------------------------------------------ resume and determinism
def test_resume_is_exact_and_runs_are_deterministic(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(bar_config(straight))
    again = tmp_path / "again"
    train(bar_config(again))
    assert without_timing(read_metrics(again)) == without_timing(read_metrics(straight))

    out = tmp_path / "resumed"
    original, calls = online_mod.OnlineRun.collect_round, []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(online_mod.OnlineRun, "collect_round", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train(bar_config(out))
    monkeypatch.undo()
    train(bar_config(out))
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(straight))
    a = torch.load(out / "checkpoint.pt", weights_only=False)["agent"]["model"]
    b = torch.load(straight / "checkpoint.pt", weights_only=False)["agent"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = tmp_path / "seed1"
    train(bar_config(other, seed=1))
    assert without_timing(read_metrics(other)) != without_timing(read_metrics(straight))


# ------------------------------------------------------------------ variants
@pytest.mark.parametrize("variant", [{"model": "deterministic"}, {"model": "stochastic"},
                                     {"planner": "random_shooting"}, {"collect": "random"},
                                     {"overshooting": 3, "overshooting_beta": 0.5}])
def test_each_variant_of_the_paper_trains_and_acts(variant):
    cfg = bar_config("unused")
    cfg.planet = dataclasses.replace(cfg.planet, **variant)
    env = importlib.import_module("tests.support.bar_env").make_bar_env()
    spec = spec_of(env, frame_stack=1)
    agent = make_agent("planet", cfg, spec, torch.device("cpu"), seed=0)
    rng = np.random.default_rng(0)
    from pixelplan.data.samplers import SequenceBatch
    batch = SequenceBatch(frames=rng.integers(0, 256, (4, 8, 64, 64, 3), dtype=np.uint8),
                          actions=rng.uniform(-1, 1, (4, 7, 1)).astype(np.float32),
                          rewards=rng.uniform(0, 1, (4, 7)).astype(np.float32),
                          start=np.zeros(4, np.int64), first=np.ones(4, bool))
    metrics = agent.update(batch)
    assert np.isfinite(metrics["loss"]) and ("kl_overshooting" in metrics) == ("overshooting" in variant)
    frames = np.stack([env.reset(seed=s)[0] for s in range(3)])[:, None]
    rows = np.array([0, 5, 2])
    agent.begin_episodes(rows, None, explore=True)
    for explore in (True, False):
        decision = agent.act(frames, None, np.zeros(3, np.int64), explore=explore, env_steps=0, rows=rows)
        assert decision.actions.shape == (3, 1) and decision.actions.dtype == np.float32
        assert (np.abs(decision.actions) <= 1).all() and not decision.stop.any()
    belief = agent._belief[5]
    if variant.get("model") == "deterministic":
        assert torch.equal(belief.z_stoch, belief.mean) and torch.equal(belief.std, torch.ones_like(belief.std))
    if variant.get("model") == "stochastic":
        assert agent.model.rssm.feature_dim == cfg.planet.stoch


def test_random_shooting_executes_the_best_of_its_candidates():
    """Random shooting is one round of sampling: the executed action is the first action of the
    best-scoring candidate, which is also what brute force over the same candidates picks."""
    cfg = bar_config("unused", **{"planet.planner": "random_shooting", "planet.candidates": 32, "planet.horizon": 3})
    env = importlib.import_module("tests.support.bar_env").make_bar_env()
    agent = make_agent("planet", cfg, spec_of(env, frame_stack=1), torch.device("cpu"), seed=0)
    agent.begin_episodes(np.array([0]), None, explore=False)
    belief = agent._filter(env.reset(seed=0)[0][None, None], np.array([0]))
    scored = []
    import pixelplan.agents.planet as planet_mod
    real_cem = planet_mod.cem

    def recording_cem(score_fn, **kw):
        def wrapped(actions):
            s = score_fn(actions)
            scored.append((actions.clone(), s.clone()))
            return s
        return real_cem(wrapped, **kw)

    planet_mod.cem = recording_cem
    try:
        with torch.no_grad():
            action = agent.plan(belief)
    finally:
        planet_mod.cem = real_cem
    (actions, scores), = scored
    best = int(scores[0].argmax())
    assert torch.equal(action[0], actions[0, best, 0])


# ------------------------------------------------------------------ presets and refusals
def test_the_paper_preset_is_appendix_a_and_the_cpu_preset_says_what_it_shrinks():
    paper = config_lib.preset("paper", "dmc:cartpole-swingup", "planet")
    p = paper.planet
    assert (p.deter, p.stoch, p.hidden, p.cnn_depth, p.free_nats, p.overshooting) == (200, 30, 200, 32, 3.0, 0)
    assert (p.lr, p.adam_eps, p.grad_clip, p.batch_size, p.chunk_length) == (1e-3, 1e-4, 1000.0, 50, 50)
    assert (p.horizon, p.iterations, p.candidates, p.elites, p.explore_noise) == (12, 10, 1000, 100, 0.3)
    assert (paper.seed_episodes, paper.updates_per_episode, paper.frame_stack, paper.n_envs) == (5, 100, 1, 1)
    assert paper.env_options == {"task": "reward"} and paper.steps == 1000 * 125 and paper.eval_episodes == 10
    assert config_lib.preset("auto", "dmc:walker-walk", "planet").steps == 1000 * 500     # repeat 2: T = 500
    cpu = config_lib.preset(["paper", "cpu"], "dmc:cartpole-swingup", "planet")
    assert cpu.steps == 100 * 125 and cpu.updates_per_episode == 20 and cpu.planet.candidates == 300
    both = config_lib.preset(["cpu", "debug"], "dmc:cartpole-swingup", "planet")
    assert both.steps == config_lib.preset("debug", "dmc:cartpole-swingup", "planet").steps == 600
    with pytest.raises(ValueError, match="cpu preset is PlaNet's"):
        config_lib.preset("cpu", "dmc:cartpole-balance", "glamor")
    with pytest.raises(ValueError, match="no gridworld preset"):
        config_lib.preset("gridworld", "gridworld", "planet")
    glamor = config_lib.preset("paper", "dmc:cartpole-balance")
    assert glamor.agent == "glamor" and glamor.frame_stack == 4       # other agents' presets unchanged


@pytest.mark.parametrize("args,match", [
    (["--env", "gridworld", "--preset", "paper", "debug"], "PlaNet plans continuous actions"),
    (["--env", "tests.support.point_env:make_goal_env", "--preset", "paper", "debug"], "has none"),
    (["--env", "tests.support.point_env:make_reward_env", "--preset", "paper", "debug"], "64x64 RGB"),
])
def test_envs_planet_cannot_take_are_one_line_errors_with_exit_code_2(tmp_path, args, match):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pixelplan", "train", "--agent", "planet", *args, "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("pixelplan: warning")]
    assert len(lines) == 1 and match in lines[0], proc.stderr
    assert not out.exists()


def test_summary_and_config_of_a_planet_run(tmp_path):
    cfg = bar_config(tmp_path / "run", steps=40)
    summary = train(cfg)
    saved = json.loads((Path(cfg.out) / "config.json").read_text())
    assert saved["agent"] == "planet" and saved["planet"]["horizon"] == 4 and saved["seed_episodes"] == 2
    assert summary["agent"] == "planet" and summary["updates"] == 2 * 4 and "mean_return" in summary   # both rounds end with 2 episodes stored
    # The learning curve is drawn against training episodes, the paper's axis.
    from pixelplan.runs import plots
    assert (Path(cfg.out) / "learning_curve.png").stat().st_size > 0
    evals = [r for r in read_metrics(cfg.out) if r["kind"] == "eval"]
    assert [r["episodes"] for r in evals] == [4]
    with pytest.raises(ValueError, match="'steps' or 'episodes'"):
        plots.learning_curve(evals, tmp_path / "x.png", x="updates")
