"""Throughput: env steps/s while training, training samples/s, and planner ms per decision.

    python benchmarks/throughput.py            # CPU, and CUDA too when torch sees a GPU
    python benchmarks/throughput.py --quick    # smaller budgets (CI smoke run)

* ``train_env_steps_per_s``: the grid-world preset's training loop (collection with
  planning, replay, updates at its replay ratio), measured after learning has started.
* ``train_samples_per_s``: hindsight samples through one GLAMOR update, for the grid-world
  model (27x27 frames) and the paper's model (IMPALA encoders, 104x80 frames, batch 200,
  K = 50, 18 actions).
* ``planner_ms_per_decision``: the planner's work for one decision with the paper's model:
  sample 50 trials of 50 tokens with both LSTMs (idm and prior) from the encoded state and
  goal, score, take the argmax. Every trial runs the full 50 tokens
  (``termination=plan_end``: the worst case); ``_early``: END allowed, so sampling stops
  once every trial has ended.
* ``decision_ms_mpc``: a whole MPC decision of the agent: encode the state (104x80, IMPALA),
  mix it with the goal's code (cached from the episode's first decision), plan.
  ``decision_ms_cold``: the same for a goal never seen before, so its frame is encoded too.
* ``dmc_env_steps_per_s``: DM Control collection speed per task: 8 envs (frame stack 4) in
  an ``EnvPool`` with one worker process per core, uniform random actions; each agent step
  renders one 80x104 frame (point_mass: after 4 physics steps). Also with the envs in the
  calling process (``workers=0``). ``--quick`` times two tasks with tiny goal sets.
* ``atari_env_steps_per_s``: the same for the Atari games, with the full preprocessing
  (frame skip 4, sticky actions, max over two frames, 104x80 grayscale, life loss ends the
  episode), 200 vector steps per game. In both suites a row whose episode ends is reset at
  once, with its reset timed. The Atari envs are built with small goal sets: the sets do not
  change stepping speed, and building 14 full ones first would take 7 minutes.
* ``glamor_atari_train``: wall-clock of GLAMOR training with the paper preset on atari:pong
  for ``--glamor-atari-steps`` agent steps (default 100,000; 0 skips it), evaluating and
  checkpointing every 25,000 as the results runs do, and that time per 100k agent steps.
  The paper preset learns from step 50,000 on, so the first 100k are half collection only.
  ``--quick`` runs the debug preset for 300 steps instead (a smoke run, not a figure).

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _paper_agent(device: str, n_actions: int = 18):
    from pixelplan.agents.base import ObsSpec
    from pixelplan.agents.glamor import GlamorAgent
    from pixelplan.config import Config
    spec = ObsSpec(frame_shape=(104, 80), frame_stack=4, n_actions=n_actions, max_episode_steps=50)
    return GlamorAgent(Config(device=device), spec, torch.device(device), seed=0), spec


def planner_ms(device: str, repeats: int) -> dict:
    from pixelplan.nets.action_model import TokenStepper
    from pixelplan.planners.shooting import shoot
    agent, spec = _paper_agent(device)
    rng = np.random.default_rng(0)
    state = rng.integers(0, 255, (1, 4, 104, 80), dtype=np.uint8)
    goal = rng.integers(0, 255, (1, 104, 80), dtype=np.uint8)
    limit = np.array([50])
    out = {}
    with torch.no_grad():
        idm_code, prior_code = agent.model.codes(torch.as_tensor(state, device=device),
                                                 torch.as_tensor(goal, device=device))
        limits = torch.full((1,), 50, device=device)

        def planner(termination):
            stepper = TokenStepper([agent.model.idm, agent.model.prior], [idm_code, prior_code])
            shoot(stepper, spec.n_actions, limits, trials=50, termination=termination, generator=agent.generator)
        out["planner_ms_per_decision"] = _median_ms(lambda: planner("plan_end"), repeats)
        out["planner_ms_per_decision_early"] = _median_ms(lambda: planner("early"), repeats)
    # A whole MPC decision: the goal is encoded once per episode (the agent caches it), so
    # a decision encodes the state, mixes the codes, plans.
    out["decision_ms_mpc"] = _median_ms(lambda: agent.plan(state, goal, limit, 50, termination="plan_end"),
                                        repeats)
    # Cold: a goal seen for the first time, so its frame is encoded too.
    fresh = iter(rng.integers(0, 255, (repeats + 10, 1, 104, 80), dtype=np.uint8))
    out["decision_ms_cold"] = _median_ms(lambda: agent.plan(state, next(fresh), limit, 50,
                                                            termination="plan_end"), repeats)
    return {k: round(v, 2) for k, v in out.items()}


def samples_per_s(device: str, repeats: int) -> dict:
    from pixelplan import config as config_lib
    from pixelplan.data.replay import ReplayBuffer
    from pixelplan.runs.train import prepare
    out = {}
    cfg = config_lib.preset("gridworld")
    cfg.device = device
    _, _, spec, grid_agent, _ = prepare(cfg)
    paper_agent, paper_spec = _paper_agent(device)
    for name, agent, sp, max_k in (("gridworld", grid_agent, spec, spec.max_episode_steps),
                                   ("paper_104x80", paper_agent, paper_spec, 50)):
        rng = np.random.default_rng(0)
        replay = ReplayBuffer(20 * (max_k + 1), sp.frame_shape, sp.frame_stack)
        for _ in range(20):
            replay.add_episode(rng.integers(0, 255, (max_k + 1, *sp.frame_shape), dtype=np.uint8),
                               rng.integers(0, sp.n_actions, max_k))
        batch = replay.sample(agent.batch_size, max_k, rng)
        ms = _median_ms(lambda: agent.update(batch), repeats if name == "gridworld" else max(2, repeats // 4),
                        warmup=1)
        out[f"train_samples_per_s_{name}"] = round(agent.batch_size / ms * 1000, 1)
        out[f"update_ms_{name}"] = round(ms, 1)
    return out


def training_loop_steps_per_s(device: str, steps: int) -> dict:
    from pixelplan import config as config_lib
    from pixelplan.runs.logging import read_metrics
    from pixelplan.runs.train import train
    cfg = config_lib.preset("gridworld")
    cfg.device, cfg.steps, cfg.progress = device, steps, False
    cfg.eval_every = cfg.checkpoint_every = 10 * steps    # only the final evaluation
    cfg.log_every = 500
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out = tmp
        train(cfg)
        logs = [r for r in read_metrics(tmp) if r["kind"] == "train" and r["step"] > cfg.min_steps_learn + 500]
    rates = [r["env_steps_per_s"] for r in logs]
    return {"train_env_steps_per_s": round(float(np.median(rates)), 1) if rates else None}


def env_steps_per_s(suite: str, names: list[str], vector_steps: int, goal_options: dict) -> dict:
    """Agent steps/s of 8 envs of ``suite:<name>``, pooled and in-process, single frames as the
    drivers step them (they stack frames themselves)."""
    from pixelplan.envs.vector import EnvFactory, EnvPool, default_workers
    out: dict = {}
    for name in names:
        factory = EnvFactory(f"{suite}:{name}", goal_options, frame_stack=1)
        factory()  # builds (or loads) the goal sets before timing
        row = {}
        for label, workers in (("pool", default_workers(8)), ("in_process", 0)):
            with EnvPool(factory, 8, workers) as pool:
                n_actions = pool.get("action_space").n
                rng = np.random.default_rng(0)
                pool.reset(range(8), range(8))
                start = time.perf_counter()
                for _ in range(vector_steps):
                    _, _, terminated, truncated, _ = pool.step(range(8), rng.integers(0, n_actions, 8))
                    ended = np.flatnonzero(terminated | truncated)
                    if len(ended):
                        pool.reset(ended, rng.integers(2**31, size=len(ended)))
                row[label] = round(8 * vector_steps / (time.perf_counter() - start), 1)
            row[f"{label}_workers"] = workers
        out[name] = row
        print(suite, name, row, flush=True)
    return {f"{suite}_env_steps_per_s": out}


def glamor_atari_train(steps: int, quick: bool) -> dict:
    from pixelplan import config as config_lib
    from pixelplan.runs.train import train
    cfg = config_lib.preset("debug" if quick else "paper", "atari:pong")
    cfg.steps, cfg.progress = steps, False
    cfg.replay_capacity = max(steps + 1000, 10_000)  # nothing is overwritten: same as the paper's 1e6
    if quick:
        cfg.env_options = dict(n_eval_goals=2, n_train_goals=4, range_rollouts=4)
    else:
        cfg.eval_every = cfg.checkpoint_every = 25_000
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out = tmp
        summary = train(cfg)
    wall = summary["wall_seconds"]
    return {"glamor_atari_train": {"env": cfg.env, "preset": cfg.preset, "steps": summary["env_steps"],
                                   "updates": summary["updates"], "wall_seconds": wall,
                                   "wall_seconds_per_100k": round(wall * 100_000 / summary["env_steps"], 1),
                                   "success_rate": summary.get("success_rate")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, for smoke runs")
    parser.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda if present)")
    parser.add_argument("--glamor-atari-steps", type=int, default=None,
                        help="agent steps of the GLAMOR-on-pong wall-clock run (default 100000, --quick 300; 0 skips)")
    args = parser.parse_args()
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    repeats = 5 if args.quick else 30
    results = {"benchmark": "throughput", "machine": platform.processor() or platform.machine(),
               "cpu_threads": torch.get_num_threads(), "quick": args.quick}
    for device in devices:
        r = {}
        r.update(planner_ms(device, repeats))
        print(device, r, flush=True)
        r.update(samples_per_s(device, repeats))
        print(device, r, flush=True)
        r.update(training_loop_steps_per_s(device, 1_500 if args.quick else 6_000))
        print(device, r, flush=True)
        if device == "cuda":
            r["gpu"] = torch.cuda.get_device_name()
        results[device] = r
    from pixelplan.envs.atari import PAPER_GAMES
    from pixelplan.envs.dmc import PAPER_TASKS
    if args.quick:
        tiny = dict(n_eval_goals=2, n_train_goals=2, range_rollouts=4)
        results.update(env_steps_per_s("dmc", ["point_mass-easy", "cartpole-balance"], 10, tiny))
        results.update(env_steps_per_s("atari", ["pong", "seaquest"], 20, tiny))
    else:
        results.update(env_steps_per_s("dmc", list(PAPER_TASKS), 100, {}))
        # Goal sets do not change stepping speed: small ones spare building 14 full sets first.
        results.update(env_steps_per_s("atari", list(PAPER_GAMES), 200,
                                       dict(n_eval_goals=2, n_train_goals=2, range_rollouts=4)))
    steps = args.glamor_atari_steps if args.glamor_atari_steps is not None else (300 if args.quick else 100_000)
    if steps > 0:
        results.update(glamor_atari_train(steps, args.quick))
        print("glamor_atari_train", results["glamor_atari_train"], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
