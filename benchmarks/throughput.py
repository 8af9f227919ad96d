"""Throughput: env steps/s while training, training samples/s, and planner ms per decision.

    python benchmarks/throughput.py            # CPU, and CUDA too when torch sees a GPU
    python benchmarks/throughput.py --quick    # smaller budgets (CI smoke run)
    python benchmarks/throughput.py --only update planner   # some parts only (see --help)

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
* ``decision_ms_mpc``: a whole MPC decision of the agent as it is built by default (its
  encoders at the resolved ``shared.precision``, ``decision_precision``): encode the state
  (104x80, IMPALA), mix it with the goal's code (cached from the episode's first decision),
  plan. ``decision_ms_mpc_fp32``: the same with an agent built with ``precision="fp32"``,
  timed interleaved with it. ``decision_ms_cold``: the default agent for a goal never seen
  before, so its frame is encoded too.
* ``update_ab`` (part ``update``): one GLAMOR update of the paper's DM Control model (IMPALA
  encoders, 80x104 grayscale frames, frame stack 4, 9 actions, T = 100, batch 200, K = 100)
  on one batch drawn as training draws it (start uniform over a replay of 40 random episodes
  of 100 steps, k uniform in 1..100 clipped to the steps left), by two agents built from the
  same seed: ``before`` (``shared.precision="fp32"``, ``glamor.lstm_buckets=1``: the old
  numerics exactly) and ``after`` (the defaults). Median seconds of 10 updates each after 2
  warm-ups, interleaved (the order alternates every round); ``ratio`` = after / before; the
  loss of both on the batch with the initial weights and its relative difference;
  ``sample_ms``: drawing that batch from the replay.
* ``flops``: GFLOP of one update (forward + backward + optimiser step) of each agent, counted
  by ``torch.utils.flop_counter.FlopCounterMode``. It counts matrix multiplications and
  convolutions only (mm, addmm, bmm, baddbmm, convolution and their backward passes);
  elementwise work, normalisation, pooling, softmax and the AdamW step count 0. The CPU LSTM
  (``aten.mkldnn_rnn_layer`` and its backward), which the counter does not know, is counted
  here as its matmuls: 2 x rows x tokens x 4H x (input + H) forward, twice that backward. By
  part: ``encoders`` (both IMPALA nets and their linear maps, counted alone on the same
  batch, forward + backward), ``lstm_recurrence`` (the LSTM ops above), ``other`` (the rest:
  mixer MLP, initial-state maps, gate projections, output heads). ``conv`` is the share that
  runs in bf16 under ``precision=bf16`` (convolutions and their backward).
* ``peak``: the machine's measured peak, timed in the same interleaved rounds as the updates
  (this shared VM's speed drifts by up to 2x within minutes): three 2048^3 matmuls
  (``torch.mm``) a sample, fp32 and bf16, median of the 10 rounds (``_range``: slowest and
  fastest), at torch's thread count (``threads``). Then for each
  update ``fraction_of_peak`` = GFLOP / seconds / peak GFLOP/s (``after`` against both peaks)
  and ``bound_s`` = GFLOP / peak, the update's time if every counted FLOP ran at that peak
  (``after``: also ``mixed``, the convolutions at the bf16 peak and the rest at the fp32 one).
* ``projection_500k``: wall-clock of the paper's 500k-agent-step DM Control run
  (``preset("paper", "dmc:cartpole-balance")``) from measured parts, the terms added one after
  the other (the loop is synchronous): updates = (steps - min_steps_learn) x replay_ratio /
  batch_size, x (the ``after`` update + drawing its batch); env steps (training, plus the
  evaluations' eval_episodes x T per evaluation) at ``dmc_env_steps_per_s`` of cartpole-balance
  in the pool when that part ran, else 632/s (docs/results.md, "DM Control env throughput",
  2 workers); collection planning: one plan per training episode (steps / T episodes), the
  n_envs episodes that start together planned in one batched call (8 rows, horizon T, cold
  goals); evaluation planning: steps / eval_every evaluations of eval_episodes (one per
  evaluation goal: 30) episodes side by side, T batched MPC decisions each, timed at the mean
  horizon T / 2. Planning is timed with ``termination="plan_end"`` and every episode runs to T:
  an upper bound (END stops sampling early in training runs). Not included: checkpoints (the
  replay is saved with them), logging, replay insertion.
* ``dmc_env_steps_per_s``: DM Control collection speed per task: 8 envs (single frames, as the
  drivers step them) in an ``EnvPool`` with one worker process per core, uniform random
  actions; each agent step renders one 80x104 frame (point_mass: after 4 physics steps). Also
  with the envs in the calling process (``workers=0``). ``--quick`` times two tasks with tiny
  goal sets.
* ``planet_env_steps_per_s``: the same for PlaNet's six tasks as reward tasks with its
  observation (``task reward``: 64x64 RGB, continuous actions uniform in the bounds, its
  action repeat, so each agent step is that many physics steps and one render).
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

``--quick`` runs every part with tiny budgets (``update``: batch 8, K = 40, 2 repeats; peak:
512^3): smoke runs, not figures (``"figure": false`` in those parts).

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


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _interleaved_s(fns: dict, repeats: int, warmup: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds of each function, timed in alternating order (one call of each per round,
    the order reversed every round) so that a noisy machine's drift hits all alike."""
    return {name: float(np.median(t)) for name, t in _interleaved_times(fns, repeats, warmup, device).items()}


