"""Command line: ``pixelplan train``, ``pixelplan eval`` and ``pixelplan table``.

    pixelplan train [--preset [auto|paper|gridworld] [debug]] [--env NAME] [--agent NAME]
                    [--steps N] [--seed S] [--out DIR] [--glamor.trials 100] [--shared.lr 1e-3] ...
    pixelplan eval --run DIR [--trials N] [--episodes N] [--tasks regular|hard]
    pixelplan table RUN_DIR... [--out DIR] [--reference FILE.json] [--metric auto|NAME]
    pixelplan sweep --agents A... --envs E... --seeds S... --out DIR [--parallel N | --ray [--address A]]
                    [--label-suffix NAME] [--metric auto|NAME] [-- TRAIN FLAGS...]
    pixelplan goals --env NAME [--set evaluation|training] [--n N] --out goals.png
    pixelplan tasks --env tabletop:push3 [--set regular|hard] [--n 100] [--seed 0] --out tasks.npz

``train`` first picks the preset (``--preset``, default auto: by env), then applies every
other flag on top of it: any config leaf can be set (``pixelplan train --help`` lists them).
Re-running ``train`` with the same ``--out`` resumes the run. ``table`` compares finished
runs (see ``pixelplan/runs/table.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

USAGE = """usage: pixelplan {train,eval,collect,table,sweep,goals,tasks,heatmap,distances} ...

  train   train an agent (default: GLAMOR on the grid world); re-run to resume;
          --dataset FILE trains offline from a collected dataset
  collect write a dataset of random-action episodes (HDF5); re-run to resume
  eval    evaluate a saved run
  table   results table (env x agent, mean (std) over seeds) and learning curves of runs;
          --metric picks the eval metric (default: success rate, or mean return on reward tasks)
  sweep   train agents x envs x seeds (in parallel processes if asked), then the table

  goals   draw an env's evaluation (or training) goals as an image grid
  tasks   build an env's test tasks (start state + goal image; MBOLD's tabletop suite), save them
          and draw each start | goal pair
  heatmap MBOLD's figure 6: trained runs' distances to a goal image as an object moves over
          the table, beside the pixel MSE, as one PNG
  distances how well trained runs' distances order dataset frames by the true distance to
          the test tasks' goals (rank correlation), on real frames and on the video model's
          predictions of them, beside the pixel MSE

