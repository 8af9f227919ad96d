"""Evaluation: one episode per goal (goal tasks) or per seed (reward tasks), side by side, the
agent acting without exploration.

Goal tasks: a goal counts as achieved when the env's ``GoalSpec`` says the features at the
episode's end (T, or the step at which the agent stopped it) are within tolerance of the
goal's features. Where the env knows shortest paths (the grid world), an episode is *optimal*
when it achieved the goal and took exactly the shortest-path number of steps.

Test tasks (:class:`~pixelplan.envs.core.GoalTask`, MBOLD's tabletop suite): the episode starts
from the task's own start state rather than from a seed, and success is the task's rule: the
relevant features (the moved block's x, y, say) end within a metric threshold of the goal's.
Such an evaluation also reports ``final_distance`` (mean over episodes of that distance at the end)
and ``improvement`` (mean of start distance minus final distance, in metres).

Reward tasks: an episode's return is the sum of the rewards the env returned, and the metric
is their mean (``mean_return``). Every episode's return is reported on goal tasks too (0 there).

Each evaluation episode resets its env with a fixed seed (``eval_seed + episode index``),
so every evaluation of every agent starts from the same states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pixelplan.agents.base import Agent
from pixelplan.envs.core import GoalTask
from pixelplan.envs.vector import EnvPool
from pixelplan.envs.wrappers import RowStacks

#: evaluation episodes of a reward task when the config does not say (goal tasks: one per goal)
REWARD_EVAL_EPISODES = 10


@dataclass
class EvalResult:
    steps: np.ndarray                    # (episodes,) int: actions taken
    returns: np.ndarray                  # (episodes,) float64: sum of the env's rewards
    success: np.ndarray | None           # (episodes,) bool, goal tasks
    optimal: np.ndarray | None           # (episodes,) bool, where shortest paths are known
    goal_frames: np.ndarray | None       # (episodes, *frame_shape), goal tasks
    final_frames: np.ndarray             # (episodes, *frame_shape)
    goal_index: np.ndarray | None        # (episodes,) which goal of the set, goal tasks
    extra: dict = field(default_factory=dict)
    video: np.ndarray | None = None      # (steps + 1, *frame_shape): episode 0's frames, when recorded
    distance: np.ndarray | None = None   # (episodes,) test tasks: final distance of the relevant features
    start_distance: np.ndarray | None = None   # (episodes,) test tasks: the same at the start

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.success is not None:
            out["success_rate"] = float(self.success.mean())
        out.update(mean_steps=float(self.steps.mean()), eval_episodes=int(len(self.steps)))
        if self.optimal is not None:
            out["optimal_rate"] = float(self.optimal.mean())
        if self.distance is not None:
            out["final_distance"] = float(self.distance.mean())
            out["improvement"] = float((self.start_distance - self.distance).mean())
        if self.success is None or np.any(self.returns != 0):   # goal tasks pay 0: no column of zeros
            out["mean_return"] = float(self.returns.mean())
        return out


def evaluation_episodes(goals: list | None, requested: int | None = None) -> int:
    """How many episodes an evaluation runs: ``requested``, else one per goal on a goal task
    and ``REWARD_EVAL_EPISODES`` on a reward task (``goals`` None)."""
    if requested is not None:
        return requested
    return len(goals) if goals is not None else REWARD_EVAL_EPISODES


def evaluate(agent: Agent, make_env: Callable[[], object], goals: list | None, episodes: int | None = None,
             batch: int = 64, eval_seed: int = 10_000, pool: EnvPool | None = None,
             record: bool = False) -> EvalResult:
    """Run ``episodes`` evaluation episodes: on a goal task one per goal by default, cycling
    through ``goals``; on a reward task (``goals`` None) ``REWARD_EVAL_EPISODES`` by default.

    Up to ``batch`` episodes run side by side in an :class:`EnvPool` of ``make_env`` envs
    (in this process), or in ``pool`` when given (its size is then the batch). The envs hand
    out single frames; the stacks of ``agent.spec.frame_stack`` frames are built here.
    """
    if goals is not None and not len(goals):
        raise ValueError("evaluation of a goal task needs at least one goal")
    episodes = evaluation_episodes(goals, episodes)
    if episodes < 1:
        raise ValueError(f"evaluation needs at least one episode, got {episodes}")
    own = pool is None
    pool = EnvPool(make_env, min(batch, episodes)) if own else pool
    try:
        size = len(pool)
        parts = [_run_chunk(agent, pool, goals, range(s, min(s + size, episodes)), eval_seed, record and s == 0)
                 for s in range(0, episodes, size)]
    finally:
        if own:
            pool.close()

    def cat(key):
        return None if any(p[key] is None for p in parts) else np.concatenate([p[key] for p in parts])

    return EvalResult(steps=cat("steps"), returns=cat("returns"), success=cat("success"), optimal=cat("optimal"),
                      goal_frames=cat("goal_frames"), final_frames=cat("final_frames"), goal_index=cat("goal_index"),
                      video=parts[0]["video"], distance=cat("distance"), start_distance=cat("start_distance"))


def _run_chunk(agent, pool: EnvPool, goals, episode_ids, eval_seed, record: bool = False) -> dict:
    n = len(episode_ids)
    rows = np.arange(n)
    chosen = goal_index = goal_frames = None
    if goals is not None:
        goal_index = np.array([e % len(goals) for e in episode_ids])
        chosen = [goals[g] for g in goal_index]
        goal_frames = np.stack([g.frame for g in chosen])
    tasks = chosen is not None and all(isinstance(g, GoalTask) for g in chosen)
    # a test task starts from its own state (MBOLD); other goals from the episode's seed
    options = [{"state": g.start_state} for g in chosen] if tasks else None
    first, infos = pool.reset(rows, [eval_seed + e for e in episode_ids], options)
    video = [first[0].copy()] if record else None
    stacks = RowStacks(n, agent.spec.frame_stack, agent.spec.frame_shape)
    obs = stacks.start(rows, first)
    start_features = [info.get("features") for info in infos]
    features = list(start_features)
    t = np.zeros(n, dtype=np.int64)
    returns = np.zeros(n, dtype=np.float64)
    done = np.zeros(n, dtype=bool)
    agent.begin_episodes(rows, goal_frames, explore=False)
    while not done.all():
        live = np.flatnonzero(~done)         # finished rows need no more planning
        decision = agent.act(obs[live], None if goal_frames is None else goal_frames[live], t[live],
                             explore=False, env_steps=0, rows=live)
        stop = np.asarray(decision.stop, dtype=bool)
        done[live[stop]] = True              # the agent ended these episodes: no action is sent
        go = live[~stop]
        if len(go):
            new_frames, rewards, terminated, truncated, step_infos = pool.step(go, decision.actions[~stop])
            stacks.push(go, new_frames)
            if video is not None and go[0] == 0:
                video.append(new_frames[0].copy())
            returns[go] += rewards
            for j, i in enumerate(go):
                features[i] = step_infos[j].get("features")
            t[go] += 1
            done[go] = terminated | truncated
    final_frames = stacks.latest()
    agent.end_episodes(rows, final_frames, goal_frames, explore=False)
    success = optimal = distance = start_distance = None
    if tasks:
        distance = np.array([g.distance(f) for f, g in zip(features, chosen)])
        start_distance = np.array([g.distance(f) for f, g in zip(start_features, chosen)])
        success = np.array([bool(d <= g.threshold) for d, g in zip(distance, chosen)])
    elif goals is not None:
        spec = pool.get("goal_spec")
        success = np.array([bool(spec.achieved(f, g.features)) for f, g in zip(features, chosen)])
        best = pool.call("optimal_steps", [(s, g.features) for s, g in zip(start_features, chosen)])
        if all(b is not None for b in best):
            optimal = success & (t == np.array(best))
    return {"success": success, "steps": t.copy(), "returns": returns, "optimal": optimal,
            "goal_frames": goal_frames, "final_frames": final_frames, "goal_index": goal_index,
            "video": None if video is None else np.stack(video), "distance": distance,
            "start_distance": start_distance}
