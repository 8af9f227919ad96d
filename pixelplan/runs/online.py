"""The online driver: collect with the agent, store whole episodes, train at a replay ratio.

One *round* collects one episode in each of ``n_envs`` envs side by side (the agent acts on
all rows at once), training as it goes; whole episodes enter the store at the end of the
round. Evaluations, logs and checkpoints happen between rounds, so a checkpoint is a
clean cut: a killed run resumes from its last checkpoint and continues exactly as an
uninterrupted run would (every env reset draws its seed from the run's RNG, which the
checkpoint holds).

The run directory survives faults (docs/runs.md): every check runs before anything is
written; one process at a time holds its lock; every file is replaced atomically; the
checkpoint before last is kept as a fallback; a full disk keeps the last checkpoint and
says how much space is needed; SIGINT or SIGTERM saves a checkpoint at the end of the
current round and exits (``RunInterrupted``).

Replay ratio (:class:`~pixelplan.runs.schedule.ReplayRatio`): from ``min_steps_learn`` on (and
once ``seed_episodes`` episodes are stored), the samples trained on (updates x the agent's
``sampler.samples_per_batch``) stay at ``replay_ratio`` x the env steps collected since,
checked after every vector step. With ``updates_per_episode`` set, training happens between
rounds instead (PlaNet's Algorithm 1): after each round that ends with training started, that
many updates per episode of the round, the model fixed while an episode is collected.

Nothing in here is specific to one agent: it uses the contract of ``agents/base.py`` only
(hooks at each episode's start and end, ``act``, the agent's ``sampler`` and ``update``), and
reads no agent hyperparameter. Goal tasks draw each training episode's goal from the env's
training goals; reward tasks have none (the agent gets ``None``).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pixelplan import config as config_lib
from pixelplan.config import Config
from pixelplan.envs.vector import EnvPool
from pixelplan.envs.wrappers import RowStacks
from pixelplan.runs import plots
from pixelplan.runs.checkpoints import CHECKPOINT, LoopState, check_resumable, checkpoint_now, open_run
from pixelplan.runs.common import (check_out_dir, default_out, env_workers, headline, new_store, prepare,
                                   warn_if_no_learning, write_summary)
from pixelplan.runs.evaluate import EvalResult, evaluate, evaluation_episodes
from pixelplan.runs.logging import read_metrics
from pixelplan.runs.rundir import RunLock, remove_stale_temporaries
from pixelplan.runs.schedule import ReplayRatio, RunInterrupted, StopOnSignal, next_due
from pixelplan.video import write_gif

EVAL_BATCH = 64  # evaluation episodes run side by side


def train(cfg: Config) -> dict:
    """Train (or resume) the run ``cfg`` describes; returns its summary.

    Every check runs before anything is written: a refused start (bad config, a run
    directory holding another run, another process on it) leaves the directory as it was.
    """
    started = time.perf_counter()
    config_lib.validate(cfg)
    cfg.out = cfg.out or default_out(cfg)
    out = Path(cfg.out)
    check_out_dir(out)
    check_resumable(out, cfg)
    torch.manual_seed(cfg.seed)
    factory, probe, spec, agent, _ = prepare(cfg)
    if agent.learns and spec.max_episode_steps + 1 > cfg.replay_capacity:
        raise ValueError(f"replay_capacity ({cfg.replay_capacity}) must hold at least one episode "
                         f"({spec.max_episode_steps + 1} frames): use --replay-capacity "
                         f"{spec.max_episode_steps + 1} or more")
    store = new_store(spec, cfg.replay_capacity) if agent.learns else None
    warn_if_no_learning(cfg, agent.learns)

    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        remove_stale_temporaries(out)
        return OnlineRun(cfg, out, started, factory, probe, spec, agent, store).run()


class OnlineRun:
    """One online run, between its checks and its summary (see the module doc)."""

    def __init__(self, cfg, out: Path, started: float, factory, probe, spec, agent, store):
        self.cfg, self.out, self.started = cfg, out, started
        self.factory, self.spec, self.agent, self.store = factory, spec, agent, store
        env = probe.unwrapped
        self.goal_frames = None
        self.eval_goals = None
        if spec.has_goals:
            goal_pool = env.training_goals(env.n_training_goals, np.random.default_rng([cfg.seed, 1]))
            self.goal_frames = np.stack([g.frame for g in goal_pool])
            self.eval_goals = env.evaluation_goals()
        self.rng = np.random.default_rng([cfg.seed, 2])
        self.ratio = (ReplayRatio(cfg.replay_ratio, cfg.min_steps_learn, agent.sampler.samples_per_batch)
                      if agent.learns else None)
        fresh = LoopState(next_eval=cfg.eval_every, next_checkpoint=cfg.checkpoint_every, next_log=cfg.log_every)
        self.state, self.log = open_run(cfg, out, spec, agent, store, self.rng, fresh, step_of=lambda st: st.env_steps)
        self.wall_before = self.state.wall_seconds
        self.train_metrics = self.state.pending_metrics
        self.last_eval: dict = {}
        self.pool = self.eval_pool = self.bar = None
        self.log_mark = (self.state.env_steps, time.perf_counter())

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        try:
            with StopOnSignal() as stop:
                self.pool = EnvPool(self.factory, cfg.n_envs, env_workers(cfg))
                self.bar = _progress(cfg, state.env_steps)
                while state.env_steps < cfg.steps:
                    steps_before = state.env_steps
                    self.collect_round()
                    if self.bar is not None:
                        self.bar.update(state.env_steps - steps_before)
                    self.between_rounds(stop)
        finally:
            self.close()
        store = self.store
        summary = write_summary(self.out, cfg, self.agent, self.last_eval, self.wall(), env_steps=state.env_steps,
                                updates=state.updates, episodes=state.episodes,
                                replay_gib=round(store.nbytes / 2**30, 3) if store is not None else 0.0)
        if self.agent.learns and state.updates == 0:
            warnings.warn(f"this run made no update: its {state.env_steps:,} env steps never passed min_steps_learn "
                          f"= {cfg.min_steps_learn:,}, so its results are those of an untrained agent", stacklevel=3)
        return summary

    def between_rounds(self, stop: StopOnSignal) -> None:
        """Log, evaluate and checkpoint where due; honour a stop request (a checkpoint is a clean
        cut here, between rounds: the resumed run continues exactly)."""
        cfg, state = self.cfg, self.state
        if state.env_steps >= state.next_log:
            self.write_log()
            state.next_log = next_due(state.next_log, state.env_steps, cfg.log_every)
        final = state.env_steps >= cfg.steps
        if state.env_steps >= state.next_eval or final:
            result = self.evaluate()
            state.next_eval = next_due(state.next_eval, state.env_steps, cfg.eval_every)
            if final:
                _write_figures(self.out, cfg, result)
        if state.env_steps >= state.next_checkpoint or final or stop.requested:
            state.next_checkpoint = next_due(state.next_checkpoint, state.env_steps, cfg.checkpoint_every)
            checkpoint_now(self.out / CHECKPOINT, cfg, self.spec, self.agent, self.store, self.rng, state, self.log,
                           self.wall())
        if stop.requested and not final:
            raise RunInterrupted(f"stopped by {stop.signal_name} at env step {state.env_steps:,}; "
                                 f"checkpoint saved in {self.out}. Re-run the same command to resume.")

    # ------------------------------------------------------------------ collection
    def collect_round(self) -> None:
        """One episode in every env row, the agent acting on all rows at once, training as due;
        the episodes then enter the store whole."""
        n, spec, agent, state = len(self.pool), self.spec, self.agent, self.state
        rows = np.arange(n)
        goals = None if self.goal_frames is None else self.goal_frames[self.rng.integers(len(self.goal_frames),
                                                                                          size=n)]
        seeds = [int(self.rng.integers(2**31)) for _ in range(n)]
        first, _ = self.pool.reset(rows, seeds)
        stacks = RowStacks(n, spec.frame_stack, spec.frame_shape)
        obs = stacks.start(rows, first)
        # Copies, not views: ``obs`` is overwritten in place below as the rows step, and a view
        # kept here would turn every episode's first frame into its last (a past bug).
        frames = [[f.copy()] for f in first]
        actions: list[list] = [[] for _ in range(n)]
        rewards: list[list[float]] = [[] for _ in range(n)]
        t = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        agent.begin_episodes(rows, goals, explore=True)
        while not done.all():
            decision = agent.act(obs, goals, t, explore=True, env_steps=state.env_steps, rows=rows)
            done |= np.asarray(decision.stop, dtype=bool)
            live = np.flatnonzero(~done)
            if len(live) == 0:
                break
            new_frames, step_rewards, terminated, truncated, _ = self.pool.step(live, decision.actions[live])
            stacks.push(live, new_frames)
            for j, i in enumerate(live):
                frames[i].append(new_frames[j].copy())
                actions[i].append(np.array(decision.actions[i], dtype=spec.action_dtype))
                rewards[i].append(step_rewards[j])
            t[live] += 1
            done[live] = terminated | truncated
            state.env_steps += len(live)
            if self.store is not None and self.cfg.updates_per_episode is None:
                self.train_due()
        episodes = [(np.stack(f), np.array(a, dtype=spec.action_dtype).reshape(len(a), *spec.action_shape),
                     np.array(r, dtype=np.float32)) for f, a, r in zip(frames, actions, rewards)]
        if self.store is not None:
            for ep in episodes:
                self.store.add_episode(*ep)
        agent.end_episodes(rows, np.stack([ep[0][-1] for ep in episodes]), goals, explore=True)
        state.episodes += n
        if self.store is not None and self.cfg.updates_per_episode is not None and self.learning():
            self.train(self.cfg.updates_per_episode * n)

    def learning(self) -> bool:
        """Whether training has started: min_steps_learn steps and seed_episodes episodes collected."""
        return (self.state.env_steps >= self.cfg.min_steps_learn and self.state.episodes >= self.cfg.seed_episodes
                and self.store.num_frames > 0)

    def train_due(self) -> None:
        """The updates the replay ratio asks for now."""
        if self.learning():
            self.train(self.ratio.due(self.state.env_steps, self.state.updates))

    def train(self, updates: int) -> None:
        """``updates`` updates, each on a batch from the agent's sampler."""
        for _ in range(updates):
            self.train_metrics.append(self.agent.update(self.agent.sampler.sample(self.store, self.rng)))
            self.state.updates += 1

    # ------------------------------------------------------------------ between rounds
    def write_log(self) -> None:
        state, store = self.state, self.store
        now = time.perf_counter()
        steps_then, time_then = self.log_mark
        values = _mean(self.train_metrics)
        values.update(env_steps_per_s=(state.env_steps - steps_then) / (now - time_then), updates=state.updates,
                      episodes=state.episodes, replay_frames=store.num_frames if store is not None else 0,
                      wall_seconds=self.wall())
        values.update(self.agent.log_values(state.env_steps))
        self.log.log(state.env_steps, "train", values)
        self.train_metrics.clear()
        self.log_mark = (state.env_steps, now)

    def evaluate(self) -> EvalResult:
        cfg = self.cfg
        if self.eval_pool is None:
            episodes = evaluation_episodes(self.eval_goals, cfg.eval_episodes)
            self.eval_pool = EnvPool(self.factory, min(EVAL_BATCH, episodes), env_workers(cfg))
        result = evaluate(self.agent, self.factory, self.eval_goals, cfg.eval_episodes, pool=self.eval_pool,
                          record=cfg.eval_video)
        self.last_eval = result.metrics()
        step = self.state.env_steps
        if result.video is not None:
            write_gif(self.out / "videos" / f"eval_{step:09d}.gif", result.video)
        extra = self.agent.diagnostics(self.store, self.out, step)
        self.log.log(step, "eval", {**self.last_eval, **extra, "episodes": self.state.episodes,
                                    "wall_seconds": self.wall()})
        shown = headline(self.last_eval)
        if self.bar is not None and shown is not None:
            self.bar.set_postfix({shown[0].replace("_rate", "").replace("mean_", ""): f"{shown[1]:.2f}"},
                                 refresh=False)
        return result

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
        for pool in (self.pool, self.eval_pool):
            if pool is not None:
                pool.close()


def _mean(records: list[dict]) -> dict:
    """Each metric's mean over the updates that reported it (an agent may report a metric on
    some updates only: MBOLD's actor loss, every policy_delay updates)."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    return {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}


def _progress(cfg: Config, initial: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.steps, initial=initial, unit="step", dynamic_ncols=True,
                desc=f"{cfg.agent} on {cfg.env}")


def _write_figures(out: Path, cfg: Config, result: EvalResult) -> None:
    # A schedule counted in episodes (PlaNet's) is plotted against episodes, the paper's axis.
    by_episode = cfg.updates_per_episode is not None and cfg.dataset is None
    plots.learning_curve(read_metrics(out), out / "learning_curve.png",
                         title=f"{cfg.agent} on {cfg.env}, seed {cfg.seed}", x="episodes" if by_episode else "steps")
    if result.success is not None:
        plots.goal_strip(result.goal_frames, result.final_frames, result.success, out / "goals_vs_achieved.png")