pixelplan <command> --help shows the options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    _one_line_warnings()
    try:
        if command == "train":
            return _train(rest)
        if command == "eval":
            return _eval(rest)
        if command == "table":
            return _table(rest)
        if command == "goals":
            return _goals(rest)
        if command == "sweep":
            return _sweep(rest)
        if command == "collect":
            return _collect(rest)
        if command == "tasks":
            return _tasks(rest)
        if command == "heatmap":
            return _heatmap(rest)
        if command == "distances":
            return _distances(rest)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"pixelplan {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # train turns the first Ctrl-C into a checkpoint and a clean exit; this is a second
        # one (or Ctrl-C in another command): stop at once, without a traceback.
        print(f"pixelplan {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only our own run failures get one line; the rest re-raise
        from pixelplan.runs.rundir import DiskFull
        from pixelplan.runs.train import RunInterrupted
        if isinstance(exc, RunInterrupted):
            print(f"pixelplan {command}: {exc}", file=sys.stderr)
            return 130
        if isinstance(exc, DiskFull):
            print(f"pixelplan {command}: error: {exc.strerror}", file=sys.stderr)
            return 1
        raise
    print(f"pixelplan: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _one_line_warnings() -> None:
    """Our warnings are for the user: one line each, without the source line they came from."""
    import warnings

    default = warnings.formatwarning

    def format(message, category, filename, lineno, line=None):
        if category is UserWarning:
            return f"pixelplan: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format


def _train(args: list[str]) -> int:
    from pixelplan.runs.common import train_config

    cfg = train_config(args)
    if cfg is None:                                             # --help was printed
        return 0
    if cfg.dataset is not None:
        from pixelplan.runs.offline import train_offline
        summary = train_offline(cfg)
    else:
        from pixelplan.runs.train import train
        summary = train(cfg)
    print(json.dumps(summary))
    return 0


def _goals(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pixelplan goals",
                                     description="Draw an env's goal set as an image grid (reading order).")
    parser.add_argument("--env", required=True, help="env name, e.g. dmc:cartpole-balance or gridworld")
    parser.add_argument("--env-options", nargs="*", default=[], metavar="KEY VALUE",
                        help="env keyword arguments as key value pairs, as for pixelplan train")
    parser.add_argument("--set", choices=("evaluation", "training"), default="evaluation")
    parser.add_argument("--n", type=int, default=None, help="goals to draw (default: the evaluation set, or 100)")
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--out", default="goals.png", help="PNG to write")
    opts = parser.parse_args(args)
    if len(opts.env_options) % 2:
        raise ValueError("--env-options takes KEY VALUE pairs")
    if opts.n is not None and opts.n < 1:
        raise ValueError(f"--n must be >= 1, got {opts.n}")

    import numpy as np

    from pixelplan.envs import make
    from pixelplan.runs import plots
    from pixelplan.runs.common import parse_env_options

    options = parse_env_options(dict(zip(opts.env_options[::2], opts.env_options[1::2])))
    env = make(opts.env, **options)
    if opts.set == "evaluation":
        goals = env.evaluation_goals()[:opts.n]
    else:
        goals = env.training_goals(opts.n or 100, np.random.default_rng(0))
    plots.goal_grid(np.stack([g.frame for g in goals]), Path(opts.out), columns=opts.columns)
    spec = env.goal_spec
    print(json.dumps({"env": opts.env, "set": opts.set, "goals": len(goals), "out": opts.out,
                      "features": list(spec.names), "low": spec.low.round(4).tolist(),
                      "high": spec.high.round(4).tolist()}))
    return 0


def _tasks(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pixelplan tasks",
                                     description="Build (or load from the cache) an env's test tasks, write them "
                                                 "to a file and draw each start | goal pair (reading order).")
    parser.add_argument("--env", required=True, help="an env with test tasks, e.g. tabletop:push3")
    parser.add_argument("--env-options", nargs="*", default=[], metavar="KEY VALUE")
    parser.add_argument("--set", default="regular", help="regular (default) or hard (pushing only)")
    parser.add_argument("--n", type=int, default=100, help="tasks (default 100, the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="the task set's seed")
    parser.add_argument("--out", required=True, help="task file to write (.npz); the PNG goes beside it")
    parser.add_argument("--columns", type=int, default=5)
    opts = parser.parse_args(args)
    if len(opts.env_options) % 2:
        raise ValueError("--env-options takes KEY VALUE pairs")
    if opts.n < 1 or opts.seed < 0:
        raise ValueError(f"--n must be >= 1 and --seed >= 0, got {opts.n} and {opts.seed}")
    out = Path(opts.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name, e.g. {out / 'tasks.npz'}")
    if not out.parent.exists():
        raise ValueError(f"--out {out}: the directory {out.parent} does not exist")

    import numpy as np

    from pixelplan.envs import GoalTask, make
    from pixelplan.envs.goals import save_tasks
    from pixelplan.runs import plots
    from pixelplan.runs.common import parse_env_options

    options = parse_env_options(dict(zip(opts.env_options[::2], opts.env_options[1::2])))
    clash = {"tasks", "n_tasks", "task_seed"} & set(options)
    if clash:
        raise ValueError(f"give the task set with --set, --n and --seed, not --env-options {', '.join(sorted(clash))}")
    try:
        env = make(opts.env, **options, tasks=opts.set, n_tasks=opts.n, task_seed=opts.seed)
    except ValueError as exc:
        if "unknown option" in str(exc) and "tasks" in str(exc):
            raise ValueError(f"{opts.env} has no test tasks (start state + goal); pixelplan goals draws its goals") from None
        raise
    tasks = env.evaluation_goals()
    if not all(isinstance(t, GoalTask) for t in tasks):
        raise ValueError(f"{opts.env} has no test tasks (start state + goal); pixelplan goals draws its goals")
    path = save_tasks(out, tasks, {"env": opts.env, "env_options": options, "set": opts.set, "n": opts.n,
                                   "seed": opts.seed})
    png = Path(path).with_suffix(".png")
    pairs = np.stack([np.concatenate([t.start_frame, t.frame], axis=1) for t in tasks])
    plots.goal_grid(pairs, png, columns=opts.columns)
    relevant = sorted({", ".join(np.array(env.goal_spec.names)[t.relevant]) for t in tasks})
    start = np.array([t.distance(t.start_features) for t in tasks])
    print(json.dumps({"env": opts.env, "set": opts.set, "tasks": len(tasks), "out": path, "png": str(png),
                      "compared": relevant, "threshold": tasks[0].threshold,
                      "start_distance_mean": round(float(start.mean()), 4)}))
    return 0


def _eval(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pixelplan eval", description="Evaluate a saved run.")
    parser.add_argument("--run", required=True, help="run directory written by pixelplan train")
    parser.add_argument("--trials", type=int, default=None, help="planner trials (default: the run's)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="evaluation episodes (default: one per evaluation goal; 10 on reward tasks)")
    parser.add_argument("--seed", type=int, default=10_000, help="seed of the evaluation resets")
    parser.add_argument("--tasks", default=None,
                        help="tabletop scenes: the test-task set to evaluate on, regular or hard (default: the run's)")
    opts = parser.parse_args(args)

    from pixelplan.runs import plots
    from pixelplan.runs.evaluate import evaluate
    from pixelplan.runs.train import load_agent

    if opts.trials is not None and opts.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {opts.trials}")
    if opts.episodes is not None and opts.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {opts.episodes}")
    if opts.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {opts.seed}")
    cfg, agent, factory, goals = load_agent(opts.run, tasks=opts.tasks)
    if opts.trials is not None:
        if agent.eval_trials is None:
            raise ValueError(f"--trials sets the planner's trials, but {opts.run} is a {cfg.agent} run, which has "
                             f"no planner; leave --trials out")
        agent.eval_trials = opts.trials      # an override of this evaluation, not of the run's config
    result = evaluate(agent, factory, goals, opts.episodes, eval_seed=opts.seed)
    metrics = {"run": str(opts.run), "env": cfg.env, "agent": cfg.agent,
               "trials": agent.eval_trials,
               **result.metrics()}
    name = "eval" if metrics["trials"] is None else f"eval-trials{metrics['trials']}"   # no planner: no trials
    if opts.tasks is not None:
        metrics["tasks"] = opts.tasks
        name += f"-tasks-{opts.tasks}"
    from pixelplan.runs.rundir import write_text_atomically
    write_text_atomically(Path(opts.run, f"{name}.json"), json.dumps(metrics, indent=2) + "\n", what="evaluation")
    if result.success is not None:
        plots.goal_strip(result.goal_frames, result.final_frames, result.success, Path(opts.run, f"{name}.png"))
    print(json.dumps(metrics))
    return 0


def _distances(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pixelplan distances",
        description="Rank a pool of dataset frames by each run's learned distance to every test task's goal image "
                    "and by the true distance (the features that decide success), and print their mean Spearman "
                    "rank correlation: on the frames themselves and on the run's video-model predictions of them, "
                    "beside the pixel MSE's (docs/mbold.md, 'Checking a distance').")
    parser.add_argument("--run", action="append", required=True,
                        help="an MBOLD run directory (repeat for several: MBOLD, temporal, VAE ...)")
    parser.add_argument("--dataset", help="the dataset to draw frames from (default: the first run's)")
    parser.add_argument("--frames", type=int, default=256, help="frames in the pool (dataset windows' last frames)")
    parser.add_argument("--tasks", choices=("regular", "hard"), default=None,
                        help="which test tasks give the goals (default: the runs' own)")
    parser.add_argument("--starts", type=int, default=20,
                        help="also rank, for this many tasks, random futures of the task's start state (0: skip)")
    parser.add_argument("--futures", type=int, default=32, help="random action sequences per start")
    parser.add_argument("--steps", type=int, default=13, help="actions per future (the paper's planning horizon)")
    parser.add_argument("--seed", type=int, default=0, help="which episodes and windows make the pool")
    parser.add_argument("--out", help="also write the record to this JSON file")
    opts = parser.parse_args(args)
    if opts.frames < 2 or opts.seed < 0:
        raise ValueError(f"--frames must be >= 2 and --seed >= 0, got {opts.frames} and {opts.seed}")
    if opts.starts < 0 or opts.futures < 2 or opts.steps < 1:
        raise ValueError(f"--starts must be >= 0, --futures >= 2 and --steps >= 1, got {opts.starts}, "
                         f"{opts.futures} and {opts.steps}")
    out = None if opts.out is None else Path(opts.out)
    if out is not None and (out.is_dir() or not out.parent.exists()):
        raise ValueError(f"--out {out}: give a JSON file name in an existing directory")

    import numpy as np

    from pixelplan.data.dataset import read_attrs, read_some_episodes
    from pixelplan.envs.core import GoalTask
    from pixelplan.runs.distances import distance_ranking, futures_from_starts, ranking_from_starts, sample_windows
    from pixelplan.runs.train import load_agent

    loaded = [load_agent(run, opts.tasks) for run in opts.run]
    cfg, tasks = loaded[0][0], loaded[0][3]
    agents = {}
    for run, (other, agent, _, _) in zip(opts.run, loaded):
        if (other.env, other.env_options) != (cfg.env, cfg.env_options):
            raise ValueError(f"{run} is a {other.env} run and {opts.run[0]} a {cfg.env} run: give runs of one env")
        if not hasattr(agent, "distance"):
            raise ValueError(f"{run} is a {other.agent} run, which learns no distance between frames; give MBOLD runs")
        label = other.label or f"{other.agent} ({other.mbold.distance})"
        agents[label if label not in agents else f"{label} ({run})"] = agent
    if not tasks or not all(isinstance(t, GoalTask) for t in tasks):
        raise ValueError(f"{cfg.env} has no test tasks with features that decide success; use an MBOLD tabletop "
                         f"scene (tabletop:reach, push1, push3, door)")
    dataset = opts.dataset or cfg.dataset
    if dataset is None:
        raise ValueError(f"{opts.run[0]} trained from no dataset: give --dataset FILE")
    attrs = read_attrs(dataset)
    if attrs.get("env") != cfg.env:
        raise ValueError(f"--dataset {dataset} holds {attrs.get('env')} episodes, the runs are {cfg.env} runs: give a "
                         f"dataset of the runs' env")
    first = next(iter(agents.values()))
    length = max([int(a.prediction_window) for a in agents.values() if getattr(a, "uses_video", False)] or [2])
    rng = np.random.default_rng(opts.seed)
    episodes = read_some_episodes(dataset, min(opts.frames, 1000), rng)
    if episodes and episodes[0].frames.shape[1:] != tuple(first.spec.frame_shape):
        raise ValueError(f"--dataset {dataset} has frames of shape {episodes[0].frames.shape[1:]}, the runs' env "
                         f"{tuple(first.spec.frame_shape)}: give the dataset of the runs' env options")
    windows = sample_windows(episodes, opts.frames, length, rng)
    record = {"env": cfg.env, "dataset": str(dataset), "frames": opts.frames, "tasks": len(tasks),
              "rank_correlation": distance_ranking(agents, tasks, windows)}
    if opts.starts:
        from pixelplan.envs import make
        from pixelplan.envs.noise import correlated_sequence
        from pixelplan.runs.common import parse_env_options
        env = make(cfg.env, **parse_env_options(cfg.env_options)).unwrapped
        low, high = (np.broadcast_to(b, env.action_space.shape).reshape(-1) for b in
                     (env.action_space.low, env.action_space.high))
        policy = attrs.get("policy") or {}
        if policy.get("kind") == "correlated":     # the dataset's own policy: CEM's first iteration
            def sample_actions(r, n):
                return correlated_sequence(r, n, policy["std"], low, high, float(policy["beta"]))
        else:
            def sample_actions(r, n):
                return r.uniform(low, high, (n, low.size)).astype(np.float32)
        chosen = tasks[:opts.starts]
        pad = max(length - opts.steps, 2)
        try:
            futures = futures_from_starts(env, chosen, opts.futures, opts.steps, pad, sample_actions,
                                          np.random.default_rng([opts.seed, 1]))
        finally:
            env.close()
        record.update(starts=len(chosen), futures=opts.futures, steps=opts.steps,
                      rank_correlation_from_starts=ranking_from_starts(agents, chosen, futures))
    text = json.dumps(record)
    if out is not None:
        from pixelplan.runs.rundir import write_text_atomically
        write_text_atomically(out, text + "\n", "distance record")
    print(text)
    return 0


def _heatmap(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pixelplan heatmap",
                                     description="MBOLD's figure 6: the distance from frames with one object moved "
                                                 "over a grid of table positions to a fixed goal image, for each run's "
                                                 "learned distance and for the pixel MSE.")
    parser.add_argument("--run", action="append", required=True,
                        help="an MBOLD run directory (repeat for several: MBOLD, temporal, VAE ...)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="the reset that gives the goal state")
    parser.add_argument("--grid", type=int, default=15, help="positions per axis")
    parser.add_argument("--block", type=int, default=0, help="which block moves")
    opts = parser.parse_args(args)
    if opts.grid < 2 or opts.seed < 0:
        raise ValueError(f"--grid must be >= 2 and --seed >= 0, got {opts.grid} and {opts.seed}")
    out = Path(opts.out)
    if out.is_dir() or not out.parent.exists():
        raise ValueError(f"--out {out}: give a PNG file name in an existing directory")

    import numpy as np

    from pixelplan.envs import make
    from pixelplan.envs.tabletop import CENTRE
    from pixelplan.runs import plots
    from pixelplan.runs.train import load_agent

    loaded = [load_agent(run) for run in opts.run]
    cfg = loaded[0][0]
    for run, (other, agent, _, _) in zip(opts.run, loaded):
        if (other.env, other.env_options) != (cfg.env, cfg.env_options):
            raise ValueError(f"{run} is a {other.env} run and {opts.run[0]} a {cfg.env} run: give runs of one env")
        if not hasattr(agent, "distance"):
            raise ValueError(f"{run} is a {other.agent} run, which learns no distance between frames; give MBOLD runs")
    from pixelplan.runs.common import parse_env_options
    env = make(cfg.env, **parse_env_options(cfg.env_options)).unwrapped
    if not hasattr(env, "frames_with_block_at") or getattr(env.scene, "n_blocks", 0) <= opts.block:
        raise ValueError(f"{cfg.env} has no block {opts.block} to move; use a pushing scene (tabletop:push1, push3)")
    goal_frame, info = env.reset(seed=opts.seed)
    state = env.get_state()
    names = list(env.goal_spec.names)
    goal_xy = (info["features"][names.index(f"block{opts.block}_x")], info["features"][names.index(f"block{opts.block}_y")])
    half = max(env.object_range, 0.05)            # the blocks' reset range around the table centre
    xs = CENTRE[0] + np.linspace(-half, half, opts.grid)
    ys = CENTRE[1] + np.linspace(-half, half, opts.grid)
    grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    frames = env.frames_with_block_at(state, opts.block, grid)
    env.close()
    maps = {}
    for run, (other, agent, _, _) in zip(opts.run, loaded):
        label = other.label or f"{other.agent} ({other.mbold.distance})"
        maps[label] = agent.distance(frames, goal_frame).reshape(opts.grid, opts.grid)
    maps["pixel MSE"] = ((frames.astype(np.float32) - goal_frame.astype(np.float32)) ** 2).mean((1, 2, 3)).reshape(
        opts.grid, opts.grid)
    plots.distance_heatmaps(maps, xs, ys, goal_xy, goal_frame, out, title=f"{cfg.env}: distance to the goal")
    argmin = {name: [float(v) for v in grid[int(np.argmin(m))]] for name, m in maps.items()}
    print(json.dumps({"out": str(out), "goal_xy": [float(v) for v in goal_xy], "argmin_xy": argmin}))
    return 0


def _collect(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pixelplan collect",
                                     description="Write a dataset of episodes (HDF5) for offline training; "
                                                 "re-run the same command to resume a killed collect.")
    parser.add_argument("--env", default="gridworld")
    parser.add_argument("--env-options", nargs="*", default=[], metavar="KEY VALUE",
                        help="env keyword arguments as key value pairs, e.g. --env-options size 9")
    parser.add_argument("--agent", default="random", help="who acts: random (uniform actions)")
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--out", required=True, help="dataset file to write, e.g. data/gridworld.h5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-episodes", type=int, default=100,
                        help="episodes per shard: a killed collect loses at most one shard")
    parser.add_argument("--n-envs", type=int, default=8, help="episodes collected side by side")
    parser.add_argument("--workers", type=int, default=None,
                        help="env worker processes (default: one per core, at most n-envs; 0 = this process)")
    parser.add_argument("--policy", default="auto", choices=("auto", "uniform", "correlated"),
                        help="the random policy: uniform, correlated (MBOLD's filtered Gaussian noise) or auto "
                             "(default: the suite's own, correlated on tabletop:*, else uniform)")
    parser.add_argument("--noise-std", type=float, nargs="+", default=None,
                        help="correlated policy: the Gaussian's std per action dimension (default: the suite's)")
    parser.add_argument("--noise-beta", type=float, default=0.5, help="correlated policy: the filter's beta")
    parser.add_argument("--no-progress", action="store_true")
    _add_ray_options(parser, "task")
    parser.add_argument("--parallel", type=int, default=None,
                        help="--ray: shard tasks at once (default: as many as the cluster schedules)")
    opts = parser.parse_args(args)
    if opts.address is not None and not opts.ray:
        raise ValueError("--address is the Ray cluster's: add --ray")
    if len(opts.env_options) % 2:
        raise ValueError(f"--env-options takes key value pairs, got {len(opts.env_options)} words")
    from pixelplan.envs.vector import default_workers
    from pixelplan.runs.collect import collect
    workers = default_workers(opts.n_envs) if opts.workers is None else opts.workers
    attrs = collect(opts.env, opts.episodes, opts.out, agent=opts.agent,
                    env_options=dict(zip(opts.env_options[::2], opts.env_options[1::2])), seed=opts.seed,
                    shard_episodes=opts.shard_episodes, n_envs=opts.n_envs, workers=workers,
                    progress=not opts.no_progress, policy=opts.policy, noise_std=opts.noise_std,
                    noise_beta=opts.noise_beta,
                    ray=dict(address=opts.address, cpus_per_task=opts.cpus_per_task, parallel=opts.parallel,
                             log=lambda m: print(m, file=sys.stderr, flush=True)) if opts.ray else None)
    print(json.dumps({"out": str(opts.out), **{k: attrs[k] for k in ("env", "episodes", "frames", "content_hash")}}))
    return 0


def _add_ray_options(parser, unit: str) -> None:
    parser.add_argument("--ray", action="store_true",
                        help=f"run each {unit} as a Ray task (pip install 'pixelplan[ray]'; docs/cluster.md)")
    parser.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                        help="--ray: the cluster to use (auto: the one this machine is part of); default: start a "
                             "local Ray instance")
    parser.add_argument(f"--cpus-per-{unit}", type=float, default=1.0,
                        help=f"--ray: CPUs each {unit} asks for (default 1)")


def _table(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pixelplan table",
        description="Results table (one row per env, one column per agent: the final value of an eval "
                    "metric, mean (std) over seeds) and one learning-curve PNG per env, from finished runs.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories written by pixelplan train (or directories holding them)")
    parser.add_argument("--out", default="tables",
                        help="where to write table.md, table.json and curve-<env>.png (default: tables)")
    parser.add_argument("--reference", default=None, metavar="FILE.json",
                        help='paper numbers {env: {agent: value}}, shown as columns "paper (<agent>)"')
    _add_metric_option(parser)
    opts = parser.parse_args(args)
    _print_table(opts.run_dirs, opts.out, opts.reference, opts.metric)
    return 0


def _add_metric_option(parser) -> None:
    parser.add_argument("--metric", default="auto", metavar="NAME",
                        help="the eval metric of the table and curves: success_rate, optimal_rate, "
                             "mean_return, ... or auto (default): per env, success_rate where its runs "
                             "report it (goal tasks), else mean_return (reward tasks)")


def _sweep(args: list[str]) -> int:
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="pixelplan sweep",
        description="Train agents x envs x seeds with pixelplan train (one process per run, re-run to "
                    "resume), then write the results table and learning curves. Flags after -- go to "
                    "every run, e.g. -- --steps 30000 --shared.collect random.")
    parser.add_argument("--agents", nargs="+", default=["glamor", "gcsl", "discern", "random"])
    parser.add_argument("--envs", nargs="+", default=["gridworld"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/sweep", help="directory of the run directories and the table")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (default 1; local sweeps)")
    _add_ray_options(parser, "run")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="--ray: GPUs each run asks for (default 0)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="--ray: times a run whose worker was lost is retried, resuming (default 3)")
    parser.add_argument("--label-suffix", default=None,
                        help="name an ablation: runs are labelled <agent>-<suffix> in the table")
    parser.add_argument("--reference", default=None, metavar="FILE.json", help="paper numbers, as for table")
    _add_metric_option(parser)
    opts = parser.parse_args(args)
    if opts.parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {opts.parallel}")
    if any(flag in extra for flag in ("--agent", "--env", "--seed", "--out", "--label")):
        raise ValueError("give agents, envs, seeds, out and labels with the sweep's own flags, not after --")

    from pixelplan.runs.sweep import plan_jobs, run_sweep

    jobs = plan_jobs(opts.agents, opts.envs, opts.seeds, opts.out, opts.label_suffix)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if opts.ray and opts.parallel != 1:
        raise ValueError("--parallel is for local sweeps; on Ray the cluster's free CPUs decide how many runs go "
                         "at once: set --cpus-per-run instead")
    if opts.ray:
        from pixelplan.runs.cluster import run_sweep_ray
        # The header is said once every run's flags have been checked (inside), so that a bad
        # flag is the only line a refused sweep prints.
        header = f"[sweep] {len(jobs)} runs on Ray ({opts.address or 'a local instance'}), into {opts.out}"
        failed = run_sweep_ray(jobs, extra, address=opts.address, cpus_per_run=opts.cpus_per_run,
                               gpus_per_run=opts.gpus_per_run, max_retries=opts.max_retries, log=say,
                               header=header)
    else:
        if opts.address is not None:
            raise ValueError("--address is the Ray cluster's: add --ray")
        failed = run_sweep(jobs, extra, opts.parallel, log=say,
                           header=f"[sweep] {len(jobs)} runs, {opts.parallel} at a time, into {opts.out}")
    finished = [job.out for job in jobs if job not in failed]
    if finished:
        _print_table(finished, Path(opts.out) / "table", opts.reference, opts.metric)
    if failed:
        print(f"pixelplan sweep: {len(failed)} of {len(jobs)} run(s) failed (errors above; logs: "
              f"{', '.join(str(j.out.parent / (j.out.name + '.log')) for j in failed)})", file=sys.stderr)
        return 1
    return 0


def _print_table(run_dirs, out, reference, metric="auto") -> None:
    import warnings

    from pixelplan.runs.table import TableWarning, make_table

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TableWarning)
            result = make_table(run_dirs, out, reference=reference, metric=metric)
    finally:
        for w in caught:
            if issubclass(w.category, TableWarning):
                print(f"pixelplan table: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(result["markdown"], end="")
    out = Path(out)
    print(f"pixelplan table: wrote {out / 'table.md'}, {out / 'table.json'} and "
          f"{len(result['curves'])} curve PNG(s) in {out}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
