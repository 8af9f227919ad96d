"""MBOLD's speed on this machine: training throughput of each model and planning time per action.

    python benchmarks/mbold_speed.py [--repeats 5] [--rows 1 8] [--precision fp32 bf16] [--quick]

With the paper's sizes (64 x 64 frames, 4-D actions; table 2 and 3) and random inputs:

* ``train``: one update of each model, median seconds over ``repeats`` (after a warm-up) and
  samples per second: the video model (16 windows of 15 frames: 16 x 14 predicted frames), the
  Q-function (TD3 twin critics, CQL's 10 random actions and the actor, 64 pairs), the VAE and
  the temporal-distance regressor (64 each);
* ``plan``: one CEM plan (horizon 13, 3 iterations, 200 candidates, 10 elites) scored by
  MBOLD's Q on the final predicted frame, for ``rows`` env rows planned together; seconds per
  plan and per executed action (a plan is executed for 6 actions), for each video-model
  precision asked for. The paper reports about 2 s per action on a GPU (appendix D).

``--quick`` shrinks everything to a smoke run (the test suite's). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _agent(precision: str, quick: bool):
    from pixelplan import config as config_lib
    from pixelplan.agents.mbold import MboldAgent
    from pixelplan.spec import EnvSpec

    cfg = config_lib.preset(["paper", "debug"] if quick else "paper", env="tabletop:push1", agent="mbold")
    cfg.dataset = "benchmark"            # the agent is built for offline training; no file is read here
    cfg.mbold.precision = precision
    size = 32 if quick else 64
    spec = EnvSpec(frame_shape=(size, size, 3), frame_stack=2, n_actions=None, max_episode_steps=30,
                   action_shape=(4,), action_low=(-1,) * 4, action_high=(1,) * 4, actuated_features=(4, 5, 6))
    return cfg, spec, MboldAgent(cfg, spec, torch.device("cpu"), seed=0)


def _median_seconds(fn, repeats: int) -> float:
    fn()                                            # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_speed(repeats: int, quick: bool) -> dict:
    from pixelplan.data.samplers import GoalPairBatch, SequenceBatch

    cfg, spec, agent = _agent("auto", quick)
    m, rng = cfg.mbold, np.random.default_rng(0)
    h, w, c = spec.frame_shape
    windows = SequenceBatch(frames=rng.integers(0, 256, (m.video_batch, m.window, h, w, c), dtype=np.uint8),
                            actions=rng.uniform(-1, 1, (m.video_batch, m.window - 1, 4)).astype(np.float32),
                            rewards=None, start=None, first=None)
    b = m.batch_size
    frames = rng.integers(0, 256, (b, 2, h, w, c), dtype=np.uint8)
    pairs = GoalPairBatch(state=frames, action=rng.uniform(-1, 1, (b, 4)).astype(np.float32),
                          next_state=np.roll(frames, 1, 0), goal=frames[:, -1], offset=np.arange(b) % 4 + 1,
                          negative=np.arange(b) % 2 == 0, start=np.arange(b))
    out = {"precision": agent.precision}
    t = _median_seconds(lambda: agent._video_step(windows), repeats)
    out["video"] = {"seconds": round(t, 4), "frames_per_s": round(m.video_batch * (m.window - 1) / t, 1),
                    "batch": m.video_batch, "window": m.window}
    t = _median_seconds(lambda: agent._q_step(pairs), repeats)
    out["q"] = {"seconds": round(t, 4), "samples_per_s": round(b / t, 1), "batch": b}
    for name in ("vae", "temporal"):
        cfg.mbold.distance = name
        other = type(agent)(cfg, spec, torch.device("cpu"), seed=0)
        step = other._vae_step if name == "vae" else other._temporal_step
        t = _median_seconds(lambda: step(pairs), repeats)
        out[name] = {"seconds": round(t, 4), "samples_per_s": round(b / t, 1), "batch": b}
    return out


def plan_speed(rows: list[int], precisions: list[str], repeats: int, quick: bool) -> list[dict]:
    out = []
    for precision in precisions:
        cfg, spec, agent = _agent(precision, quick)
        m = cfg.mbold
        rng = np.random.default_rng(1)
        for n in rows:
            state = rng.integers(0, 256, (n, 2, *spec.frame_shape), dtype=np.uint8)
            goal = rng.integers(0, 256, (n, *spec.frame_shape), dtype=np.uint8)
            last = np.zeros((n, m.context - 1, 4), np.float32)
            t = _median_seconds(lambda: agent.plan(state, goal, last), repeats)
            out.append({"precision": agent.precision, "rows": n, "seconds_per_plan": round(t, 3),
                        "seconds_per_action": round(t / m.execute / n, 4), "horizon": m.horizon,
                        "iterations": m.iterations, "candidates": m.candidates, "execute": m.execute})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "auto"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, one repeat")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    repeats = 1 if opts.quick else opts.repeats
    result = {"threads": torch.get_num_threads(), "train": train_speed(repeats, opts.quick),
              "plan": plan_speed(opts.rows, opts.precision, repeats, opts.quick)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
