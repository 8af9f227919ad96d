"""Figure 3a of the GLAMOR paper on the grid world: goal success and optimal rates against
the number of planner trials, for one trained model.

    python benchmarks/planning_compute.py                      # trains a model first (grid preset)
    python benchmarks/planning_compute.py --run runs/gridworld-glamor-seed0   # reuse a run

Every free cell of the 7x7 grid is an evaluation goal; each trial count is evaluated on all
of them ``--repeats`` times (different planner noise). Writes a Markdown table and a heatmap
PNG to ``--out`` and prints the figures as one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TRIALS = (1, 2, 5, 10, 20, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="trained run directory (default: train one)")
    parser.add_argument("--out", default="bench_out/planning_compute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=4, help="evaluations of every goal per trial count")
    parser.add_argument("--trials", type=int, nargs="+", default=list(TRIALS))
    args = parser.parse_args()

    from pixelplan import config as config_lib
    from pixelplan.runs.evaluate import evaluate
    from pixelplan.runs.train import load_agent, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = args.run
    if run is None:
        run = str(out / f"model-seed{args.seed}")
        cfg = config_lib.preset("gridworld")
        cfg.seed, cfg.out, cfg.progress = args.seed, run, False
        train(cfg)
    cfg, agent, factory, goals = load_agent(run)
    rows = []
    for trials in args.trials:
        agent.eval_trials = trials
        start = time.perf_counter()
        result = evaluate(agent, factory, goals, episodes=len(goals) * args.repeats)
        m = result.metrics()
        rows.append({"trials": trials, "success_rate": m["success_rate"], "optimal_rate": m["optimal_rate"],
                     "episodes": m["eval_episodes"], "seconds": round(time.perf_counter() - start, 2)})
        print(f"trials {trials:4d}: success {m['success_rate']:.3f}  optimal {m['optimal_rate']:.3f}", flush=True)

    table = ["| trials | " + " | ".join(str(r["trials"]) for r in rows) + " |",
             "|---|" + "---|" * len(rows),
             "| success rate | " + " | ".join(f"{r['success_rate']:.3f}" for r in rows) + " |",
             "| optimal rate | " + " | ".join(f"{r['optimal_rate']:.3f}" for r in rows) + " |"]
    (out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    _heatmap(rows, out / "heatmap.png")
    print(json.dumps({"benchmark": "planning_compute", "run": run, "env": cfg.env, "repeats": args.repeats,
                      "goals": len(goals), "rows": rows}))


def _heatmap(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = np.array([[r["success_rate"] for r in rows], [r["optimal_rate"] for r in rows]])
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(rows), 2.4))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rows)), [str(r["trials"]) for r in rows])
    ax.set_yticks([0, 1], ["achieved", "optimal"])
    ax.set_xlabel("planner trials")
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("GLAMOR, 7x7 grid world: goal rates vs planning compute", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
