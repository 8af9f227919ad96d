"""PlaNet's speed: a CEM decision and a training update of the paper's model, against the
machine's measured peak.

    python benchmarks/planet_speed.py                 # CPU, and CUDA too when torch sees a GPU
    python benchmarks/planet_speed.py --quick         # tiny sizes (CI smoke run)
    python benchmarks/planet_speed.py --only cem      # one part (cem, update)

* ``cem``: one MPC decision of the agent as built (``agents/planet.py``): filter the belief with
  one 64x64 frame, then CEM over latent rollouts at the paper's size (H = 12, I = 10, J = 1000,
  K = 100; 120,000 latent transitions, each scored by the reward model), for one env row and
  for 10 side by side (an evaluation). ``ms_per_decision``: median of interleaved repeats.
  ``gflop``: the decision's matmuls (FlopCounterMode: the GRU cell, the prior, the reward
  model, the encoder); ``fraction_of_fp32_peak``: achieved GFLOP/s over the fp32 matmul peak
  measured in the same rounds; ``bound_ms``: the decision at that peak.
* ``update``: one training update (equation 3, forward, backward, Adam) on 50 chunks of 50
  frames, with the encoder and decoder in fp32 and in bf16 (``planet.precision``; bf16 only
  where the device computes it natively), interleaved; GFLOP of each and fraction of the
  fp32 and bf16 peaks.

Env steps/s of the six tasks with PlaNet's observation: ``benchmarks/throughput.py --only
planet_envs``. Prints one JSON object per device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import _count_flops, _interleaved_times, _matmul_peak_fns  # noqa: E402

from pixelplan import config as config_lib  # noqa: E402
from pixelplan.agents.planet import PlanetAgent  # noqa: E402
from pixelplan.data.samplers import SequenceBatch  # noqa: E402
from pixelplan.nets.encoders import native_bf16  # noqa: E402
from pixelplan.spec import EnvSpec  # noqa: E402


def _agent(device: str, quick: bool, action_dim: int = 6, **planet) -> PlanetAgent:
    cfg = config_lib.preset("paper", "dmc:cheetah-run", "planet")
    if quick:
        cfg = config_lib.preset(["paper", "debug"], "dmc:cheetah-run", "planet")
    cfg.planet = dataclasses.replace(cfg.planet, **planet)
    spec = EnvSpec((64, 64, 3), 1, None, 250, action_shape=(action_dim,), action_low=(-1.0,) * action_dim,
                   action_high=(1.0,) * action_dim, has_reward=True)
    return PlanetAgent(cfg, spec, torch.device(device), seed=0)


def bench_cem(device: str, quick: bool, repeats: int) -> dict:
    agent = _agent(device, quick)
    frames = {rows: np.random.default_rng(0).integers(0, 256, (rows, 1, 64, 64, 3), dtype=np.uint8) for rows in (1, 10)}

    def decision(rows: int):
        ids = np.arange(rows)

        def call():
            agent.begin_episodes(ids, None, explore=False)
            agent.act(frames[rows], None, np.zeros(rows, np.int64), explore=False, env_steps=0, rows=ids)
        return call

    fns = {"rows1": decision(1), "rows10": decision(10)}
    peak_fns, peak_flop, peak_info = _matmul_peak_fns(device, quick)
    times = _interleaved_times({**fns, **peak_fns}, repeats, 1, device)
    peak32 = peak_flop / np.median(times["mm_fp32"]) / 1e9
    p = agent.cfg
    out = {"size": {"horizon": p.horizon, "iterations": p.iterations, "candidates": p.candidates, "elites": p.elites,
                    "transitions_per_row": p.horizon * p.iterations * p.candidates},
           "peak_fp32_gflops": round(peak32, 1), "threads": peak_info["threads"], "repeats": repeats}
    for name, fn in fns.items():
        gflop = sum(_count_flops(fn).values()) / 1e9
        ms = float(np.median(times[name])) * 1000
        out[name] = {"ms_per_decision": round(ms, 2), "gflop": round(gflop, 3),
                     "gflops_achieved": round(gflop / ms * 1000, 1),
                     "fraction_of_fp32_peak": round(gflop / ms * 1000 / peak32, 3),
                     "bound_ms": round(gflop / peak32 * 1000, 2)}
    return out


def bench_update(device: str, quick: bool, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    b, length = (4, 8) if quick else (50, 50)
    batch = SequenceBatch(frames=rng.integers(0, 256, (b, length, 64, 64, 3), dtype=np.uint8),
                          actions=rng.uniform(-1, 1, (b, length - 1, 6)).astype(np.float32),
                          rewards=rng.uniform(0, 1, (b, length - 1)).astype(np.float32),
                          start=np.zeros(b, np.int64), first=np.ones(b, bool))
    kinds = ["fp32"] + (["bf16"] if native_bf16(torch.device(device)) else [])
    agents = {k: _agent(device, quick, precision=k, batch_size=b, chunk_length=length) for k in kinds}
    fns = {k: (lambda a=a: a.update(batch)) for k, a in agents.items()}
    peak_fns, peak_flop, _ = _matmul_peak_fns(device, quick)
    times = _interleaved_times({**fns, **peak_fns}, repeats, 1, device)
    peaks = {k: peak_flop / np.median(times[f"mm_{k}"]) / 1e9 for k in ("fp32", "bf16")}
    out = {"batch": [b, length], "peak_gflops": {k: round(v, 1) for k, v in peaks.items()}, "repeats": repeats}
    for k, fn in fns.items():
        gflop = sum(_count_flops(fn).values()) / 1e9
        s = float(np.median(times[k]))
        out[k] = {"s_per_update": round(s, 3), "gflop": round(gflop, 1), "gflops_achieved": round(gflop / s, 1),
                  "fraction_of_fp32_peak": round(gflop / s / peaks["fp32"], 3),
                  "fraction_of_bf16_peak": round(gflop / s / peaks["bf16"], 3)}
    if "bf16" in out:
        out["bf16_over_fp32"] = round(out["bf16"]["s_per_update"] / out["fp32"]["s_per_update"], 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--only", nargs="+", choices=["cem", "update"], default=["cem", "update"])
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    for device in devices:
        result = {"device": device}
        if "cem" in args.only:
            result["cem"] = bench_cem(device, args.quick, args.repeats or (2 if args.quick else 5))
        if "update" in args.only:
            result["update"] = bench_update(device, args.quick, args.repeats or (2 if args.quick else 3))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
