"""Evaluation: one episode per goal, all goals side by side, the agent acting without exploration.

A goal counts as achieved when the env's ``GoalSpec`` says the features at the episode's
end (T, or the step at which the agent returned TERMINATE) are within tolerance of the
goal's features. Where the env knows shortest paths (the grid world), an episode is
*optimal* when it achieved the goal and took exactly the shortest-path number of steps.

Each evaluation episode resets its env with a fixed seed (``eval_seed + episode index``),
so every evaluation of every agent starts from the same states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pixelplan.agents.base import TERMINATE, Agent
from pixelplan.envs.vector import EnvPool


@dataclass
class EvalResult:
    success: np.ndarray                  # (episodes,) bool
    steps: np.ndarray                    # (episodes,) int: actions taken
    optimal: np.ndarray | None           # (episodes,) bool, where shortest paths are known
    goal_frames: np.ndarray              # (episodes, *frame_shape)
    final_frames: np.ndarray             # (episodes, *frame_shape)
    goal_index: np.ndarray               # (episodes,) which goal of the set
    extra: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {"success_rate": float(self.success.mean()), "mean_steps": float(self.steps.mean()),
               "eval_episodes": int(len(self.success))}
        if self.optimal is not None:
            out["optimal_rate"] = float(self.optimal.mean())
        return out


def evaluate(agent: Agent, make_env: Callable[[], object], goals: list, episodes: int | None = None,
             batch: int = 64, eval_seed: int = 10_000, pool: EnvPool | None = None) -> EvalResult:
    """Run ``episodes`` evaluation episodes (default: one per goal, cycling through ``goals``).

    Up to ``batch`` episodes run side by side in an :class:`EnvPool` of ``make_env`` envs
    (in this process), or in ``pool`` when given (its size is then the batch).
    """
    episodes = len(goals) if episodes is None else episodes
    if episodes < 1:
        raise ValueError(f"evaluation needs at least one episode, got {episodes}")
    own = pool is None
    pool = EnvPool(make_env, min(batch, episodes)) if own else pool
    try:
        size = len(pool)
        parts = [_run_chunk(agent, pool, goals, range(s, min(s + size, episodes)), eval_seed)
                 for s in range(0, episodes, size)]
    finally:
        if own:
            pool.close()
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    optimal = None if any(p["optimal"] is None for p in parts) else cat("optimal")
    return EvalResult(success=cat("success"), steps=cat("steps"), optimal=optimal,
                      goal_frames=cat("goal_frames"), final_frames=cat("final_frames"),
                      goal_index=cat("goal_index"))


def _run_chunk(agent, pool: EnvPool, goals, episode_ids, eval_seed) -> dict:
    n = len(episode_ids)
    goal_index = np.array([e % len(goals) for e in episode_ids])
    chosen = [goals[g] for g in goal_index]
    goal_frames = np.stack([g.frame for g in chosen])
    obs, infos = pool.reset(range(n), [eval_seed + e for e in episode_ids])
    start_features = [info["features"] for info in infos]
    features = list(start_features)
    t = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    while not done.all():
        live = np.flatnonzero(~done)         # finished rows need no more planning
        actions = np.full(n, TERMINATE)
        actions[live] = agent.act(obs[live], goal_frames[live], t[live], explore=False, env_steps=0)
        stop = live[actions[live] == TERMINATE]
        done[stop] = True
        go = live[actions[live] != TERMINATE]
        if len(go):
            new_obs, _, terminated, truncated, step_infos = pool.step(go, actions[go])
            obs[go] = new_obs
            for j, i in enumerate(go):
                features[i] = step_infos[j]["features"]
            t[go] += 1
            done[go] = terminated | truncated
    spec = pool.get("goal_spec")
    success = np.array([bool(spec.achieved(f, g.features)) for f, g in zip(features, chosen)])
    optimal = None
    best = pool.call("optimal_steps", [(s, g.features) for s, g in zip(start_features, chosen)])
    if all(b is not None for b in best):
        optimal = success & (t == np.array(best))
    return {"success": success, "steps": t.copy(), "optimal": optimal, "goal_frames": goal_frames,
            "final_frames": obs[:, -1].copy(), "goal_index": goal_index}
