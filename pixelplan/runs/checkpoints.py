"""Checkpoints: one file per run holding everything a resume needs (the config, the env spec,
the agent's state, the episode store of an online run, the loop's counters and RNG), written
atomically with the one before kept as a fallback; the resume check that refuses, before
anything is written, a run this config cannot continue; and loading a run's agent for eval.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixelplan import config as config_lib
from pixelplan.config import Config
from pixelplan.runs.common import prepare
from pixelplan.runs.logging import MetricsLog, read_metrics
from pixelplan.runs.rundir import previous_path, write_atomically, write_text_atomically
from pixelplan.spec import EnvSpec

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


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


def check_resumable(out: Path, cfg: Config) -> None:
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
        payload = read_checkpoint(out / CHECKPOINT)
        if payload is None:
            return
        saved = checkpoint_config(payload, out / CHECKPOINT)
    diffs = config_lib.incompatible_fields(saved, cfg)
    if diffs:
        raise IncompatibleCheckpoint(
            f"{out} holds a checkpoint of a run with a different config ({'; '.join(diffs)}), so this command "
            f"cannot resume it: resume it with its own settings, or use a new --out directory")


def open_run(cfg, out: Path, spec, agent, replay, rng, fresh: LoopState, step_of) -> tuple[LoopState, MetricsLog]:
    """Resume from the run's checkpoint (or start from ``fresh``), write the resolved config,
    and open the metrics log at the resumed step (``step_of(state)``: env steps online,
    updates offline). Shared by the online and offline drivers."""
    ckpt = out / CHECKPOINT
    payload = read_checkpoint(ckpt)
    state = fresh if payload is None else load_checkpoint(payload, ckpt, cfg, spec, agent, replay, rng)
    resuming = payload is not None
    del payload   # the replay's memory-mapped arrays are copied into the buffer by now
    if resuming:  # said on stderr, so that a run's log shows each resume and where it picked up
        print(f"pixelplan train: resuming {out} from its checkpoint at step {step_of(state):,}", file=sys.stderr,
              flush=True)
    write_text_atomically(out / "config.json", config_lib.dumps(cfg), what="config")
    return state, MetricsLog(out, resume_step=step_of(state) if resuming else None)


def checkpoint_now(path: Path, cfg, spec, agent, replay, rng, state: LoopState, log: MetricsLog,
                   wall_seconds: float) -> None:
    """Save a checkpoint, the metrics up to it on disk first (so a resumed run's metrics never
    lag its checkpoint)."""
    state.wall_seconds = wall_seconds
    log.sync()
    save_checkpoint(path, cfg, spec, agent, replay, rng, state)


def same_spec(saved: dict | None, spec: EnvSpec) -> bool:
    """Whether a checkpoint's spec (this one's, or the older four-key form) is ``spec``."""
    try:
        return saved is not None and EnvSpec.from_dict(saved) == spec
    except (TypeError, ValueError):
        return False


def _replay_tensors(replay) -> dict | None:
    """The replay's state with its arrays as tensors sharing their memory: saving copies
    nothing, and loading can memory-map them."""
    if replay is None:
        return None
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in replay.state_dict(copy=False).items()}


def save_checkpoint(path: Path, cfg, spec, agent, replay, rng, state: LoopState) -> None:
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


def read_checkpoint(path: Path) -> dict | None:
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


def checkpoint_config(payload: dict, path: Path) -> Config:
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise IncompatibleCheckpoint(f"{path} has checkpoint format {payload.get('format')}, this pixelplan "
                                     f"writes format {CHECKPOINT_FORMAT}; use a new --out directory")
    try:
        return config_lib.from_dict(payload["config"])
    except (KeyError, TypeError) as exc:
        raise IncompatibleCheckpoint(f"{path} holds no usable config ({_one_line(exc)}); "
                                     f"delete {path.parent} to start over") from None


def load_checkpoint(payload: dict, path: Path, cfg, spec, agent, replay, rng) -> LoopState:
    diffs = config_lib.incompatible_fields(checkpoint_config(payload, path), cfg)
    if diffs or not same_spec(payload["spec"], spec):
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


def load_agent(run_dir, tasks: str | None = None) -> tuple[Config, object, object, list | None]:
    """The config, agent, env factory and evaluation goals (None on reward tasks) of a saved
    run, for evaluation; ``tasks`` evaluates on another of the env's test-task sets (MBOLD's
    tabletop scenes: ``regular`` or ``hard``)."""
    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT
    if not run_dir.is_dir() or not any(p.exists() for p in (ckpt_path, previous_path(ckpt_path))):
        raise FileNotFoundError(f"{run_dir} is not a pixelplan run directory with a checkpoint "
                                f"(expected {cfg_path.name} and {ckpt_path.name}); train one with "
                                f"`pixelplan train --out {run_dir}`")
    payload = read_checkpoint(ckpt_path)  # mmap: the replay is not read
    saved = checkpoint_config(payload, ckpt_path)
    try:
        cfg = config_lib.load(cfg_path) if cfg_path.exists() else saved
    except ValueError as exc:
        warnings.warn(f"{exc}; using the checkpoint's own copy of the config", stacklevel=2)
        cfg = saved
    if config_lib.incompatible_fields(saved, cfg):
        cfg = saved  # config.json was edited or replaced: the weights are the checkpoint's run's
    if tasks is not None:
        if not cfg.env.startswith("tabletop:"):
            raise ValueError(f"--tasks picks a test-task set of MBOLD's tabletop scenes, but {run_dir} is a {cfg.env} "
                             f"run; leave --tasks out")
        cfg.env_options = {**cfg.env_options, "tasks": tasks}
    factory, probe, spec, agent, _ = prepare(cfg)
    if not same_spec(payload.get("spec"), spec):
        raise IncompatibleCheckpoint(f"checkpoint {ckpt_path} was made for env spec {payload.get('spec')}, "
                                     f"but the env now gives {spec.to_dict()}")
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise IncompatibleCheckpoint(f"checkpoint {ckpt_path} does not fit a {cfg.agent} agent "
                                     f"({_one_line(exc)})") from None
    return cfg, agent, factory, probe.unwrapped.evaluation_goals() if spec.has_goals else None
