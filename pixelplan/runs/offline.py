"""Offline training: learn from a dataset on disk, never collecting (``pixelplan train --dataset``).

    pixelplan collect --env gridworld --episodes 2000 --out data/grid.h5
    pixelplan train --dataset data/grid.h5 --agent gcsl --updates 5000 --out runs/grid-gcsl-offline

The dataset's env (and its options) is the run's env; the budget is in gradient updates
(``updates``), and evaluation, logging and checkpoints are every so many updates
(``eval_every_updates`` ...). The metrics' ``step`` is the update count. The run directory
is the online one's (config, ``metrics.jsonl``, TensorBoard, checkpoints, summary, plots),
with the same guarantees (a lock, atomic writes, exact resume), but its checkpoints hold no
replay: the data is the file, referenced by path and content hash in the config. A resumed
run whose dataset no longer has that hash is refused.

The whole dataset is read into the episode store (each frame once) at the start, one
episode at a time, when it fits in memory; a dataset that does not is served from the file
by the disk store (pixelplan/data/disk_store.py), which draws exactly the same samples, only
slower (``dataset_memory``: auto, ram or disk). The agent trains from the store through its
own sampler (hindsight for GLAMOR, GCSL and DISCERN), exactly as online.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pixelplan import config as config_lib
from pixelplan.config import Config
from pixelplan.data.dataset import DatasetError, read_episodes, verify
from pixelplan.data.disk_store import DiskEpisodeStore
from pixelplan.data.replay import ReplayBuffer, ReplayTooLarge, check_replay_fits
from pixelplan.data.samplers import HindsightSampler
from pixelplan.envs.vector import EnvPool
from pixelplan.runs.checkpoints import CHECKPOINT, LoopState, check_resumable, checkpoint_now, open_run
from pixelplan.runs.common import check_out_dir, env_workers, prepare, write_summary
from pixelplan.runs.evaluate import evaluate, evaluation_episodes
from pixelplan.runs.online import EVAL_BATCH, _mean, _write_figures
from pixelplan.runs.rundir import RunLock, remove_stale_temporaries
from pixelplan.runs.schedule import RunInterrupted, StopOnSignal, next_due
from pixelplan.video import write_gif


def dataset_config(cfg: Config) -> tuple[Config, dict]:
    """``cfg`` with the dataset's env, env options and content hash filled in (and checked),
    and the dataset's attributes (verified against its content)."""
    attrs = verify(cfg.dataset)
    env, options = attrs["env"], {str(k): str(v) for k, v in (attrs.get("env_options") or {}).items()}
    if cfg.env not in (env, "gridworld") or (cfg.env == env and cfg.env_options and cfg.env_options != options):
        raise DatasetError(f"--dataset {cfg.dataset} was collected on {env} {options or ''}, but the run asks for "
                           f"{cfg.env} {cfg.env_options or ''}; leave --env out (the dataset sets it)")
    cfg.env, cfg.env_options = env, options
    if cfg.dataset_hash not in (None, attrs["content_hash"]):
        raise DatasetError(f"--dataset {cfg.dataset} has content hash {attrs['content_hash'][:12]}..., "
                           f"not the {cfg.dataset_hash[:12]}... asked for")
    cfg.dataset_hash = attrs["content_hash"]
    return cfg, attrs


def train_offline(cfg: Config) -> dict:
    """Train (or resume) the offline run ``cfg`` describes; returns its summary."""
    started = time.perf_counter()
    config_lib.validate(cfg)
    cfg, attrs = dataset_config(cfg)
    cfg.out = cfg.out or str(Path("runs") / f"{cfg.env.replace(':', '-')}-{cfg.agent}-offline-seed{cfg.seed}")
    out = Path(cfg.out)
    check_out_dir(out)
    check_resumable(out, cfg)        # a changed dataset differs in dataset_hash: refused here
    torch.manual_seed(cfg.seed)
    factory, probe, spec, agent, _ = prepare(cfg)
    if not agent.learns:
        raise ValueError(f"agent {cfg.agent} does not learn: offline training needs a learning agent (glamor, gcsl, discern or planet)")
    frames = int(attrs["frames"])           # verified against the content by dataset_config
    where = store_location(cfg.dataset_memory, frames, spec.frame_shape, action_shape=spec.action_shape)
    if where == "disk" and not isinstance(agent.sampler, HindsightSampler):
        need = ReplayBuffer.bytes_needed(frames, spec.frame_shape, spec.action_shape) / 2**30
        raise DatasetError(f"agent {cfg.agent} trains from {type(agent.sampler).__name__} batches, which only the "
                           f"in-memory store serves, but the dataset's {frames:,} frames ({need:.1f} GiB) are to be "
                           f"read from disk; use --dataset-memory ram on a machine with the memory, or a smaller "
                           f"dataset")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        remove_stale_temporaries(out)
        return _offline_locked(cfg, out, started, factory, probe, spec, agent, frames, where)


