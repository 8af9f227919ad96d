"""Datasets on disk: collect -> HDF5 -> offline training, end to end.

What the offline agent trains on is compared with what the env produced; a killed collect
resumes to exactly the uninterrupted file; a changed dataset is refused on resume; GCSL
trained offline on a random grid-world dataset beats the random agent. Float-action datasets
round-trip, integer ones keep the content hash they had before float actions existed, and
the disk store (datasets larger than memory) draws the ReplayBuffer's batches, batch for batch.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from pixelplan import cli
from pixelplan import config as config_lib
from pixelplan.data.dataset import (DatasetError, Episode, action_spec, read_attrs, read_episodes, verify,
                                    write_episodes)
from pixelplan.data.disk_store import DiskEpisodeStore
from pixelplan.data.replay import ReplayBuffer, ReplayTooLarge
from pixelplan.envs.vector import EnvFactory
from pixelplan.runs.collect import collect, episode_rng
from pixelplan.runs.offline import store_location, train_offline
from pixelplan.runs.train import IncompatibleCheckpoint

EPISODES = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "grid.h5"
    collect("gridworld", EPISODES, path, seed=3, shard_episodes=16, n_envs=4, progress=False)
    return path


def _env_episodes(seed: int, n: int) -> list[Episode]:
    """Episodes 0..n-1 produced afresh by the env itself, each from its own random stream (the
    first draw its reset seed, then one action per step until the env ends the episode)."""
    env = EnvFactory("gridworld", {}, 1)()
    out = []
    for i in range(n):
        rng = episode_rng(seed, i)
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        frames, feats, actions, rewards = [obs.copy()], [info["features"]], [], []
        done = False
        while not done:
            a = int(rng.integers(env.action_space.n))
            obs, r, term, trunc, info = env.step(a)
            frames.append(obs.copy()); feats.append(info["features"]); actions.append(a); rewards.append(r)
            done = term or trunc
        out.append(Episode(frames=np.stack(frames), actions=np.array(actions), rewards=np.array(rewards),
                           features=np.stack(feats)))
    return out


def test_dataset_episodes_are_what_the_env_produced(dataset):
    attrs = verify(dataset)
    assert (attrs["env"], attrs["episodes"], attrs["agent"], attrs["seed"]) == ("gridworld", EPISODES, "random", 3)
    stored = list(read_episodes(dataset))
    assert len(stored) == EPISODES
    for ep, env_ep in zip(stored, _env_episodes(3, EPISODES)):
        np.testing.assert_array_equal(ep.frames, env_ep.frames)       # reset frame first, whole episodes
        np.testing.assert_array_equal(ep.actions, env_ep.actions)     # the episode's own action stream
        np.testing.assert_array_equal(ep.features, env_ep.features)
        np.testing.assert_array_equal(ep.rewards, env_ep.rewards)
    assert attrs["frames"] == sum(len(ep.frames) for ep in stored)


@pytest.mark.parametrize("memory", ["ram", "disk"])
def test_offline_training_batches_are_what_the_env_produced(dataset, tmp_path, monkeypatch, memory):
    """Through the real collect and offline loops, from either store: every row the agent trains
    on is a naive hindsight sample of an episode the env itself produces (not read back from
    the file)."""
    from pixelplan.agents.gcsl import GcslAgent
    seen = []
    real = GcslAgent.update
    monkeypatch.setattr(GcslAgent, "update", lambda self, batch: seen.append(batch) or real(self, batch))
    cfg = _offline_cfg(dataset, tmp_path / "run", updates=4)
    cfg.dataset_memory = memory
    summary = train_offline(cfg)
    assert summary["dataset_store"] == memory
    episodes = _env_episodes(3, EPISODES)
    stack = cfg.frame_stack
    assert len(seen) == 4
    for batch in seen:
        for state, goal, actions, k in zip(batch.state, batch.goal, batch.actions, batch.k):
            assert any(_holds(ep, state, goal, actions, int(k), stack) for ep in episodes)


def _holds(ep, state, goal, actions, k, stack) -> bool:
    """Is (state stack, goal, k actions) a hindsight sample of this episode, built naively?"""
    for p in range(len(ep.frames) - k):
        want = np.stack([ep.frames[max(0, p - stack + 1 + j)] for j in range(stack)])
        if (np.array_equal(want, state) and np.array_equal(ep.frames[p + k], goal)
                and np.array_equal(actions[:k], ep.actions[p:p + k])):
            return True
    return False


def _offline_cfg(dataset, out, agent="gcsl", updates=8, seed=0):
    cfg = config_lib.preset("debug")
    cfg.dataset, cfg.agent, cfg.out, cfg.seed = str(dataset), agent, str(out), seed
    cfg.updates, cfg.eval_every_updates, cfg.checkpoint_every_updates, cfg.log_every_updates = updates, 4, 2, 2
    cfg.threads, cfg.progress = 1, False
    return cfg


def test_offline_resume_is_exact_and_a_changed_dataset_is_refused(dataset, tmp_path):
    full = train_offline(_offline_cfg(dataset, tmp_path / "full"))
    half = _offline_cfg(dataset, tmp_path / "half", updates=4)
    train_offline(half)
    resumed = train_offline(_offline_cfg(dataset, tmp_path / "half"))
    assert (resumed["updates"], resumed["success_rate"]) == (full["updates"], full["success_rate"])
    assert (tmp_path / "half" / "metrics.jsonl").read_text().count('"kind": "eval"') == 2
    assert not (tmp_path / "half" / "replay").exists()
    # The same path, other data: refused by name, and the run directory is left alone.
    other = tmp_path / "other.h5"
    collect("gridworld", 8, other, seed=9, progress=False)
    moved = tmp_path / "moved.h5"
    os.replace(other, moved)
    before = (tmp_path / "half" / "config.json").read_text()
    with pytest.raises(IncompatibleCheckpoint, match="dataset_hash"):
        train_offline(_offline_cfg(moved, tmp_path / "half", updates=12))
    assert (tmp_path / "half" / "config.json").read_text() == before


def test_a_dataset_edited_in_place_fails_its_own_hash(dataset, tmp_path):
    copy = tmp_path / "edited.h5"
    copy.write_bytes(dataset.read_bytes())
    with h5py.File(copy, "r+") as f:
        f["episodes/000003/actions"][0] = (f["episodes/000003/actions"][0] + 1) % 4
    with pytest.raises(DatasetError, match="content hash"):
        verify(copy)


def test_a_killed_collect_resumes_to_the_uninterrupted_file(dataset, tmp_path, kill_after_first_shard):
    out = tmp_path / "grid.h5"
    call = f"collect('gridworld', {EPISODES}, sys.argv[1], seed=3, shard_episodes=16, n_envs=4, progress=False)"
    if not kill_after_first_shard(call, out):
        pytest.skip("the collect finished before it could be killed")
    parts = tmp_path / "grid.h5.parts"
    collect("gridworld", EPISODES, out, seed=3, shard_episodes=16, n_envs=2, progress=False)
    assert not parts.exists()
    resumed, clean = verify(out), read_attrs(dataset)
    assert resumed["episodes"] == EPISODES and resumed["content_hash"] == clean["content_hash"]


def test_gcsl_offline_from_a_random_dataset_beats_the_random_agent(tmp_path):
    data = tmp_path / "grid.h5"
    collect("gridworld", 250, data, seed=0, progress=False)
    cfg = config_lib.preset("gridworld")
    cfg.dataset, cfg.agent, cfg.out, cfg.threads, cfg.progress = str(data), "gcsl", str(tmp_path / "gcsl"), 2, False
    cfg.updates = cfg.eval_every_updates = cfg.checkpoint_every_updates = 300
    gcsl = train_offline(cfg)
    rand = config_lib.preset("gridworld")
    rand.agent, rand.steps, rand.out, rand.progress, rand.threads = "random", 48, str(tmp_path / "rand"), False, 1
    from pixelplan.runs.train import train
    random_agent = train(rand)
    # Measured: 0.41 against 0.08 (49 goals each); the margin is several standard errors.
    assert gcsl["success_rate"] >= random_agent["success_rate"] + 0.15


def test_collect_cli_refusals_and_an_idempotent_rerun(dataset, tmp_path, capsys):
    assert cli.main(["collect", "--episodes", "0", "--out", str(tmp_path / "x.h5")]) == 2
    assert cli.main(["collect", "--agent", "glamor", "--episodes", "3", "--out", str(tmp_path / "x.h5")]) == 2
    assert cli.main(["collect", "--episodes", "3", "--out", str(tmp_path)]) == 2      # a directory
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.parts").exists()
    capsys.readouterr()
    (tmp_path / "a-file").write_text("")
    assert cli.main(["collect", "--episodes", "3", "--out", str(tmp_path / "a-file" / "x.h5")]) == 2   # under a file
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot create" in err
    mtime = dataset.stat().st_mtime_ns
    assert cli.main(["collect", "--episodes", str(EPISODES), "--seed", "3", "--out", str(dataset),
                     "--no-progress"]) == 0                        # complete already: nothing rewritten
    assert dataset.stat().st_mtime_ns == mtime
    assert cli.main(["collect", "--episodes", "5", "--out", str(dataset), "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", str(tmp_path / "missing.h5")]) == 2


def test_leftovers_of_a_kill_during_the_merge_are_cleaned_up(dataset, tmp_path):
    # Killed after the merged file was renamed into place, before the shards were removed:
    out = tmp_path / "grid.h5"
    out.write_bytes(dataset.read_bytes())
    (tmp_path / "grid.h5.parts").mkdir()
    (tmp_path / "grid.h5.parts" / "shard-00000.h5").write_bytes(b"partial")
    collect("gridworld", EPISODES, out, seed=3, progress=False)
    assert not (tmp_path / "grid.h5.parts").exists() and verify(out)["episodes"] == EPISODES
    # Killed while writing the merged file: its temporary is removed when the collect resumes.
    fresh = tmp_path / "other.h5"
    stale = tmp_path / ".tmp-other.h5.99999.0badc0de"   # the atomic writer's temporary name
    stale.write_bytes(b"half a file")
    collect("gridworld", 6, fresh, seed=1, progress=False)
    assert not stale.exists() and verify(fresh)["episodes"] == 6


# ---------------------------------------------------------------------- action kinds
def _fixed_int_episodes() -> list[Episode]:
    """A small dataset fixed by arithmetic alone (no random generator)."""
    eps = []
    for i, n in enumerate((3, 1, 5, 0)):
        frames = ((np.arange((n + 1) * 2 * 3 * 3).reshape(n + 1, 2, 3, 3) * (7 + i)) % 256).astype(np.uint8)
        eps.append(Episode(frames=frames, actions=(np.arange(n) * (i + 1)) % 4,
                           rewards=np.linspace(0, 1, n).astype(np.float32)))
    return eps


def test_integer_datasets_keep_their_content_hash(tmp_path):
    # Both digests were computed with the code from before float actions existed (commit
    # 2d3a049): an integer dataset must hash, and be stored, exactly as it was.
    attrs = write_episodes(tmp_path / "fixed.h5", _fixed_int_episodes(), {"env": "gridworld"})
    assert attrs["content_hash"] == "a96e889e82792d80a244226f6ec4d97544b5ef5c356ed6d00d25f673cf19f04b"
    assert verify(tmp_path / "fixed.h5")["content_hash"] == attrs["content_hash"]
    assert (attrs["format_version"], attrs["action_dtype"], attrs["action_shape"]) == (1, "int64", [])
    collected = collect("gridworld", 6, tmp_path / "g.h5", seed=1, n_envs=2, progress=False)
    assert collected["content_hash"] == "aa2156791cb412120db930155294eca6242c11d1377fd2561a791a1acb692fc4"
    with h5py.File(tmp_path / "g.h5", "r") as f:
        assert f["episodes/000000/actions"].dtype == np.int64 and f["episodes/000000/actions"].ndim == 1
    # A file written before the action attributes existed reads as integer actions.
    with h5py.File(tmp_path / "fixed.h5", "r+") as f:
        del f.attrs["action_dtype"], f.attrs["action_shape"]
    assert action_spec(verify(tmp_path / "fixed.h5")) == ("int64", ())


def _float_episodes(lengths, shape, seed=0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [Episode(frames=rng.integers(0, 256, (n + 1, 3, 4), dtype=np.uint8),
                    actions=rng.uniform(-1, 1, (n, *shape)), rewards=rng.normal(size=n)) for n in lengths]


@pytest.mark.parametrize("shape", [(2,), (), (2, 3)])
def test_float_action_episodes_round_trip(tmp_path, shape):
    episodes = _float_episodes((4, 1, 6), shape)
    episodes.insert(1, Episode(frames=np.zeros((1, 3, 4), np.uint8), actions=[], rewards=[]))  # no actions
    attrs = write_episodes(tmp_path / "f.h5", episodes, {"env": "box"})
    assert (attrs["format_version"], attrs["action_dtype"], attrs["action_shape"]) == (2, "float32", list(shape))
    assert verify(tmp_path / "f.h5")["content_hash"] == attrs["content_hash"]
    back = list(read_episodes(tmp_path / "f.h5"))
    assert len(back) == len(episodes)
    for ep, want in zip(back, episodes):
        assert ep.actions.dtype == np.float32 and ep.actions.shape == (len(want.frames) - 1, *shape)
        np.testing.assert_array_equal(ep.actions, np.asarray(want.actions, np.float32).reshape(ep.actions.shape))
        np.testing.assert_array_equal(ep.frames, want.frames)
        np.testing.assert_array_equal(ep.rewards, want.rewards)
    # The hash covers float actions too: an edited action fails it.
    with h5py.File(tmp_path / "f.h5", "r+") as f:
        f["episodes/000000/actions"][0] = f["episodes/000000/actions"][0] + 0.5
    with pytest.raises(DatasetError, match="content hash"):
        verify(tmp_path / "f.h5")


def test_action_kinds_and_shapes_must_agree_in_one_line(tmp_path):
    ints, floats = _mixed_episodes()[1:3], _float_episodes((2, 3), (2,))
    cases = [(ints + floats, "integer actions"), (floats + ints, "float32 \\(2,\\) actions"),
             (floats + _float_episodes((2,), (3,)), "float32 \\(3,\\) actions")]
    for episodes, message in cases:
        with pytest.raises(DatasetError, match=message) as info:
            write_episodes(tmp_path / "mixed.h5", episodes, {})
        assert "\n" not in str(info.value)
    # A file whose actions were rewritten as another kind is refused by verify.
    write_episodes(tmp_path / "f.h5", floats, {})
    with h5py.File(tmp_path / "f.h5", "r+") as f:
        del f["episodes/000001/actions"]
        f["episodes/000001/actions"] = np.zeros(3, np.int64)
    with pytest.raises(DatasetError, match="episode 1 has integer actions, but the dataset holds float32"):
        verify(tmp_path / "f.h5")
    frames = np.zeros((3, 3, 4), np.uint8)
    for actions, message in (([0, -1], ">= 0"), ([[0, 1], [1, 0]], "shape \\(L,\\)"), ([0.5, np.nan], "finite"),
                             (["a", "b"], "integers or floats"), ([0], "needs 2 actions")):
        with pytest.raises(ValueError, match=message):
            Episode(frames=frames, actions=np.array(actions), rewards=np.zeros(len(actions)))


# ---------------------------------------------------------------------- the disk store
def _mixed_episodes(seed=0) -> list[Episode]:
    """Integer-action episodes of many lengths: one frame only, a single step, short, long."""
    rng = np.random.default_rng(seed)
    return [Episode(frames=rng.integers(0, 256, (n + 1, 3, 4), dtype=np.uint8), actions=rng.integers(0, 5, n),
                    rewards=rng.normal(size=n)) for n in (0, 1, 5, 12, 3, 30, 2, 0, 9)]


def _assert_same_batch(a, b) -> None:
    assert a._fields == b._fields
    for name, x, y in zip(a._fields, a, b):
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


@pytest.mark.parametrize("frame_stack", [1, 3])
def test_the_disk_store_draws_the_replay_buffers_batches(tmp_path, monkeypatch, frame_stack):
    episodes = _mixed_episodes()
    write_episodes(tmp_path / "d.h5", episodes, {})
    ram = ReplayBuffer(sum(len(ep.frames) for ep in episodes), (3, 4), frame_stack)
    for ep in episodes:
        ram.add_episode(ep.frames, ep.actions, ep.rewards)
    keys = []
    real = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: keys.append(key) or real(self, key))
    largest = max(ep.frames.nbytes + ep.actions.nbytes for ep in episodes)
    with DiskEpisodeStore(tmp_path / "d.h5", frame_stack, cache_bytes=2 * largest) as disk:
        assert (disk.num_frames, disk.num_episodes) == (ram.num_frames, ram.num_episodes)
        for seed in range(4):
            for batch_size in (1, 5, 64):
                for max_k in (1, 3, 40):
                    for with_next in (False, True):
                        a = ram.sample(batch_size, max_k, np.random.default_rng(seed), with_next=with_next)
                        b = disk.sample(batch_size, max_k, np.random.default_rng(seed), with_next=with_next)
                        _assert_same_batch(a, b)
        # One generator drawn on batch after batch stays in step too (same random calls).
        rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(10):
            _assert_same_batch(ram.sample(32, 8, rng_a, with_next=True), disk.sample(32, 8, rng_b, with_next=True))
        assert rng_a.integers(2**62) == rng_b.integers(2**62)
        assert disk.cached_bytes <= 2 * largest and disk.reads > disk.num_episodes    # the cache evicted
    assert keys and all(key == () for key in keys)          # whole arrays only, never fancy indexing


def test_the_disk_store_pads_float_actions_with_zero(tmp_path):
    episodes = _float_episodes((0, 4, 1, 9, 2), (2,), seed=1)
    write_episodes(tmp_path / "f.h5", episodes, {})
    lengths = [len(ep.frames) for ep in episodes]
    first = np.cumsum([0] + lengths[:-1])
    for seed, max_k, stack in ((0, 3, 2), (1, 12, 1), (2, 1, 4)):
        with DiskEpisodeStore(tmp_path / "f.h5", stack, cache_bytes=0) as disk:
            batch = disk.sample(40, max_k, np.random.default_rng(seed), with_next=True)
        assert batch.actions.dtype == np.float32 and batch.actions.shape == (40, max_k, 2)
        # The naive reference: the same random calls, every row built by hand.
        rng = np.random.default_rng(seed)
        starts, ks = rng.integers(0, sum(lengths), size=40), rng.integers(1, max_k + 1, size=40)
        for row, (start, k) in enumerate(zip(starts, ks)):
            e = int(np.searchsorted(first, start, side="right") - 1)
            ep, p = episodes[e], int(start - first[e])
            k = min(int(k), lengths[e] - 1 - p)
            stack_at = lambda q: np.stack([ep.frames[max(0, q - stack + 1 + j)] for j in range(stack)])
            want_actions = np.zeros((max_k, 2), np.float32)
            want_actions[:k] = ep.actions[p:p + k]
            assert batch.k[row] == k and batch.start[row] == start
            np.testing.assert_array_equal(batch.state[row], stack_at(p))
            np.testing.assert_array_equal(batch.next_state[row], stack_at(p + (k > 0)))
            np.testing.assert_array_equal(batch.goal[row], ep.frames[p + k])
            np.testing.assert_array_equal(batch.actions[row], want_actions)
    # The ReplayBuffer, made for these float actions, draws the same batches.
    ram = ReplayBuffer(sum(lengths), (3, 4), 2, action_shape=(2,), action_dtype="float32")
    for ep in episodes:
        ram.add_episode(ep.frames, ep.actions, ep.rewards)
    with DiskEpisodeStore(tmp_path / "f.h5", 2) as disk:
        _assert_same_batch(ram.sample(40, 5, np.random.default_rng(3), with_next=True),
                           disk.sample(40, 5, np.random.default_rng(3), with_next=True))


def test_the_store_is_chosen_by_what_fits(tmp_path):
    assert store_location("auto", 1000, (8, 8), available=2**40) == "ram"
    with pytest.warns(UserWarning, match="66.0 GiB in memory, more than this machine can spare"):
        assert store_location("auto", 10**7, (84, 84), available=2**30) == "disk"
    with pytest.raises(ReplayTooLarge):
        store_location("ram", 10**7, (84, 84), available=2**30)
    assert store_location("disk", 10, (8, 8), available=2**40) == "disk"
    import tyro
    assert tyro.cli(config_lib.Config, args=["--dataset-memory", "disk"]).dataset_memory == "disk"
    cfg = config_lib.preset("debug")
    cfg.dataset_memory = "tape"
    with pytest.raises(ValueError, match="dataset_memory must be auto, ram or disk"):
        config_lib.validate(cfg)


def test_offline_training_from_the_disk_store_matches_the_ram_store(dataset, tmp_path):
    def run(name, memory, updates=4):
        cfg = _offline_cfg(dataset, tmp_path / name, updates=updates)
        cfg.dataset_memory = memory
        return train_offline(cfg)

    def metrics(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]

    def same(summary):
        return {k: v for k, v in summary.items() if k not in ("wall_seconds", "dataset_store")}

    ram, disk = run("ram", "ram"), run("disk", "disk")
    assert (ram["dataset_store"], disk["dataset_store"]) == ("ram", "disk")
    assert metrics("disk") == metrics("ram") and len(metrics("ram")) == 3     # train, train, eval
    assert same(disk) == same(ram)
    # Half a run from the disk store, resumed from memory: a store change refuses no resume,
    # and the resumed run trains on the same batches (it evaluated once more, at its end).
    assert run("half", "disk", updates=2)["dataset_store"] == "disk"
    resumed = run("half", "auto")
    assert resumed["dataset_store"] == "ram" and same(resumed) == same(ram)
    assert [row for row in metrics("half") if (row["kind"], row["step"]) != ("eval", 2)] == metrics("ram")
