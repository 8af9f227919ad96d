"""The online training loop, shared by every online agent.

One *round* collects one episode in each of ``n_envs`` envs side by side (the agent acts on
all rows at once), training as it goes; whole episodes enter the replay at the end of the
round. Evaluations, logs and checkpoints happen between rounds, so a checkpoint is a
clean cut: a killed run resumes from its last checkpoint and continues exactly as an
uninterrupted run would (every env reset draws its seed from the run's RNG, which the
checkpoint holds).

The run directory survives faults (docs/runs.md): every check runs before anything is
written; one process at a time holds its lock; every file is replaced atomically; the
checkpoint before last is kept as a fallback; a full disk keeps the last checkpoint and
says how much space is needed; SIGINT or SIGTERM saves a checkpoint at the end of the
current round and exits (``RunInterrupted``).

Replay ratio: from ``min_steps_learn`` on, the loop keeps the number of training samples
drawn (updates x batch size) at ``replay_ratio`` x the env steps collected since
``min_steps_learn``, checked after every vector step.

Nothing in here is specific to one agent: agents are built by name and used through
``act``, ``update`` and ``state_dict``, plus three optional attributes any agent may have:
``learns = False`` (no replay, no updates), ``needs_next_state = True`` (batches carry the
stack one step after the start, for one-step TD targets) and ``observe_episodes(final_frames,
goals)``, called after each round with the last frame of every episode collected and the
goal the loop gave it (for agents that learn from where their episodes ended).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixelplan import config as config_lib
from pixelplan.agents import ObsSpec, make_agent, resolve_device
from pixelplan.config import Config
from pixelplan.data.replay import ReplayBuffer, check_replay_fits
from pixelplan.envs.vector import EnvFactory, EnvPool, default_workers
from pixelplan.runs import plots
from pixelplan.runs.evaluate import EvalResult, evaluate
from pixelplan.runs.logging import MetricsLog, read_metrics
from pixelplan.runs.rundir import (RunLock, previous_path, remove_stale_temporaries, write_atomically,
                                   write_text_atomically)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
EVAL_BATCH = 64  # evaluation episodes run side by side


class IncompatibleCheckpoint(ValueError):
    """The run directory holds a checkpoint this config cannot resume."""


@dataclass
class LoopState:
    env_steps: int = 0
    episodes: int = 0
    updates: int = 0
    wall_seconds: float = 0.0
    next_eval: int = 0
    next_checkpoint: int = 0
    next_log: int = 0
    rng: dict = field(default_factory=dict)
    pending_metrics: list = field(default_factory=list)   # training metrics not yet logged


def default_out(cfg: Config) -> str:
    return str(Path("runs") / f"{cfg.env.replace(':', '-')}-{cfg.agent}-seed{cfg.seed}")


def parse_env_options(options: dict[str, str]) -> dict:
    """CLI strings to Python values: ints, floats, booleans and None where they parse."""
    out = {}
    for key, value in options.items():
        if not isinstance(value, str):
            out[key] = value
        elif value.lower() in ("none", "null"):
            out[key] = None
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    out[key] = cast(value)
                    break
                except ValueError:
                    continue
            else:
                out[key] = value
    return out


def env_factory(cfg: Config) -> EnvFactory:
    return EnvFactory(cfg.env, parse_env_options(cfg.env_options), cfg.frame_stack)


def env_workers(cfg: Config) -> int:
    """Env processes: ``cfg.env_workers``, or one per core (at most n_envs) when it is None."""
    return default_workers(cfg.n_envs) if cfg.env_workers is None else cfg.env_workers


def obs_spec_of(env) -> ObsSpec:
    return ObsSpec(frame_shape=tuple(env.unwrapped.frame_shape), frame_stack=env.k,
                   n_actions=int(env.action_space.n),
                   max_episode_steps=int(env.unwrapped.max_episode_steps))


def prepare(cfg: Config):
    """Env factory, spec, agent and device for a config (shared by train and eval)."""
    config_lib.validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    factory = env_factory(cfg)
    probe = factory()
    spec = obs_spec_of(probe)
    device = resolve_device(cfg.device)
    agent = make_agent(cfg.agent, cfg, spec, device, cfg.seed)
    return factory, probe, spec, agent, device


def train(cfg: Config) -> dict:
    """Train (or resume) the run ``cfg`` describes; returns its summary.

    Every check runs before anything is written: a refused start (bad config, a run
    directory holding another run, another process on it) leaves the directory as it was.
    """
    started = time.perf_counter()
    config_lib.validate(cfg)
    cfg.out = cfg.out or default_out(cfg)
    out = Path(cfg.out)
    _check_out_dir(out)
    ckpt_path = out / CHECKPOINT
    _check_resumable(out, cfg)
    torch.manual_seed(cfg.seed)
    factory, probe, spec, agent, _ = prepare(cfg)

    learns = getattr(agent, "learns", True)
    if learns and spec.max_episode_steps + 1 > cfg.replay_capacity:
        raise ValueError(f"replay_capacity ({cfg.replay_capacity}) must hold at least one episode "
                         f"({spec.max_episode_steps + 1} frames): use --replay-capacity "
                         f"{spec.max_episode_steps + 1} or more")
    if learns:
        check_replay_fits(cfg.replay_capacity, spec.frame_shape)
    _warn_if_no_learning(cfg, learns)

    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        remove_stale_temporaries(out)
        return _train_locked(cfg, out, ckpt_path, started, factory, probe, spec, agent, learns)


def _train_locked(cfg, out, ckpt_path, started, factory, probe, spec, agent, learns) -> dict:
    replay = ReplayBuffer(cfg.replay_capacity, spec.frame_shape, spec.frame_stack) if learns else None
    env = probe.unwrapped
    goal_pool = env.training_goals(env.n_training_goals, np.random.default_rng([cfg.seed, 1]))
    goal_frames = np.stack([g.frame for g in goal_pool])
    eval_goals = probe.unwrapped.evaluation_goals()
    rng = np.random.default_rng([cfg.seed, 2])
    fresh = LoopState(next_eval=cfg.eval_every, next_checkpoint=cfg.checkpoint_every, next_log=cfg.log_every)
    state, log = open_run(cfg, out, spec, agent, replay, rng, fresh, step_of=lambda st: st.env_steps)
    wall_before = state.wall_seconds

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    workers = env_workers(cfg)
    pool = eval_pool = None
    bar = None
    last_eval: dict = {}
    train_metrics = state.pending_metrics
    steps_at_last_log, time_at_last_log = state.env_steps, time.perf_counter()
    try:
        with StopOnSignal() as stop:
            pool = EnvPool(factory, cfg.n_envs, workers)
            bar = _progress(cfg, state.env_steps)
            while state.env_steps < cfg.steps:
                steps_before = state.env_steps
                episodes, goals = _collect_round(cfg, pool, agent, replay, goal_frames, rng, state, train_metrics)
                if replay is not None:
                    for frames, actions, rewards in episodes:
                        replay.add_episode(frames, actions, rewards)
                if hasattr(agent, "observe_episodes"):
                    agent.observe_episodes(np.stack([ep[0][-1] for ep in episodes]), goals)
                state.episodes += len(episodes)
                if bar is not None:
                    bar.update(state.env_steps - steps_before)
                if state.env_steps >= state.next_log:
                    now = time.perf_counter()
                    values = _mean(train_metrics)
                    values.update(env_steps_per_s=(state.env_steps - steps_at_last_log) / (now - time_at_last_log),
                                  updates=state.updates, episodes=state.episodes,
                                  replay_frames=replay.num_frames if replay is not None else 0,
                                  wall_seconds=wall())
                    if hasattr(agent, "epsilon"):
                        values["epsilon"] = agent.epsilon(state.env_steps)
                    log.log(state.env_steps, "train", values)
                    train_metrics.clear()
                    steps_at_last_log, time_at_last_log = state.env_steps, now
                    state.next_log = next_due(state.next_log, state.env_steps, cfg.log_every)
                final = state.env_steps >= cfg.steps
                if state.env_steps >= state.next_eval or final:
                    if eval_pool is None:
                        eval_pool = EnvPool(factory, min(EVAL_BATCH, cfg.eval_episodes or len(eval_goals)), workers)
                    result = evaluate(agent, factory, eval_goals, cfg.eval_episodes, pool=eval_pool)
                    last_eval = result.metrics()
                    log.log(state.env_steps, "eval", {**last_eval, "wall_seconds": wall()})
                    if bar is not None:
                        bar.set_postfix(success=f"{last_eval['success_rate']:.2f}", refresh=False)
                    state.next_eval = next_due(state.next_eval, state.env_steps, cfg.eval_every)
                    if final:
                        _write_figures(out, cfg, result)
                # A stop request (Ctrl-C, SIGTERM) is honoured here, between rounds, where a
                # checkpoint is a clean cut: the resumed run continues exactly.
                if state.env_steps >= state.next_checkpoint or final or stop.requested:
                    state.next_checkpoint = next_due(state.next_checkpoint, state.env_steps, cfg.checkpoint_every)
                    checkpoint_now(ckpt_path, cfg, spec, agent, replay, rng, state, log, wall())
                if stop.requested and not final:
                    raise RunInterrupted(f"stopped by {stop.signal_name} at env step {state.env_steps:,}; "
                                         f"checkpoint saved in {out}. Re-run the same command to resume.")
    finally:
        if bar is not None:
            bar.close()
        log.close()
        for p in (pool, eval_pool):
            if p is not None:
                p.close()
    summary = write_summary(out, cfg, agent, last_eval, wall(), env_steps=state.env_steps, updates=state.updates,
                            episodes=state.episodes,
                            replay_gib=round(replay.nbytes / 2**30, 3) if replay is not None else 0.0)
    if learns and state.updates == 0:
        warnings.warn(f"this run made no update: its {state.env_steps:,} env steps never passed min_steps_learn = "
                      f"{cfg.min_steps_learn:,}, so its results are those of an untrained agent", stacklevel=2)
    return summary


def open_run(cfg, out: Path, spec, agent, replay, rng, fresh: LoopState, step_of) -> tuple[LoopState, MetricsLog]:
    """Resume from the run's checkpoint (or start from ``fresh``), write the resolved config,
    and open the metrics log at the resumed step (``step_of(state)``: env steps online,
    updates offline). Shared by the online and offline drivers."""
    ckpt = out / CHECKPOINT
    payload = _read_checkpoint(ckpt)
    state = fresh if payload is None else _load_checkpoint(payload, ckpt, cfg, spec, agent, replay, rng)
    resuming = payload is not None
    del payload   # the replay's memory-mapped arrays are copied into the buffer by now
    write_text_atomically(out / "config.json", config_lib.dumps(cfg), what="config")
    return state, MetricsLog(out, resume_step=step_of(state) if resuming else None)


def write_summary(out: Path, cfg, agent, last_eval: dict, wall_seconds: float, **counts) -> dict:
    """Write ``summary.json`` (the run, its ``counts``, its last evaluation) and return it. A
    resumed run that had already finished evaluated nothing this time: its last evaluation
    comes from the metrics."""
    if not last_eval:
        last_eval = next((r for r in reversed(read_metrics(out)) if r["kind"] == "eval"), {})
        last_eval = {k: v for k, v in last_eval.items() if k not in ("step", "kind", "wall_seconds")}
    summary = {"env": cfg.env, "agent": cfg.agent, "label": cfg.label or cfg.agent, "seed": cfg.seed,
               "preset": cfg.preset, **counts, "wall_seconds": round(wall_seconds, 2),
               "eval_trials": getattr(agent, "eval_trials", None), **last_eval}
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n", what="summary")
    return summary


def next_due(due: int, now: int, every: int) -> int:
    """The first multiple-of-``every`` step after ``now``, counting on from ``due`` (a schedule
    that a round of many steps may overshoot by more than one interval)."""
    while due <= now:
        due += every
    return due


def checkpoint_now(path: Path, cfg, spec, agent, replay, rng, state: LoopState, log: MetricsLog,
                   wall_seconds: float) -> None:
    """Save a checkpoint, the metrics up to it on disk first (so a resumed run's metrics never
    lag its checkpoint)."""
    state.wall_seconds = wall_seconds
    log.sync()
    _save_checkpoint(path, cfg, spec, agent, replay, rng, state)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving a checkpoint; re-running resumes it."""