def _interleaved_times(fns: dict, repeats: int, warmup: int, device: str = "cpu") -> dict[str, list[float]]:
    """The seconds of every timed call of :func:`_interleaved_s`."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _paper_agent(device: str, n_actions: int = 18, precision: str | None = None):
    from pixelplan.agents.base import ObsSpec
    from pixelplan.agents.glamor import GlamorAgent
    from pixelplan.config import Config
    spec = ObsSpec(frame_shape=(104, 80), frame_stack=4, n_actions=n_actions, max_episode_steps=50)
    cfg = Config(device=device)
    if precision is not None:
        cfg.shared.precision = precision
    return GlamorAgent(cfg, spec, torch.device(device), seed=0), spec


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
    # a decision encodes the state, mixes the codes, plans. The agent as built by default (its
    # encoders at the resolved precision) against one built with fp32 encoders, interleaved.
    fp32_agent, _ = _paper_agent(device, precision="fp32")
    mpc = _interleaved_s({"decision_ms_mpc": lambda: agent.plan(state, goal, limit, 50, termination="plan_end"),
                          "decision_ms_mpc_fp32": lambda: fp32_agent.plan(state, goal, limit, 50,
                                                                          termination="plan_end")},
                         repeats, warmup=3, device=device)
    out.update({k: v * 1000 for k, v in mpc.items()})
    # Cold: a goal seen for the first time, so its frame is encoded too.
    fresh = iter(rng.integers(0, 255, (repeats + 10, 1, 104, 80), dtype=np.uint8))
    out["decision_ms_cold"] = _median_ms(lambda: agent.plan(state, next(fresh), limit, 50,
                                                            termination="plan_end"), repeats)
    out = {k: round(v, 2) for k, v in out.items()}
    out["decision_precision"] = agent.precision
    return out


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


# --------------------------------------------------------------------------- update A/B
#: the paper's DM Control model: 80x104 grayscale frames, stack 4, 9 actions (3^2), T = 100
DMC_FRAME, DMC_ACTIONS, DMC_T = (80, 104), 9, 100
#: cartpole-balance, agent steps/s of 8 envs in 2 worker processes: docs/results.md, "DM Control
#: env throughput" (used when this run did not measure it)
DMC_CARTPOLE_POOL_STEPS_PER_S = 632.0


def _dmc_agent(device: str, batch_size: int, max_k: int, precision: str = "auto", lstm_buckets: int | None = None):
    from pixelplan.agents.base import ObsSpec
    from pixelplan.agents.glamor import GlamorAgent
    from pixelplan.config import Config
    spec = ObsSpec(frame_shape=DMC_FRAME, frame_stack=4, n_actions=DMC_ACTIONS, max_episode_steps=DMC_T)
    cfg = Config(device=device)
    cfg.shared.batch_size, cfg.shared.max_k, cfg.shared.precision = batch_size, max_k, precision
    if lstm_buckets is not None:
        cfg.glamor.lstm_buckets = lstm_buckets
    return GlamorAgent(cfg, spec, torch.device(device), seed=0)


def _rnn_layer_flop(input_shape, weight0_shape, weight1_shape, *args, **kwargs) -> int:
    """aten.mkldnn_rnn_layer (one LSTM layer, one direction): the input and recurrent matmuls."""
    four_h, n_in = weight0_shape
    tokens = int(np.prod(input_shape)) // n_in           # rows x steps, whatever the layout
    return 2 * tokens * four_h * (n_in + weight1_shape[1])


def _rnn_layer_backward_flop(input_shape, weight1_shape, weight2_shape, *args, **kwargs) -> int:
    """Its backward: gradients of the inputs and of the weights, twice the forward's matmuls."""
    return 2 * _rnn_layer_flop(input_shape, weight1_shape, weight2_shape)


