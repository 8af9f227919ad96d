"""The tabletop suite's speed, and the floor and ceiling of its test tasks.

    python benchmarks/tabletop_speed.py [--steps 1000] [--tasks 100] [--scenes reach push1 push3 door]

For each scene (one process, one env, no workers):

* ``steps_per_s``: agent steps per second with the 64x64 render of every step (what collection
  and evaluation pay), ``physics_steps_per_s`` without rendering, and ``render_ms`` per frame;
* on each test-task set (``tasks`` of them, seed 0, the env's cached set): the success rate,
  mean final distance and mean improvement of
  - the random agent acting as the dataset's correlated-noise policy, through the real
    evaluation (``pixelplan.runs.evaluate``): the floor;
  - the scripted oracle (``pixelplan.envs.tabletop.scripted_oracle``), which reads the true
    state: the ceiling, and the proof that the tasks are solvable within T = 30.

Prints one JSON object per scene and set. The wall time of collecting a 1e4-episode dataset is
measured with ``pixelplan collect`` itself (docs/envs.md gives the commands and figures).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def speed(scene: str, steps: int) -> dict:
    from pixelplan.envs import make
    from pixelplan.envs.noise import correlated_sequence
    from pixelplan.envs.tabletop import SCENES

    env = make(f"tabletop:{scene}")
    env.reset(seed=0)
    actions = correlated_sequence(np.random.default_rng(0), steps, SCENES[scene].noise_std, -1, 1)
    t0 = time.perf_counter()
    for i, a in enumerate(actions):
        if i % 30 == 29:
            env.reset(seed=i)
        env.step(a)
    with_render = time.perf_counter() - t0
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        env._advance(a)
    physics = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        env._render()
    render = time.perf_counter() - t0
    return {"steps_per_s": round(steps / with_render, 1), "physics_steps_per_s": round(steps / physics, 1),
            "render_ms": round(1000 * render / steps, 3)}


def floor_and_ceiling(scene: str, task_set: str, n: int) -> dict:
    import torch

    from pixelplan import config as config_lib
    from pixelplan.agents import make_agent
    from pixelplan.envs import make
    from pixelplan.envs.core import spec_of
    from pixelplan.envs.tabletop import scripted_oracle
    from pixelplan.runs.evaluate import evaluate

    name = f"tabletop:{scene}"

    def factory():
        return make(name, tasks=task_set, n_tasks=n)

    env = factory()
    t0 = time.perf_counter()
    tasks = env.evaluation_goals()
    build_s = time.perf_counter() - t0
    cfg = config_lib.preset("auto", name, "random")
    agent = make_agent("random", cfg, spec_of(env), torch.device("cpu"), seed=0)
    result = evaluate(agent, factory, tasks, batch=10)
    random = result.metrics()
    success, final, start = [], [], []
    for task in tasks:
        _, info = env.reset(options={"state": task.start_state})
        for _ in range(env.max_episode_steps):
            _, _, _, _, info = env.step(scripted_oracle(info["features"], task, scene))
        success.append(task.achieved(info["features"]))
        final.append(task.distance(info["features"]))
        start.append(task.distance(task.start_features))
    final, start = np.array(final), np.array(start)
    return {"tasks": len(tasks), "task_build_s": round(build_s, 1),
            "start_distance": round(float(start.mean()), 4),
            "random": {k: round(random[k], 4) for k in ("success_rate", "final_distance", "improvement")},
            "oracle": {"success_rate": round(float(np.mean(success)), 4),
                       "final_distance": round(float(final.mean()), 4),
                       "improvement": round(float((start - final).mean()), 4)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--scenes", nargs="+", default=["reach", "push1", "push3", "door"])
    opts = parser.parse_args()
    from pixelplan.envs.tabletop import SCENES

    for scene in opts.scenes:
        row = {"scene": scene, **speed(scene, opts.steps)}
        print(json.dumps(row), flush=True)
        for task_set in SCENES[scene].task_sets:
            print(json.dumps({"scene": scene, "set": task_set, **floor_and_ceiling(scene, task_set, opts.tasks)}),
                  flush=True)


if __name__ == "__main__":
    main()
