"""``pixelplan collect``: a dataset of episodes on disk, for offline training.

    pixelplan collect --env gridworld --agent random --episodes 2000 --out data/gridworld.h5

Episodes are collected side by side in an env pool (worker processes when asked) and
written in *shards*: every ``shard_episodes`` episodes become one file in ``OUT.parts/``,
written atomically, so a killed collect loses at most the shard it was writing and never
counts a partial episode. Re-running the same command resumes from the shards on disk; at
the end the shards are merged into ``OUT`` (atomically too) and ``OUT.parts/`` is removed.

Every episode is determined by the seed and its own index (the env's reset seed and the
random actions both come from ``(seed, episode index)``), so a resumed collect writes the
same file, byte for byte in its arrays and content hash, as one that was never interrupted,
whatever the pool size.

Only ``--agent random`` is supported: collecting with a trained agent is a separate feature. Its
``--policy``: ``uniform`` (the GLAMOR paper's random data: over ``0..n-1`` for ``Discrete``
actions, within the bounds entry by entry for a ``Box``) or ``correlated`` (MBOLD's: per
episode one filtered Gaussian sequence, pixelplan/envs/noise.py, with ``--noise-std`` or the
suite's std); ``auto`` (the default) is the suite's own policy: correlated on ``tabletop:*``
(MBOLD table 4), uniform elsewhere. A correlated dataset records the policy, its std and
beta in its attributes; a uniform one has the attributes it always had.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from pixelplan import __version__
from pixelplan.data.dataset import DatasetError, Episode, read_attrs, read_episodes, write_episodes
from pixelplan.envs.core import random_action, spec_of
from pixelplan.envs.vector import EnvFactory, EnvPool
from pixelplan.spec import EnvSpec
from pixelplan.runs.rundir import TMP_PREFIX, RunLock, remove_stale_temporaries, write_atomically, write_text_atomically

AGENTS = ("random",)


def collect(env: str, episodes: int, out: str | os.PathLike, *, agent: str = "random",
            env_options: dict[str, str] | None = None, seed: int = 0, shard_episodes: int = 100,
            n_envs: int = 8, workers: int = 0, progress: bool = True, policy: str = "auto",
            noise_std: list[float] | None = None, noise_beta: float = 0.5, ray: dict | None = None) -> dict:
    """Collect ``episodes`` episodes of ``env`` into the dataset file ``out``; returns its attrs.

    With ``ray`` (the keyword arguments of ``cluster.run_shards_ray``: ``address``,
    ``cpus_per_task``, ``parallel``), every missing shard is one Ray task (its own env pool of
    ``n_envs`` envs in that task's process) and this process merges them. The file is the
    same whatever the number of tasks: a shard depends only on the seed and its episodes'
    indices. ``out`` must then be on storage every node sees."""
    from pixelplan.runs.common import parse_env_options

    env_options = dict(env_options or {})
    _check(agent, episodes, seed, shard_episodes, n_envs, workers)
    if ray is not None:
        from pixelplan.runs.cluster import check_collect_options
        check_collect_options(**ray)
    noise = _policy(env, policy, noise_std, noise_beta)
    out = Path(out)
    settings = {"env": env, "env_options": env_options, "agent": agent, "seed": int(seed),
                "episodes": int(episodes)}
    if noise is not None:      # uniform datasets keep the attributes they always had
        settings["policy"] = {"kind": "correlated", **noise}
    parts = out.with_name(out.name + ".parts")
    if out.exists() and not out.is_dir():
        attrs = read_attrs(out)
        if {k: attrs.get(k) for k in settings} != settings:
            raise DatasetError(f"{out} already holds a dataset collected with other settings "
                               f"({_differences(attrs, settings)}); use another --out or delete it")
        if parts.is_dir():       # killed after the merge, before the shards were removed
            with RunLock(parts, command="pixelplan collect"):
                pass
            shutil.rmtree(parts)
        return attrs                                     # already complete: nothing more to do
    if out.is_dir():
        raise DatasetError(f"--out {out} is a directory; give a file name, e.g. {out / (env.replace(':', '-') + '.h5')}")
    factory = EnvFactory(env, parse_env_options(env_options), 1)
    probe = factory()
    spec, space = spec_of(probe), probe.action_space
    probe.close()
    if noise is not None:
        if spec.discrete:
            raise ValueError(f"collect --policy correlated needs continuous actions; {env} has "
                             f"{spec.describe_actions()}: use --policy uniform")
        if len(noise["std"]) != int(np.prod(spec.action_shape)):
            raise ValueError(f"collect --noise-std has {len(noise['std'])} values; {env} has "
                             f"{int(np.prod(spec.action_shape))} action dimensions")
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"--out {out}: cannot create {parts} ({err.strerror}); "
                           f"choose a directory you can write to") from None
    with RunLock(parts, command="pixelplan collect"):
        _check_parts(parts, settings)
        remove_stale_temporaries(parts)                       # a shard killed mid-write
        for stale in out.parent.glob(f"{TMP_PREFIX}{out.name}.*"):   # a merge killed mid-write
            stale.unlink()
        n_shards = -(-episodes // shard_episodes)
        done = {k for k in range(n_shards) if _shard_path(parts, k).exists()}
        bar = _progress(progress, episodes, sum(_shard_size(k, episodes, shard_episodes) for k in done))
        side_by_side = min(n_envs, shard_episodes, episodes)
        jobs = {k: ShardJob(k, factory, spec, space, seed, range(k * shard_episodes, k * shard_episodes +
                                                                  _shard_size(k, episodes, shard_episodes)),
                            noise, side_by_side, settings, _shard_path(parts, k).absolute())
                for k in range(n_shards) if k not in done}
        try:
            if ray is not None:
                from pixelplan.runs.cluster import run_shards_ray
                run_shards_ray(parts, jobs, progress=None if bar is None else lambda k: bar.update(len(jobs[k].ids)), **ray)
            else:
                pool = EnvPool(factory, side_by_side, workers)
                try:
                    for job in jobs.values():
                        job.write(pool, bar)
                finally:
                    pool.close()
        finally:
            if bar is not None:
                bar.close()
        shards = [_shard_path(parts, k) for k in range(n_shards)]
        attrs = _write_dataset(out, (ep for path in shards for ep in read_episodes(path)),
                               {**settings, "pixelplan_version": __version__,
                                "observation": "the env's frames, one per step, uint8"})
    shutil.rmtree(parts)
    return attrs


@dataclasses.dataclass
class ShardJob:
    """Everything one shard needs, so that it can be written here or in a Ray task."""
    index: int
    factory: EnvFactory
    spec: EnvSpec
    space: object
    seed: int
    ids: range
    noise: dict | None
    n_envs: int
    settings: dict
    path: Path

    def write(self, pool: EnvPool, bar=None) -> None:
        shard = _collect_episodes(pool, self.spec, self.space, self.seed, self.ids, bar, self.noise)
        _write_dataset(self.path, shard, {**self.settings, "shard": self.index})

    def __call__(self) -> None:
        """Write the shard with a pool of its own, in this process (a Ray task's body)."""
        pool = EnvPool(self.factory, self.n_envs, 0)
        try:
            self.write(pool)
        finally:
            pool.close()


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """Episode ``index``'s random stream: its first draw is the env's reset seed, the rest
    its actions, one per step."""
    return np.random.default_rng([seed, index])


def _policy(env: str, policy: str, noise_std, noise_beta: float) -> dict | None:
    """The correlated-noise settings ``{"std", "beta"}`` of ``policy``, or None for uniform."""
    from pixelplan.envs.noise import POLICIES
    from pixelplan.suites import collection_noise

    if policy not in (*POLICIES, "auto"):
        raise ValueError(f"collect --policy must be auto, {' or '.join(POLICIES)}, got {policy!r}")
    suite = collection_noise(env)
    if policy == "uniform" or (policy == "auto" and suite is None and noise_std is None):
        if noise_std is not None:
            raise ValueError("collect --noise-std sets the correlated policy's std: drop it, or add "
                             "--policy correlated")
        return None
    std = list(noise_std) if noise_std is not None else (suite or {}).get("std")
    if std is None:
        raise ValueError(f"collect --policy correlated on {env}: give --noise-std, one value per action "
                         "dimension (the suite has no std of its own)")
    if not (0 < noise_beta <= 1) or any(not np.isfinite(v) or v < 0 for v in std):
        raise ValueError(f"collect: --noise-beta must be in (0, 1] and --noise-std values >= 0, got "
                         f"{noise_beta} and {std}")
    beta = float(suite["beta"]) if (suite is not None and noise_std is None and noise_beta == 0.5) else float(noise_beta)
    return {"std": [float(v) for v in std], "beta": beta}


def _collect_episodes(pool: EnvPool, spec: EnvSpec, space, seed: int, ids: range, bar,
                      noise: dict | None = None) -> list[Episode]:
    """Episodes ``ids``, up to ``len(pool)`` side by side; each is fixed by (seed, its index)."""
    from pixelplan.envs.noise import CorrelatedNoise

    out = []
    for start in range(0, len(ids), len(pool)):
        batch = ids[start:start + len(pool)]
        rows = list(range(len(batch)))
        rngs = [episode_rng(seed, i) for i in batch]
        obs, infos = pool.reset(rows, [int(r.integers(2**31)) for r in rngs])
        frames = [[obs[j].copy()] for j in rows]
        filters = None if noise is None else [CorrelatedNoise(noise["std"], space.low.reshape(-1),
                                                              space.high.reshape(-1), noise["beta"]) for _ in rows]
        features = [[np.asarray(info.get("features"), dtype=np.float64)] for info in infos]
        actions, rewards = [[] for _ in rows], [[] for _ in rows]
        live = list(rows)
        while live:
            if filters is None:
                acts = [random_action(space, rngs[j]) for j in live]   # the goal sets' random policy
            else:
                acts = [filters[j].sample(rngs[j]).reshape(space.shape) for j in live]
            new_obs, rew, terminated, truncated, step_infos = pool.step(live, acts)
            still = []
            for pos, j in enumerate(live):
                frames[j].append(new_obs[pos].copy())
                actions[j].append(acts[pos])
                rewards[j].append(rew[pos])
                features[j].append(np.asarray(step_infos[pos].get("features"), dtype=np.float64))
                if not (terminated[pos] or truncated[pos]):
                    still.append(j)
            live = still
        for j in rows:
            has_features = all(f.ndim == 1 and f.size and f.dtype.kind == "f" for f in features[j])
            acts = np.array(actions[j], dtype=spec.action_dtype).reshape(len(actions[j]), *spec.action_shape)
            out.append(Episode(frames=np.stack(frames[j]), actions=acts,
                               rewards=np.array(rewards[j], dtype=np.float32),
                               features=np.stack(features[j]) if has_features else None))
        if bar is not None:
            bar.update(len(batch))
    return out


def _write_dataset(path: Path, episodes, attrs: dict) -> dict:
    """``write_episodes`` made atomic: a temporary file, fsynced, renamed into place."""
    written = {}
    write_atomically(path, lambda tmp: written.update(write_episodes(tmp, episodes, attrs)), what="dataset",
                     to_path=True)
    return written


def _check(agent, episodes, seed, shard_episodes, n_envs, workers) -> None:
    if agent not in AGENTS:
        raise ValueError(f"collect --agent {agent!r}: only {', '.join(AGENTS)} is supported (uniform "
                         f"actions); to collect with a trained agent, train it and use its run's replay")
    for name, value, low in (("episodes", episodes, 1), ("shard-episodes", shard_episodes, 1),
                             ("n-envs", n_envs, 1), ("seed", seed, 0), ("workers", workers, 0)):
        if int(value) < low:
            raise ValueError(f"collect --{name} must be >= {low}, got {value}")


def _check_parts(parts: Path, settings: dict) -> None:
    """The shards on disk must come from the same settings (written the first time)."""
    path = parts / "collect.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != settings:
            raise DatasetError(f"{parts} holds shards of a collect with other settings "
                               f"({_differences(saved, settings)}); re-run that command to finish it, "
                               f"or delete {parts}")
    else:
        write_text_atomically(path, json.dumps(settings, sort_keys=True) + "\n", what="collect settings")


def _differences(saved: dict, wanted: dict) -> str:
    return "; ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v)


def _shard_path(parts: Path, k: int) -> Path:
    return parts / f"shard-{k:05d}.h5"


def _shard_size(k: int, episodes: int, shard_episodes: int) -> int:
    return min(shard_episodes, episodes - k * shard_episodes)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="episode", desc="collect", dynamic_ncols=True)