def _count_flops(fn) -> dict:
    """FLOPs of ``fn()`` by operator (FlopCounterMode, plus the CPU LSTM's ops it does not know)."""
    from torch.utils.flop_counter import FlopCounterMode
    mapping = {torch.ops.aten.mkldnn_rnn_layer: _rnn_layer_flop,
               torch.ops.aten.mkldnn_rnn_layer_backward: _rnn_layer_backward_flop}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}


def _encoder_flops(agent, batch) -> dict:
    """Both encoders' share of an update: their forward and backward alone on the batch."""
    from pixelplan.agents.base import frames_to_channels
    model, dev, dims = agent.model, agent.device, len(agent.spec.frame_shape)

    def run():
        model.train()
        s = model.state_encoder(frames_to_channels(torch.as_tensor(batch.state, device=dev), dims))
        g = model.goal_encoder(frames_to_channels(torch.as_tensor(batch.goal, device=dev), dims))
        (s.sum() + g.sum()).backward()
    counts = _count_flops(run)
    model.zero_grad(set_to_none=True)
    return counts


def update_ab(device: str, quick: bool) -> tuple[dict, object]:
    """One update of the paper's DM Control model, before (fp32, one padded LSTM batch) and
    after (the defaults), on the same batch; returns the figures and the ``after`` agent."""
    from pixelplan.data.replay import ReplayBuffer
    batch_size, max_k = (8, 40) if quick else (200, 100)
    repeats, warmup, episodes = (2, 1, 4) if quick else (10, 2, 40)
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(episodes * (DMC_T + 1), DMC_FRAME, 4)
    for _ in range(episodes):
        replay.add_episode(rng.integers(0, 255, (DMC_T + 1, *DMC_FRAME), dtype=np.uint8),
                           rng.integers(0, DMC_ACTIONS, DMC_T))
    batch = replay.sample(batch_size, max_k, rng)
    sample_rng = np.random.default_rng(1)
    sample_s = _interleaved_s({"sample": lambda: replay.sample(batch_size, max_k, sample_rng)},
                              max(repeats, 5), warmup=1)["sample"]
    agents = {"before": _dmc_agent(device, batch_size, max_k, precision="fp32", lstm_buckets=1),
              "after": _dmc_agent(device, batch_size, max_k)}
    before, after = agents["before"], agents["after"]
    same_init = all(torch.equal(a, b) for a, b in zip(before.model.state_dict().values(),
                                                      after.model.state_dict().values()))
    with torch.no_grad():
        losses = {name: agent.loss(batch)[1]["loss"] for name, agent in agents.items()}
    # FLOPs first (each count is one update, so it doubles as a warm-up), then the timing.
    flops = {name: _count_flops(lambda agent=agent: agent.update(batch)) for name, agent in agents.items()}
    encoders = _encoder_flops(after, batch)
    # The machine's peak is timed in the same rounds as the updates: this shared VM's speed
    # drifts by 2x within minutes, so a peak measured apart from them would not be theirs.
    peak_fns, peak_flop, peak_info = _matmul_peak_fns(device, quick)
    fns = {name: (lambda agent=agent: agent.update(batch)) for name, agent in agents.items()}
    times = _interleaved_times({**fns, **peak_fns}, repeats, warmup, device)
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    peak = {**peak_info, "figure": not quick, "repeats": repeats,
            **{f"{dt}_gflops": round(peak_flop / seconds[f"mm_{dt}"] / 1e9, 1) for dt in ("fp32", "bf16")},
            **{f"{dt}_gflops_range": [round(peak_flop / max(times[f"mm_{dt}"]) / 1e9, 1),
                                      round(peak_flop / min(times[f"mm_{dt}"]) / 1e9, 1)] for dt in ("fp32", "bf16")}}
    conv_ops = ("aten.convolution", "aten.convolution_backward")
    lstm_ops = ("aten.mkldnn_rnn_layer", "aten.mkldnn_rnn_layer_backward")
    gflop = {}
    for name, counts in flops.items():
        total, enc = sum(counts.values()), sum(encoders.values())
        lstm = sum(counts.get(op, 0) for op in lstm_ops)
        gflop[name] = {"total": total / 1e9, "encoders": enc / 1e9, "lstm_recurrence": lstm / 1e9,
                       "other": (total - enc - lstm) / 1e9,
                       "conv": sum(counts.get(op, 0) for op in conv_ops) / 1e9}
    out = {
        "figure": not quick, "batch_size": batch_size, "max_k": max_k, "mean_k": round(float(batch.k.mean()), 2),
        "longest_tokens": int(batch.k.max()) + 1, "repeats": repeats, "warmup": warmup,
        "before": {"precision": before.precision, "lstm_buckets": before.cfg.lstm_buckets},
        "after": {"precision": after.precision, "lstm_buckets": after.cfg.lstm_buckets},
        "before_s": round(seconds["before"], 4), "after_s": round(seconds["after"], 4),
        "before_s_range": [round(min(times["before"]), 4), round(max(times["before"]), 4)],
        "after_s_range": [round(min(times["after"]), 4), round(max(times["after"]), 4)],
        "ratio": round(seconds["after"] / seconds["before"], 3),
        "same_initial_weights": same_init,
        "loss_before": losses["before"], "loss_after": losses["after"],
        "loss_rel_diff": abs(losses["after"] - losses["before"]) / abs(losses["before"]),
        "sample_ms": round(sample_s * 1000, 2),
    }
    flop_out = {"what": "matmuls and convolutions (FlopCounterMode, + the CPU LSTM's matmuls), forward + backward",
                **{name: {k: round(v, 3) for k, v in g.items()} for name, g in gflop.items()}}
    return {"update_ab": out, "flops": flop_out, "peak": peak}, after


