"""Shared fixtures for the planner, agent and run tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pixelplan import config as config_lib

# One CPU thread: faster for these tiny models on a small machine, and bitwise reproducible.
torch.set_num_threads(1)

# The grid world's debug env: T = 12, so one round of 4 envs is 48 env steps.
ROUND = 48


def small_run_config(out, **overrides) -> config_lib.Config:
    """A debug-preset run shrunk further: 6 rounds, a checkpoint every 2, updates from round 2."""
    cfg = config_lib.preset("debug")
    cfg = dataclasses.replace(
        cfg, out=str(out), progress=False, device="cpu", threads=1, steps=6 * ROUND,
        checkpoint_every=2 * ROUND, eval_every=3 * ROUND, log_every=ROUND, min_steps_learn=ROUND,
        eval_episodes=4, replay_ratio=2.0,
    )
    sections = {}
    for key in [k for k in overrides if "." in k]:
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = overrides.pop(key)
    cfg = dataclasses.replace(cfg, **overrides)
    for section, values in sections.items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
    return cfg


def with_glamor_values(cfg: config_lib.Config, **values) -> config_lib.Config:
    """Set GLAMOR hyperparameters by name, whichever section holds them (``shared`` or ``glamor``)."""
    shared = {k: values.pop(k) for k in list(values) if k in config_lib.SHARED_FIELDS}
    cfg.shared = dataclasses.replace(cfg.shared, **shared)
    cfg.glamor = dataclasses.replace(cfg.glamor, **values)
    return cfg


def is_piece_of_an_episode(episodes: list[dict], frames, actions, rewards) -> bool:
    """Whether a training window (frames, actions, rewards) is a contiguous piece of one of
    ``episodes``, each a dict of the "frames", "actions" and "rewards" an env produced, in order."""
    for ep in episodes:
        f, a, r = np.stack(ep["frames"]), np.stack(ep["actions"]), np.array(ep["rewards"])
        for p in range(len(f) - len(frames) + 1):
            if (np.array_equal(f[p:p + len(frames)], frames) and np.array_equal(a[p:p + len(actions)], actions)
                    and np.array_equal(r[p:p + len(rewards)], rewards)):
                return True
    return False


@pytest.fixture
def run_dir(tmp_path):
    """A fresh, not yet existing run directory."""
    return tmp_path / "run"


@pytest.fixture
def make_run_config():
    return small_run_config


def _kill_after_first_shard(call: str, out, timeout: float = 120.0) -> bool:
    """Run ``collect(..., sys.argv[1], ...)`` (``call``, a Python expression) in a child process
    writing ``out``, SIGKILL it once its first shard is on disk; True when it was killed before
    it finished (False: it finished first, and the test cannot check a resume)."""
    import signal
    import subprocess
    import sys
    import time

    code = f"import sys; from pixelplan.runs.collect import collect; {call}"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    first = out.with_name(out.name + ".parts") / "shard-00000.h5"
    deadline = time.monotonic() + timeout
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return not out.exists()


@pytest.fixture
def kill_after_first_shard():
    """The collect-killing helper of the resume tests (test_datasets, test_tabletop)."""
    return _kill_after_first_shard