class StopOnSignal:
    """Turn the first SIGINT or SIGTERM into a request the loop honours at its next safe
    point; a second SIGINT aborts at once (KeyboardInterrupt), as a user pressing Ctrl-C
    twice expects. Only in the main thread (signal handlers cannot be set elsewhere)."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\npixelplan: {self.signal_name} received; saving a checkpoint at the end of this round "
              f"(Ctrl-C again to abort without it)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory; give a directory for the run")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a directory")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {parent} is not writable; choose a directory you can write to")


def _check_resumable(out: Path, cfg: Config) -> None:
    """Refuse, before anything is written, to resume a run this config cannot continue."""
    if not any(p.exists() for p in (out / CHECKPOINT, previous_path(out / CHECKPOINT))):
        return
    with warnings.catch_warnings():   # a torn last line is dropped (and reported) by MetricsLog
        warnings.simplefilter("ignore")
        read_metrics(out)             # a bad line refuses the resume here, before anything is written
    saved = None
    saved_cfg_path = out / "config.json"
    if saved_cfg_path.exists():
        try:
            saved = config_lib.load(saved_cfg_path)
        except ValueError as exc:
            warnings.warn(f"{exc}; checking the checkpoint's own copy of the config instead", stacklevel=2)
    if saved is None:
        payload = _read_checkpoint(out / CHECKPOINT)
        if payload is None:
            return
        saved = _checkpoint_config(payload, out / CHECKPOINT)
    diffs = config_lib.incompatible_fields(saved, cfg)
    if diffs:
        raise IncompatibleCheckpoint(
            f"{out} holds a checkpoint of a run with a different config ({'; '.join(diffs)}), so this command "
            f"cannot resume it: resume it with its own settings, or use a new --out directory")


def _warn_if_no_learning(cfg: Config, learns: bool) -> None:
    if learns and cfg.min_steps_learn >= cfg.steps:
        warnings.warn(f"learning starts after min_steps_learn = {cfg.min_steps_learn:,} env steps, but this run's "
                      f"budget is {cfg.steps:,}: it will make few or no updates. Raise --steps or lower "
                      f"--min-steps-learn (or pick a preset for this env: --preset gridworld).", stacklevel=3)


def _collect_round(cfg, pool: EnvPool, agent, replay, goal_frames, rng, state, train_metrics):
    n = len(pool)
    goals = goal_frames[rng.integers(len(goal_frames), size=n)]
    seeds = [int(rng.integers(2**31)) for _ in range(n)]
    obs, _ = pool.reset(range(n), seeds)
    # Copies, not views: ``obs`` is overwritten in place below as the rows step, and a view
    # kept here would turn every episode's first frame into its last (a past bug).
    frames = [[o[-1].copy()] for o in obs]
    actions_taken: list[list[int]] = [[] for _ in range(n)]
    rewards: list[list[float]] = [[] for _ in range(n)]
    t = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    while not done.all():
        actions = agent.act(obs, goals, t, explore=True, env_steps=state.env_steps)
        live = np.flatnonzero(~done)
        new_obs, step_rewards, terminated, truncated, _ = pool.step(live, actions[live])
        obs[live] = new_obs
        for j, i in enumerate(live):
            frames[i].append(new_obs[j, -1].copy())
            actions_taken[i].append(int(actions[i]))
            rewards[i].append(step_rewards[j])
        t[live] += 1
        done[live] = terminated | truncated
        state.env_steps += len(live)
        if replay is not None:
            _train_due(cfg, agent, replay, rng, state, train_metrics)
    return [(np.stack(f), np.array(a, dtype=np.int64), np.array(r, dtype=np.float32))
            for f, a, r in zip(frames, actions_taken, rewards)], goals


def _train_due(cfg, agent, replay, rng, state, train_metrics) -> None:
    if replay.num_frames == 0:
        return
    learn_steps = max(0, state.env_steps - cfg.min_steps_learn)
    due = int(learn_steps * cfg.replay_ratio // agent.batch_size) - state.updates
    for _ in range(max(0, due)):
        batch = replay.sample(agent.batch_size, agent.max_k, rng,
                              with_next=getattr(agent, "needs_next_state", False))
        train_metrics.append(agent.update(batch))
        state.updates += 1


def _mean(records: list[dict]) -> dict:
    if not records:
        return {}
    return {k: float(np.mean([r[k] for r in records])) for k in records[0]}


def _progress(cfg: Config, initial: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.steps, initial=initial, unit="step", dynamic_ncols=True,
                desc=f"{cfg.agent} on {cfg.env}")


def _write_figures(out: Path, cfg: Config, result: EvalResult) -> None:
    plots.learning_curve(read_metrics(out), out / "learning_curve.png",
                         title=f"{cfg.agent} on {cfg.env}, seed {cfg.seed}")
    plots.goal_strip(result.goal_frames, result.final_frames, result.success, out / "goals_vs_achieved.png")


# ---------------------------------------------------------------------- checkpoints
def _replay_tensors(replay) -> dict | None:
    """The replay's state with its arrays as tensors sharing their memory: saving copies
    nothing, and loading can memory-map them."""
    if replay is None:
        return None
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in replay.state_dict(copy=False).items()}


def _save_checkpoint(path: Path, cfg, spec, agent, replay, rng, state: LoopState) -> None:
    state.rng = rng.bit_generator.state
    payload = {"format": CHECKPOINT_FORMAT, "config": config_lib.to_dict(cfg), "spec": spec.to_dict(),
               "agent": agent.state_dict(), "replay": _replay_tensors(replay), "loop": state.__dict__,
               "torch_rng": torch.get_rng_state()}
    # Atomic (temp file, fsync, rename): a kill or a full disk mid-save leaves the previous
    # checkpoint intact; it is also kept as checkpoint.prev.pt, a fallback for an unreadable one.
    write_atomically(path, lambda f: torch.save(payload, f), what="checkpoint",
                     need_bytes=_tensor_bytes(payload), keep_previous=cfg.keep_previous_checkpoint)


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors and arrays in a nested payload (what a checkpoint's size is made of)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values()) + 1024
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj) + 64
    return 64


def _read_checkpoint(path: Path) -> dict | None:
    """The newest readable checkpoint of a run (``checkpoint.pt``, else the fallback
    ``checkpoint.prev.pt`` with a warning), or None when there is none."""
    candidates = [p for p in (path, previous_path(path)) if p.exists()]
    errors = []
    for p in candidates:
        try:
            # mmap: the replay's frames are read from the file as they are copied into the buffer,
            # so resuming does not need the buffer's memory twice.
            payload = torch.load(p, weights_only=False, mmap=True)
            if not isinstance(payload, dict) or "format" not in payload:
                raise ValueError("not a pixelplan checkpoint")
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same treatment
            errors.append(f"{p.name}: {_one_line(exc)}")
            continue
        if p != path:
            warnings.warn(f"{path} is unreadable ({errors[0]}); resuming from the previous checkpoint {p.name}",
                          stacklevel=2)
        return payload
    if errors:
        raise IncompatibleCheckpoint(f"cannot read the checkpoint in {path.parent} ({'; '.join(errors)}); "
                                     f"delete {path.parent} to start over")
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _checkpoint_config(payload: dict, path: Path) -> Config:
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise IncompatibleCheckpoint(f"{path} has checkpoint format {payload.get('format')}, this pixelplan "
                                     f"writes format {CHECKPOINT_FORMAT}; use a new --out directory")
    try:
        return config_lib.from_dict(payload["config"])
    except (KeyError, TypeError) as exc:
        raise IncompatibleCheckpoint(f"{path} holds no usable config ({_one_line(exc)}); "
                                     f"delete {path.parent} to start over") from None


def _load_checkpoint(payload: dict, path: Path, cfg, spec, agent, replay, rng) -> LoopState:
    diffs = config_lib.incompatible_fields(_checkpoint_config(payload, path), cfg)
    if diffs or payload["spec"] != spec.to_dict():
        detail = "; ".join(diffs) if diffs else f"env spec {payload['spec']} -> {spec.to_dict()}"
        raise IncompatibleCheckpoint(f"checkpoint {path} was made with an incompatible config ({detail}): "
                                     f"resume it with its own settings, or use a new --out directory")
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IncompatibleCheckpoint(f"checkpoint {path} does not fit this agent ({_one_line(exc)}); "
                                     f"use a new --out directory") from exc
    if replay is not None:
        replay.load_state_dict({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                for k, v in payload["replay"].items()})
    torch.set_rng_state(payload["torch_rng"])
    state = LoopState(**payload["loop"])
    rng.bit_generator.state = state.rng
    return state


def load_agent(run_dir) -> tuple[Config, object, object, list]:
    """The config, agent and env factory of a saved run, for evaluation."""
    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT
    if not run_dir.is_dir() or not any(p.exists() for p in (ckpt_path, previous_path(ckpt_path))):
        raise FileNotFoundError(f"{run_dir} is not a pixelplan run directory with a checkpoint "
                                f"(expected {cfg_path.name} and {ckpt_path.name}); train one with "
                                f"`pixelplan train --out {run_dir}`")
    payload = _read_checkpoint(ckpt_path)  # mmap: the replay is not read
    saved = _checkpoint_config(payload, ckpt_path)
    try:
        cfg = config_lib.load(cfg_path) if cfg_path.exists() else saved
    except ValueError as exc:
        warnings.warn(f"{exc}; using the checkpoint's own copy of the config", stacklevel=2)
        cfg = saved
    if config_lib.incompatible_fields(saved, cfg):
        cfg = saved  # config.json was edited or replaced: the weights are the checkpoint's run's
    factory, probe, spec, agent, _ = prepare(cfg)
    if payload.get("spec") != spec.to_dict():
        raise IncompatibleCheckpoint(f"checkpoint {ckpt_path} was made for env spec {payload.get('spec')}, "
                                     f"but the env now gives {spec.to_dict()}")
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise IncompatibleCheckpoint(f"checkpoint {ckpt_path} does not fit a {cfg.agent} agent "
                                     f"({_one_line(exc)})") from None
    return cfg, agent, factory, probe.unwrapped.evaluation_goals()