def _matmul_peak_fns(device: str, quick: bool, burst: int = 3):
    """Timed calls for the machine's large-matmul peak, fp32 and bf16: each call is ``burst``
    n x n x n ``torch.mm``s (n = 2048 on a CPU). Returns (calls, FLOP per call, what they are)."""
    n = 512 if quick else (8192 if torch.device(device).type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    fns = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, generator=gen).to(device=device, dtype=dt) for _ in range(2))

        def call(a=a, b=b):
            for _ in range(burst):
                torch.mm(a, b)
        fns[f"mm_{name}"] = call
    return fns, burst * 2 * n ** 3, {"n": n, "matmuls_per_sample": burst, "threads": torch.get_num_threads()}


def roofline(update: dict, flops: dict, peak: dict) -> dict:
    """Fraction of the measured peak each update achieves, and its time at that peak."""
    p32, p16 = peak["fp32_gflops"], peak["bf16_gflops"]
    out = {}
    for name in ("before", "after"):
        g, s = flops[name]["total"], update[f"{name}_s"]
        row = {"gflops_achieved": round(g / s, 1), "fraction_of_fp32_peak": round(g / s / p32, 4),
               "bound_s_fp32": round(g / p32, 4), "bound_s_bf16": round(g / p16, 4)}
        if name == "after":
            row["fraction_of_bf16_peak"] = round(g / s / p16, 4)
            if update["after"]["precision"] == "bf16":
                conv = flops[name]["conv"]
                row["bound_s_mixed"] = round(conv / p16 + (g - conv) / p32, 4)
        out[name] = row
    return out