def store_location(memory: str, frames: int, frame_shape, available: int | None = None,
                   action_shape: tuple[int, ...] = ()) -> str:
    """Where ``dataset_memory`` (auto, ram, disk) puts a dataset of ``frames`` frames: "ram" or
    "disk". "ram" that does not fit is refused (ReplayTooLarge, with the size needed)."""
    if memory == "disk":
        return "disk"
    try:
        check_replay_fits(frames, frame_shape, available, action_shape=action_shape)
    except ReplayTooLarge:
        if memory == "ram":
            raise
        need = ReplayBuffer.bytes_needed(frames, frame_shape, action_shape) / 2**30
        warnings.warn(f"the dataset's {frames:,} frames need {need:.1f} GiB in memory, more than this machine can "
                      f"spare: reading them from the file as batches need them (slower, the same samples)",
                      stacklevel=2)
        return "disk"
    return "ram"


def open_store(cfg: Config, spec, frames: int, where: str) -> ReplayBuffer | DiskEpisodeStore:
    """The episode store of the dataset: all of it read into a ReplayBuffer ("ram"), or a
    DiskEpisodeStore on the file ("disk"); the two draw the same samples for a seed."""
    if where == "disk":
        store = DiskEpisodeStore(cfg.dataset, spec.frame_stack)
        if tuple(store.frame_shape) != tuple(spec.frame_shape):
            store.close()
            raise DatasetError(f"{cfg.dataset} holds frames of shape {store.frame_shape}, but its env gives "
                               f"{spec.frame_shape}: collect it again with this pixelplan")
        return store
    store = None
    for ep in read_episodes(cfg.dataset):
        if tuple(ep.frames.shape[1:]) != tuple(spec.frame_shape):
            raise DatasetError(f"{cfg.dataset} holds frames of shape {ep.frames.shape[1:]}, but its env gives "
                               f"{spec.frame_shape}: collect it again with this pixelplan")
        if store is None:        # the first episode says whether the file stores the env's features
            feature_dim = ep.features.shape[1] if ep.features is not None and ep.features.ndim == 2 else 0
            store = ReplayBuffer(frames, spec.frame_shape, spec.frame_stack, action_shape=spec.action_shape,
                                 action_dtype=spec.action_dtype, feature_dim=feature_dim)
        features = ep.features if store.feature_dim else None
        if features is not None and features.shape != (len(ep.frames), store.feature_dim):
            features = None      # an episode without (or with other) features: NaN rows
        store.add_episode(ep.frames, ep.actions, ep.rewards, features=features)
    if store is None:
        raise DatasetError(f"{cfg.dataset} holds no episodes; collect some with `pixelplan collect`")
    return store


def _offline_locked(cfg, out, started, factory, probe, spec, agent, frames, where) -> dict:
    store = open_store(cfg, spec, frames, where)
    rng = np.random.default_rng([cfg.seed, 2])
    fresh = LoopState(next_eval=cfg.eval_every_updates, next_checkpoint=cfg.checkpoint_every_updates,
                      next_log=cfg.log_every_updates)
    try:
        state, log = open_run(cfg, out, spec, agent, None, rng, fresh, step_of=lambda st: st.updates)
    except BaseException:
        if isinstance(store, DiskEpisodeStore):
            store.close()           # a refused resume leaves no file handle behind
        raise
    wall_before = state.wall_seconds
    eval_goals = probe.unwrapped.evaluation_goals() if spec.has_goals else None
    eval_pool, last_eval, metrics = None, {}, state.pending_metrics

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    try:
        with StopOnSignal() as stop:
            while state.updates < cfg.updates:
                metrics.append(agent.update(agent.sampler.sample(store, rng)))
                state.updates += 1
                final = state.updates >= cfg.updates
                if state.updates >= state.next_log:
                    log.log(state.updates, "train", {**_mean(metrics), "updates": state.updates,
                                                     "wall_seconds": wall()})
                    metrics.clear()
                    state.next_log = next_due(state.next_log, state.updates, cfg.log_every_updates)
                if state.updates >= state.next_eval or final:
                    if eval_pool is None:
                        episodes = evaluation_episodes(eval_goals, cfg.eval_episodes)
                        eval_pool = EnvPool(factory, min(EVAL_BATCH, episodes), env_workers(cfg))
                    result = evaluate(agent, factory, eval_goals, cfg.eval_episodes, pool=eval_pool,
                                      record=cfg.eval_video)
                    last_eval = result.metrics()
                    if result.video is not None:
                        write_gif(out / "videos" / f"eval_{state.updates:09d}.gif", result.video)
                    extra = agent.diagnostics(store, out, state.updates)
                    log.log(state.updates, "eval", {**last_eval, **extra, "wall_seconds": wall()})
                    state.next_eval = next_due(state.next_eval, state.updates, cfg.eval_every_updates)
                    if final:
                        _write_figures(out, cfg, result)
                if state.updates >= state.next_checkpoint or final or stop.requested:
                    state.next_checkpoint = next_due(state.next_checkpoint, state.updates,
                                                     cfg.checkpoint_every_updates)
                    checkpoint_now(out / CHECKPOINT, cfg, spec, agent, None, rng, state, log, wall())
                if stop.requested and not final:
                    raise RunInterrupted(f"stopped by {stop.signal_name} at update {state.updates:,}; "
                                         f"checkpoint saved in {out}. Re-run the same command to resume.")
    finally:
        log.close()
        if eval_pool is not None:
            eval_pool.close()
        if isinstance(store, DiskEpisodeStore):
            store.close()
    summary = write_summary(out, cfg, agent, last_eval, wall(), dataset=cfg.dataset, dataset_hash=cfg.dataset_hash,
                            dataset_frames=store.num_frames, dataset_store=where, env_steps=0, updates=state.updates)
    return summary

