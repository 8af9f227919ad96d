"""What every driver (online, offline) does around its loop: build the env factory, the spec
and the agent from a config; check the run directory before anything is written; make the
agent's episode store; write the summary.

Nothing in here is specific to one agent: agents are built by name and used through the
contract in ``agents/base.py``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from pixelplan import config as config_lib
from pixelplan.agents import make_agent, resolve_device
from pixelplan.config import Config
from pixelplan.data.replay import ReplayBuffer, check_replay_fits
from pixelplan.envs.core import spec_of
from pixelplan.envs.vector import EnvFactory, default_workers
from pixelplan.runs.logging import read_metrics
from pixelplan.runs.rundir import write_text_atomically
from pixelplan.spec import EnvSpec


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
    """The run's envs, each handing out single frames: the drivers stack them for the agent
    (``envs.wrappers.RowStacks``), so a frame crosses a worker's pipe once."""
    return EnvFactory(cfg.env, parse_env_options(cfg.env_options), 1)


def env_workers(cfg: Config) -> int:
    """Env processes: ``cfg.env_workers``, or one per core (at most n_envs) when it is None."""
    return default_workers(cfg.n_envs) if cfg.env_workers is None else cfg.env_workers


def prepare(cfg: Config):
    """Env factory, a probe env, its spec, the agent and the device for a config (shared by the
    drivers and by eval)."""
    config_lib.validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    factory = env_factory(cfg)
    probe = factory()
    spec = spec_of(probe, frame_stack=cfg.frame_stack)
    device = resolve_device(cfg.device)
    agent = make_agent(cfg.agent, cfg, spec, device, cfg.seed)
    return factory, probe, spec, agent, device


def new_store(spec: EnvSpec, capacity: int) -> ReplayBuffer:
    """An empty episode store for the env's frames and actions, checked to fit in memory."""
    check_replay_fits(capacity, spec.frame_shape, action_shape=spec.action_shape)
    return ReplayBuffer(capacity, spec.frame_shape, spec.frame_stack, action_shape=spec.action_shape,
                        action_dtype=spec.action_dtype)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory; give a directory for the run")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a directory")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {parent} is not writable; choose a directory you can write to")


def warn_if_no_learning(cfg: Config, learns: bool) -> None:
    if learns and cfg.min_steps_learn >= cfg.steps:
        warnings.warn(f"learning starts after min_steps_learn = {cfg.min_steps_learn:,} env steps, but this run's "
                      f"budget is {cfg.steps:,}: it will make few or no updates. Raise --steps or lower "
                      f"--min-steps-learn (or pick a preset for this env: --preset gridworld).", stacklevel=3)


def write_summary(out: Path, cfg, agent, last_eval: dict, wall_seconds: float, **counts) -> dict:
    """Write ``summary.json`` (the run, its ``counts``, its last evaluation) and return it. A
    resumed run that had already finished evaluated nothing this time: its last evaluation
    comes from the metrics."""
    if not last_eval:
        last_eval = next((r for r in reversed(read_metrics(out)) if r["kind"] == "eval"), {})
        last_eval = {k: v for k, v in last_eval.items() if k not in ("step", "kind", "wall_seconds")}
    summary = {"env": cfg.env, "agent": cfg.agent, "label": cfg.label or cfg.agent, "seed": cfg.seed,
               "preset": cfg.preset, **counts, "wall_seconds": round(wall_seconds, 2),
               "eval_trials": agent.eval_trials, **last_eval}
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n", what="summary")
    return summary


def headline(metrics: dict) -> tuple[str, float] | None:
    """The figure a progress bar shows: the success rate on goal tasks, else the mean return."""
    for key in ("success_rate", "mean_return"):
        if key in metrics:
            return key, metrics[key]
    return None


def train_config(args: list[str]) -> Config | None:
    """The config ``pixelplan train ARGS`` runs: the preset (``--preset``, default auto: by env,
    agent and dataset), then every other flag on top of it. None when ARGS asked for --help
    (tyro printed it). Bad flags exit with tyro's message and status 2, before anything is
    written. The sweeps call it too, to check every run's flags before any run starts."""
    import argparse

    import tyro

    pre = argparse.ArgumentParser(prog="pixelplan train", add_help=False, exit_on_error=False)
    pre.add_argument("--preset", nargs="+", default=["auto"])
    pre.add_argument("--env", default=None)
    pre.add_argument("--dataset", default=None)
    pre.add_argument("--agent", default=None)
    try:
        known, rest = pre.parse_known_args(args)
    except argparse.ArgumentError as err:
        raise UsageError(f"{err} (`pixelplan train --help` lists every option)") from None
    if known.agent is not None:
        rest += ["--agent", known.agent]                        # the presets depend on the agent too
    rest = _moved_flags(rest)
    env = known.env or "gridworld"
    helping = "-h" in rest or "--help" in rest
    if known.dataset is not None and not helping:
        from pixelplan.data.dataset import read_attrs
        env = known.env or read_attrs(known.dataset)["env"]    # the preset follows the dataset's env
        rest += ["--dataset", known.dataset]
    base = config_lib.preset(known.preset, env, known.agent or "glamor")
    parse = functools.partial(tyro.cli, Config, default=base, args=rest + ["--env", env], prog="pixelplan train",
                              description="Train an agent; re-run on the same --out to resume.")
    if helping:
        parse()
        return None
    # tyro reports a bad flag as a box of several lines; the project's errors are one line.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            cfg = parse()
    except SystemExit as stop:
        if stop.code in (0, None):
            raise
        raise UsageError(one_line_parse_error(captured.getvalue(), "pixelplan train")) from None
    sys.stderr.write(captured.getvalue())     # a parse that succeeded keeps any warning it printed
    return cfg


class UsageError(ValueError):
    """Bad command-line flags, already said in one line (the CLI prints it and exits 2)."""


def one_line_parse_error(text: str, prog: str) -> str:
    """tyro's error box (a title, a rule, the message, a rule, hints) as one line: the message
    and where the options are listed."""
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip().strip("\u2502\u256d\u256e\u2570\u256f").strip()
        if not line:
            continue
        if set(line) <= set("-\u2500"):
            sections.append([])
        else:
            sections[-1].append(line.strip("\u2500- "))
    body = sections[1] if len(sections) > 1 and sections[1] else [line for sec in sections for line in sec]
    message = " ".join(body).strip() or "could not parse the flags"
    return f"{message} (`{prog} --help` lists every option)"


def _moved_flags(args: list[str]) -> list[str]:
    """``--glamor.<field>`` for a field that moved to the ``shared`` section becomes
    ``--shared.<field>``, with a warning, so that older commands keep working."""
    from pixelplan.config import SHARED_FIELDS

    out = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--glamor.") and flag[len("--glamor."):].replace("-", "_") in SHARED_FIELDS:
            new = "--shared." + flag[len("--glamor."):]
            warnings.warn(f"{flag} is now {new} (GLAMOR, GCSL and DISCERN share it); using {new}", stacklevel=2)
            arg = new + eq + value
        out.append(arg)
    return out


def run_finished(out: str | os.PathLike, cfg: Config) -> bool:
    """Whether the run directory ``out`` holds a run that reached ``cfg``'s budget: its
    ``summary.json`` (written when a run ends) counts the budget's env steps (online) or
    updates (offline). A run stopped early has a checkpoint but no summary, or a summary of a
    smaller budget (its budget was raised since): it is not finished."""
    path = Path(out) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if cfg.dataset is not None:
        return int(summary.get("updates", -1)) >= cfg.updates
    return int(summary.get("env_steps", -1)) >= cfg.steps