def plan_costs(agent, device: str, quick: bool) -> dict:
    """Batched planning of the DM Control model as a run does it (termination plan_end, the
    upper bound): collection, one plan per episode for the n_envs episodes that start
    together (cold goals, horizon T); evaluation, one MPC decision for the evaluation's
    episodes side by side (goal codes cached, the mean horizon T / 2)."""
    from pixelplan import config as config_lib
    cfg = config_lib.preset("paper", "dmc:cartpole-balance")
    n_collect, n_eval = cfg.n_envs, _eval_episodes(cfg)
    repeats = 2 if quick else 5
    rng = np.random.default_rng(2)
    frames = lambda n, *shape: rng.integers(0, 255, (n, *shape, *DMC_FRAME), dtype=np.uint8)  # noqa: E731
    states_c, states_e, goals_e = frames(n_collect, 4), frames(n_eval, 4), frames(n_eval)
    fresh = iter(frames(repeats + 4, n_collect))
    trials, eval_trials = cfg.glamor.trials, cfg.glamor.eval_trials or cfg.glamor.trials
    collect = _interleaved_s({"c": lambda: agent.plan(states_c, next(fresh), np.full(n_collect, DMC_T), trials,
                                                     termination="plan_end")}, repeats, warmup=1, device=device)["c"]
    evaluate = _interleaved_s({"e": lambda: agent.plan(states_e, goals_e, np.full(n_eval, DMC_T // 2), eval_trials,
                                                      termination="plan_end")}, repeats, warmup=1, device=device)["e"]
    return {"collect_plan_ms": round(collect * 1000, 2), "collect_rows": n_collect, "collect_horizon": DMC_T,
            "eval_decision_ms": round(evaluate * 1000, 2), "eval_rows": n_eval, "eval_horizon": DMC_T // 2,
            "trials": trials, "eval_trials": eval_trials, "precision": agent.precision}


def _eval_episodes(cfg) -> int:
    if cfg.eval_episodes is not None:
        return cfg.eval_episodes
    from pixelplan.envs import dmc
    return int(getattr(dmc, "_GOAL_SET_DEFAULTS", {}).get("n_eval_goals", 30))   # one per evaluation goal


def projection_500k(update: dict, plans: dict, dmc_steps_per_s: float | None, quick: bool) -> dict:
    """The paper's DM Control run's wall-clock from the measured parts (see the module doc)."""
    from pixelplan import config as config_lib
    cfg = config_lib.preset("paper", "dmc:cartpole-balance")
    steps, T = cfg.steps, DMC_T
    updates = (steps - cfg.min_steps_learn) * cfg.replay_ratio / cfg.shared.batch_size
    if dmc_steps_per_s:
        env_rate, env_source = dmc_steps_per_s, "measured in this run: dmc_env_steps_per_s cartpole-balance pool"
    else:
        env_rate = DMC_CARTPOLE_POOL_STEPS_PER_S
        env_source = "constant: docs/results.md 'DM Control env throughput', cartpole-balance, 2 workers"
    evaluations = steps // cfg.eval_every
    eval_env_steps = evaluations * plans["eval_rows"] * T
    episodes = steps / T
    terms_s = {
        "updates": updates * update["after_s"],
        "batch_sampling": updates * update["sample_ms"] / 1000,
        "env_steps_train": steps / env_rate,
        "env_steps_eval": eval_env_steps / env_rate,
        "planning_collection": episodes / plans["collect_rows"] * plans["collect_plan_ms"] / 1000,
        "planning_eval": evaluations * T * plans["eval_decision_ms"] / 1000,
    }
    return {
        "figure": not quick,
        "preset": cfg.preset, "steps": steps, "min_steps_learn": cfg.min_steps_learn,
        "replay_ratio": cfg.replay_ratio, "batch_size": cfg.shared.batch_size, "updates": updates,
        "update_s": update["after_s"], "env_steps_per_s": env_rate, "env_steps_source": env_source,
        "episodes": episodes, "evaluations": evaluations, "eval_episodes": plans["eval_rows"],
        "eval_env_steps": eval_env_steps,
        "assumptions": (f"collection: one plan per episode, {plans['collect_rows']} episodes planned together "
                        f"(horizon {T}, cold goals); evaluation every {cfg.eval_every} steps: "
                        f"{plans['eval_rows']} episodes side by side, {T} batched MPC decisions each, timed at "
                        f"horizon {plans['eval_horizon']} (the mean of T - t); planning with "
                        "termination=plan_end and episodes running to T (upper bound); "
                        "not included: checkpoints (they save the replay), logging, replay insertion"),
        "hours": {k: round(v / 3600, 3) for k, v in terms_s.items()},
        "total_hours": round(sum(terms_s.values()) / 3600, 2),
    }


def _print_update_part(device: str, r: dict) -> None:
    u, f, pk, roof = r["update_ab"], r["flops"], r["peak"], r["roofline"]
    tag = "" if u["figure"] else "  (--quick: not figures)"
    print(f"{device} update_ab{tag}: batch {u['batch_size']}, K {u['max_k']} (mean k {u['mean_k']}): "
          f"before ({u['before']['precision']}, buckets {u['before']['lstm_buckets']}) {u['before_s']:.3f} s, "
          f"after ({u['after']['precision']}, buckets {u['after']['lstm_buckets']}) {u['after_s']:.3f} s, "
          f"ratio {u['ratio']:.3f} (ranges {u['before_s_range']}, {u['after_s_range']}); "
          f"loss {u['loss_before']:.6f} vs {u['loss_after']:.6f} (rel diff {u['loss_rel_diff']:.2e})", flush=True)
    for name in ("before", "after"):
        g = f[name]
        print(f"{device} gflop {name}: {g['total']:.2f} (encoders {g['encoders']:.2f}, "
              f"lstm {g['lstm_recurrence']:.2f}, other {g['other']:.2f}; conv {g['conv']:.2f}); {roof[name]}",
              flush=True)
    print(f"{device} peak ({pk['threads']} threads, {pk['n']}^3, in the same rounds): fp32 {pk['fp32_gflops']} "
          f"GFLOP/s (range {pk['fp32_gflops_range']}), bf16 {pk['bf16_gflops']} GFLOP/s "
          f"(range {pk['bf16_gflops_range']})", flush=True)


def _print_projection(device: str, pr: dict) -> None:
    tag = "" if pr["figure"] else "  (--quick: not figures)"
    print(f"{device} projection_500k{tag}: {pr['updates']:.0f} updates x {pr['update_s']:.3f} s; "
          f"env {pr['env_steps_per_s']}/s ({pr['env_steps_source']})", flush=True)
    for term, hours in pr["hours"].items():
        print(f"    {term:22s} {hours:8.3f} h", flush=True)
    print(f"    {'total':22s} {pr['total_hours']:8.2f} h", flush=True)


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


def env_steps_per_s(suite: str, names: list[str], vector_steps: int, goal_options: dict,
                    key: str | None = None) -> dict:
    """Agent steps/s of 8 envs of ``suite:<name>``, pooled and in-process, single frames as the
    drivers step them (they stack frames themselves), uniform random actions (Discrete or Box)."""
    from pixelplan.envs.core import random_action
    from pixelplan.envs.vector import EnvFactory, EnvPool, default_workers
    out: dict = {}
    for name in names:
        factory = EnvFactory(f"{suite}:{name}", goal_options, frame_stack=1)
        factory()  # builds (or loads) the goal sets before timing
        row = {}
        for label, workers in (("pool", default_workers(8)), ("in_process", 0)):
            with EnvPool(factory, 8, workers) as pool:
                space = pool.get("action_space")
                rng = np.random.default_rng(0)
                pool.reset(range(8), range(8))
                start = time.perf_counter()
                for _ in range(vector_steps):
                    actions = [random_action(space, rng) for _ in range(8)]
                    _, _, terminated, truncated, _ = pool.step(range(8), actions)
                    ended = np.flatnonzero(terminated | truncated)
                    if len(ended):
                        pool.reset(ended, rng.integers(2**31, size=len(ended)))
                row[label] = round(8 * vector_steps / (time.perf_counter() - start), 1)
            row[f"{label}_workers"] = workers
        out[name] = row
        print(key or suite, name, row, flush=True)
    return {key or f"{suite}_env_steps_per_s": out}


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


PARTS = ("planner", "samples", "loop", "update", "dmc", "planet_envs", "atari", "train")
#: PlaNet's six tasks (its table 1), as reward tasks with its observation (64x64 RGB, its action repeat)
PLANET_TASKS = ("cartpole-swingup", "reacher-easy", "cheetah-run", "finger-spin", "ball_in_cup-catch", "walker-walk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, for smoke runs")
    parser.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda if present)")
    parser.add_argument("--glamor-atari-steps", type=int, default=None,
                        help="agent steps of the GLAMOR-on-pong wall-clock run (default 100000, --quick 300; 0 skips)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=None,
                        help="run these parts only (default: all): planner (planner_ms_*, decision_ms_*), samples "
                             "(train_samples_per_s_*), loop (train_env_steps_per_s), update (update_ab, flops, "
                             "peak, roofline, planning costs, projection_500k), dmc and atari (env steps/s), "
                             "train (glamor_atari_train)")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    repeats = 5 if args.quick else 30
    results = {"benchmark": "throughput", "machine": platform.processor() or platform.machine(),
               "cpu_threads": torch.get_num_threads(), "quick": args.quick, "parts": sorted(parts)}
    for device in devices:
        r = {}
        if "planner" in parts:
            r.update(planner_ms(device, repeats))
            print(device, r, flush=True)
        if "update" in parts:
            ab, after_agent = update_ab(device, args.quick)
            r.update(ab)
            r["roofline"] = roofline(r["update_ab"], r["flops"], r["peak"])
            r["plan_costs"] = plan_costs(after_agent, device, args.quick)
            del after_agent
            _print_update_part(device, r)
            print(device, "plan_costs", r["plan_costs"], flush=True)
        if "samples" in parts:
            r.update(samples_per_s(device, repeats))
            print(device, r, flush=True)
        if "loop" in parts:
            r.update(training_loop_steps_per_s(device, 1_500 if args.quick else 6_000))
            print(device, r, flush=True)
        if device == "cuda":
            r["gpu"] = torch.cuda.get_device_name()
        results[device] = r
    from pixelplan.envs.atari import PAPER_GAMES
    from pixelplan.envs.dmc import PAPER_TASKS
    tiny = dict(n_eval_goals=2, n_train_goals=2, range_rollouts=4)
    if "dmc" in parts:
        if args.quick:
            results.update(env_steps_per_s("dmc", ["point_mass-easy", "cartpole-balance"], 10, tiny))
        else:
            results.update(env_steps_per_s("dmc", list(PAPER_TASKS), 100, {}))
    if "planet_envs" in parts:
        # Agent steps/s; each agent step is `frame_skip` env steps (PlaNet's action repeat) and one render.
        results.update(env_steps_per_s("dmc", list(PLANET_TASKS[:2] if args.quick else PLANET_TASKS),
                                       5 if args.quick else 100, {"task": "reward"},
                                       key="planet_env_steps_per_s"))
    if "atari" in parts:
        # Goal sets do not change stepping speed: small ones spare building 14 full sets first.
        results.update(env_steps_per_s("atari", ["pong", "seaquest"] if args.quick else list(PAPER_GAMES),
                                       20 if args.quick else 200, tiny))
    cartpole = results.get("dmc_env_steps_per_s", {}).get("cartpole-balance", {}).get("pool")
    for device in devices:
        if "update" in parts:
            r = results[device]
            r["projection_500k"] = projection_500k(r["update_ab"], r["plan_costs"], cartpole, args.quick)
            _print_projection(device, r["projection_500k"])
    steps = args.glamor_atari_steps if args.glamor_atari_steps is not None else (300 if args.quick else 100_000)
    if "train" in parts and steps > 0:
        results.update(glamor_atari_train(steps, args.quick))
        print("glamor_atari_train", results["glamor_atari_train"], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
