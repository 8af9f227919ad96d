"""What the model trains on equals what the env produced, through the real run loop.

A past bug: the replay was right, but the loop that filled it kept a view of the reset
observation that later steps overwrote, so every stored episode began with its own last
frame, in every run, while every unit test passed. These tests record every frame and
action the env produced (at reset and at every step) and compare them, frame by frame,
with (1) the episodes the run's checkpoint holds and (2) every batch the agent was
given to train on, rebuilt from the recorded episodes by the naive stacking rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelplan import envs
from pixelplan.data.replay import PAD, ReplayBuffer
from pixelplan.envs.gridworld import GridWorld
from pixelplan.runs import common as common_mod
from pixelplan.runs.train import train

from conftest import small_run_config

EVAL_SEED = 10_000   # evaluate()'s default: evaluation resets use EVAL_SEED + episode


class RecordingGrid(GridWorld):
    """The grid world with random starts (so first frames differ), recording what it returns;
    it pays a reward that differs from step to step, so that rewards can be followed too."""

    log: list[dict] = []

    def reset(self, *, seed=None, options=None):
        frame, info = super().reset(seed=seed, options=options)
        self._record = {"seed": seed, "frames": [np.array(frame, copy=True)], "actions": [], "rewards": []}
        RecordingGrid.log.append(self._record)
        return frame, info

    def step(self, action):
        frame, _, terminated, truncated, info = super().step(action)
        reward = 0.25 * int(action) + 0.5 * len(self._record["actions"]) + float(self._record["seed"] or 0) % 7
        self._record["frames"].append(np.array(frame, copy=True))
        self._record["actions"].append(int(action))
        self._record["rewards"].append(reward)
        return frame, reward, terminated, truncated, info


envs.register("test-recording-grid", lambda: RecordingGrid(start="random"), overwrite=True)


def collection_episodes(log: list[dict], eval_episodes: int) -> list[dict]:
    """The recorded episodes of collection, in the order the loop reset them (evaluation's
    resets use the fixed seeds EVAL_SEED + i and are left out)."""
    return [r for r in log if not EVAL_SEED <= (r["seed"] or -1) < EVAL_SEED + eval_episodes]


def slot_owners(episodes: list[dict], capacity: int) -> dict[int, tuple[int, int]]:
    """Ring slot -> (episode index, position) after writing ``episodes`` in order, each one
    contiguously from where the last ended, wrapping at ``capacity``: the last writer wins."""
    owner, write = {}, 0
    for j, ep in enumerate(episodes):
        for p in range(len(ep["frames"])):
            owner[(write + p) % capacity] = (j, p)
        write = (write + len(ep["frames"])) % capacity
    return owner


def stack(frames: list[np.ndarray], pos: int, k: int) -> np.ndarray:
    return np.stack([frames[max(0, pos - k + 1 + i)] for i in range(k)])


def record_updates(monkeypatch) -> list[dict]:
    """Wrap the agent the loop builds so that every batch given to ``update`` is kept, with
    the number of collection resets the env had seen when it was given."""
    seen: list[dict] = []
    make = common_mod.make_agent

    def make_recording(*args, **kwargs):
        agent = make(*args, **kwargs)
        update = agent.update

        def recording_update(batch):
            seen.append({"batch": {k: (None if v is None else np.array(v, copy=True))
                                   for k, v in batch._asdict().items()},
                         "resets": len(RecordingGrid.log)})
            return update(batch)

        agent.update = recording_update
        return agent

    monkeypatch.setattr(common_mod, "make_agent", make_recording)
    return seen


@pytest.mark.parametrize("agent, frame_stack, capacity", [
    ("glamor", 4, 2_000),     # no wrap
    ("glamor", 3, 100),       # the ring wraps and evicts many times
    ("gcsl", 1, 2_000),
    ("discern", 2, 150),      # needs next_state
])
def test_what_the_model_trains_on_is_what_the_env_produced(tmp_path, monkeypatch, agent, frame_stack, capacity):
    RecordingGrid.log = []
    updates = record_updates(monkeypatch)
    cfg = small_run_config(tmp_path / "run", env="test-recording-grid", agent=agent, frame_stack=frame_stack,
                           replay_capacity=capacity, env_workers=0)
    summary = train(cfg)
    n_envs = cfg.n_envs
    episodes = collection_episodes(RecordingGrid.log, cfg.eval_episodes)
    assert len(episodes) == summary["episodes"] and len(episodes) % n_envs == 0
    assert sum(len(ep["actions"]) for ep in episodes) == summary["env_steps"]
    assert len({ep["frames"][0].tobytes() for ep in episodes}) > 1, "random starts should differ"

    # 1. The replay in the checkpoint holds the retained episodes exactly as the env gave them.
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    replay = ReplayBuffer(capacity, cfg_frame_shape(episodes), frame_stack)
    replay.load_state_dict({k: v.numpy() if isinstance(v, torch.Tensor) else v
                            for k, v in payload["replay"].items()})
    stored = replay.episodes(with_rewards=True)
    assert 0 < len(stored) <= len(episodes)
    if capacity >= sum(len(ep["frames"]) for ep in episodes):
        assert len(stored) == len(episodes)
    for (frames, actions, rewards), ep in zip(stored, episodes[len(episodes) - len(stored):]):
        np.testing.assert_array_equal(frames, np.stack(ep["frames"]))   # the reset frame first
        np.testing.assert_array_equal(actions, ep["actions"])
        np.testing.assert_array_equal(rewards, np.array(ep["rewards"], np.float32))   # the env's own

    # 2. Every training batch equals the naive rebuild from the recorded episodes.
    assert updates, "the run made no update"
    for u in updates:
        added = collection_episodes(RecordingGrid.log[:u["resets"]], cfg.eval_episodes)[:-n_envs]
        owner = slot_owners(added, capacity)
        b = u["batch"]
        for row, (slot, k) in enumerate(zip(b["start"], b["k"])):
            j, pos = owner[int(slot)]
            ep = added[j]
            np.testing.assert_array_equal(b["state"][row], stack(ep["frames"], pos, frame_stack))
            np.testing.assert_array_equal(b["goal"][row], ep["frames"][pos + k])
            expected = ep["actions"][pos:pos + k] + [PAD] * (b["actions"].shape[1] - k)
            np.testing.assert_array_equal(b["actions"][row], expected)
            if b["next_state"] is not None:
                nxt = pos + 1 if pos + 1 < len(ep["frames"]) else pos
                np.testing.assert_array_equal(b["next_state"][row], stack(ep["frames"], nxt, frame_stack))
        if agent == "discern":
            assert b["next_state"] is not None


def cfg_frame_shape(episodes: list[dict]) -> tuple[int, ...]:
    return tuple(episodes[0]["frames"][0].shape)

