"""Why does a grid-world run fail where it fails? Three views of one trained run.

    python benchmarks/grid_diagnostics.py --run runs/fourrooms-s0
    python benchmarks/grid_diagnostics.py --run runs/fourrooms-s0 --gammas 0.1 0.3 0.6 --trials 50 200

1. **By distance**: the run's evaluation (its own planner settings), split by the shortest-path
   distance from the start to the goal: success, optimal, and how the failures ended (the
   agent said "END" somewhere else, or ran out of time T).
2. **Coverage**: how far from the start the stored training episodes got (the largest
   shortest-path distance reached in each episode), for the oldest, middle and newest third of
   the replay. If the far cells are never in the data, no model can plan to them.
3. **Planner settings** (optional, ``--gammas``/``--trials``): the same weights evaluated with
   other length penalties and trial counts, to tell a planner limit from a model limit.

Works for the built-in grid world and its layouts (it needs the env's ``optimal_steps`` and a
frame per free cell). Prints Markdown tables, and one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

BUCKETS = ((0, 4), (5, 8), (9, 12), (13, 16), (17, 10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a grid-world run directory written by pixelplan train")
    parser.add_argument("--gammas", type=float, nargs="*", default=[], help="length penalties to re-evaluate with")
    parser.add_argument("--trials", type=int, nargs="*", default=[], help="planner trials to re-evaluate with")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as pixelplan eval)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from pixelplan.data.replay import ReplayBuffer
    from pixelplan.runs.evaluate import evaluate
    from pixelplan.runs.train import CHECKPOINT, load_agent

    cfg, agent, factory, goals = load_agent(args.run)
    env = factory()
    grid = env.unwrapped
    if not hasattr(grid, "optimal_steps") or not hasattr(grid, "free_cells"):
        raise SystemExit(f"{args.run}: {cfg.env} is not a grid world (needs optimal_steps and free_cells)")
    _, info = env.reset(seed=10_000)
    start = info["features"]
    distance = np.array([grid.optimal_steps(start, g.features) for g in goals])
    T = agent.spec.max_episode_steps
    out: dict = {"run": str(args.run), "env": cfg.env, "T": T}

    result = evaluate(agent, factory, goals)
    d = distance[result.goal_index]
    print(f"## {cfg.env}: evaluation by shortest-path distance from the start (T = {T})\n")
    print("| distance | goals | success | optimal | failed: END elsewhere | failed: out of time |")
    print("|---|---|---|---|---|---|")
    out["by_distance"] = []
    for lo, hi in BUCKETS:
        m = (d >= lo) & (d <= hi)
        if not m.any():
            continue
        row = {"distance": f"{lo}-{hi}", "goals": int(m.sum()), "success": float(result.success[m].mean()),
               "optimal": float(result.optimal[m].mean()) if result.optimal is not None else None,
               "fail_end": int((m & ~result.success & (result.steps < T)).sum()),
               "fail_time": int((m & ~result.success & (result.steps >= T)).sum())}
        out["by_distance"].append(row)
        print(f"| {row['distance']} | {row['goals']} | {row['success']:.2f} | {row['optimal']:.2f} | "
              f"{row['fail_end']} | {row['fail_time']} |")

    # Coverage: which cell each stored frame shows, by exact match with the cells' own frames.
    payload = torch.load(Path(args.run) / CHECKPOINT, map_location="cpu", weights_only=False, mmap=True)
    replay = ReplayBuffer(cfg.replay_capacity, agent.spec.frame_shape, agent.spec.frame_stack)
    replay.load_state_dict(payload["replay"])
    cell_of = {grid.goal_at(c).frame.tobytes(): c for c in map(tuple, grid.free_cells)}
    reach = []
    for frames, _ in replay.episodes():
        cells = [cell_of.get(f.tobytes()) for f in frames]
        reach.append(max(grid.optimal_steps(start, np.asarray(c, float)) for c in cells if c is not None))
    reach = np.array(reach)
    far = int(distance.max())
    print(f"\n## Coverage: farthest distance reached per stored episode ({len(reach)} episodes; "
          f"farthest goal: {far})\n")
    print(f"| replay third | mean | reached >= {far // 2 + 2} | reached >= {far - 2} |")
    print("|---|---|---|---|")
    out["coverage"] = []
    for name, part in zip(("oldest", "middle", "newest"), np.array_split(reach, 3)):
        row = {"third": name, "mean": float(part.mean()), "half": float((part >= far // 2 + 2).mean()),
               "far": float((part >= far - 2).mean())}
        out["coverage"].append(row)
        print(f"| {name} | {row['mean']:.1f} | {row['half']:.2f} | {row['far']:.2f} |")

    if args.gammas or args.trials:
        print("\n## The same weights under other planner settings\n")
        print("| gamma | trials | success | optimal |")
        print("|---|---|---|---|")
        out["planner"] = []
        for gamma in args.gammas or [agent.cfg.gamma]:   # gamma has no override yet: set on this copy
            for trials in args.trials or [agent.eval_trials]:
                agent.cfg.gamma, agent.eval_trials = gamma, trials
                m = evaluate(agent, factory, goals).metrics()
                out["planner"].append({"gamma": gamma, "trials": trials, **m})
                print(f"| {gamma} | {trials} | {m['success_rate']:.2f} | {m.get('optimal_rate', float('nan')):.2f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
