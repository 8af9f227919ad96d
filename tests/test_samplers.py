"""Samplers (pixelplan/data/samplers.py) against the naive reference buffer, across the wrap."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelplan.data import PAD, ReplayBuffer
from pixelplan.data.samplers import (GoalPairSampler, HindsightSampler, SequenceSampler,
                                     offset_probabilities)
from test_replay import NaiveBuffer, make_episode


def fill(capacity, lengths, frame_stack=3):
    buf, ref = ReplayBuffer(capacity, (2, 3), frame_stack), NaiveBuffer(capacity, frame_stack)
    for ep, n in enumerate(lengths):
        frames, actions = make_episode(ep, n)
        rewards = ep + 0.125 * np.arange(n, dtype=np.float32)       # distinct per step and episode
        buf.add_episode(frames, actions, rewards)
        ref.add(frames, actions)
        ref.episodes[-1]["rewards"] = rewards
    return buf, ref


plans = st.lists(st.integers(0, 12), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans, st.integers(2, 6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_sequence_windows_match_the_naive_reference(lengths, length, frame_stack, seed):
    buf, ref = fill(23, lengths, frame_stack)
    sampler = SequenceSampler(batch_size=16, length=length)
    windows = [(e, p) for e in ref.episodes for p in range(len(e["frames"]) - length + 1)]
    if not windows:
        with pytest.raises(ValueError, match="no stored episode"):
            sampler.sample(buf, np.random.default_rng(seed))
        return
    batch = sampler.sample(buf, np.random.default_rng(seed))
    assert batch.frames.shape == (16, length, 2, 3) and batch.actions.shape == (16, length - 1)
    for i, slot in enumerate(batch.start):
        e, p = ref.locate(int(slot))
        assert p + length <= len(e["frames"])                       # the window fits its episode
        np.testing.assert_array_equal(batch.frames[i], e["frames"][p:p + length])
        np.testing.assert_array_equal(batch.actions[i], e["actions"][p:p + length - 1])
        np.testing.assert_array_equal(batch.rewards[i], e["rewards"][p:p + length - 1])
        assert batch.first[i] == (p == 0)


def test_sequence_windows_are_uniform_over_every_window_in_the_store():
    buf, ref = fill(40, [3, 9, 1, 6, 12, 4, 8], frame_stack=1)      # wraps the ring
    sampler = SequenceSampler(batch_size=20_000, length=4)
    batch = sampler.sample(buf, np.random.default_rng(0))
    windows = {e["slots"][p] for e in ref.episodes for p in range(len(e["frames"]) - 3)}
    counts = Counter(batch.start.tolist())
    assert set(counts) == windows
    expected = len(batch.start) / len(windows)
    assert all(abs(c - expected) < 5 * expected ** 0.5 for c in counts.values())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans, st.sampled_from(["uniform", "geometric"]), st.floats(0.05, 1.0), st.integers(1, 8),
       st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_goal_pairs_match_the_naive_reference(lengths, law, p, max_offset, negative_prob, seed):
    buf, ref = fill(23, lengths)
    sampler = GoalPairSampler(batch_size=16, law=law, p=p, max_offset=max_offset, negative_prob=negative_prob)
    if not any(len(e["actions"]) for e in ref.episodes):
        with pytest.raises(ValueError, match="no stored episode has a step"):
            sampler.sample(buf, np.random.default_rng(seed))
        return
    batch = sampler.sample(buf, np.random.default_rng(seed))
    stored = {f.tobytes() for e in ref.episodes for f in e["frames"]}
    for i, slot in enumerate(batch.start):
        e, pos = ref.locate(int(slot))
        state, _, _ = ref.expected(int(slot), 0, 0)
        np.testing.assert_array_equal(batch.state[i], state)
        np.testing.assert_array_equal(batch.next_state[i], ref.expected_next(int(slot)))
        assert batch.action[i] == e["actions"][pos] != PAD
        if batch.negative[i]:
            assert batch.offset[i] == -1 and batch.goal[i].tobytes() in stored
        else:
            k = int(batch.offset[i])
            assert 1 <= k <= min(max_offset, len(e["actions"]) - pos)
            np.testing.assert_array_equal(batch.goal[i], e["frames"][pos + k])


@pytest.mark.parametrize("law,p,limit", [("geometric", 0.3, 6), ("geometric", 0.05, 4), ("geometric", 0.9, 3),
                                         ("uniform", 0.3, 7), ("uniform", 0.3, 1)])
def test_offsets_follow_the_truncated_law(law, p, limit):
    sampler = GoalPairSampler(batch_size=1, law=law, p=p, max_offset=limit)
    offsets = sampler.draw_offsets(np.full(100_000, limit), np.random.default_rng(0))
    freq = np.bincount(offsets, minlength=limit + 1)[1:] / len(offsets)
    np.testing.assert_allclose(freq, offset_probabilities(law, limit, p), atol=0.006)


def test_negatives_come_at_the_stated_rate_and_from_the_whole_store():
    buf, _ = fill(200, [10] * 15)
    batch = GoalPairSampler(batch_size=20_000, law="geometric", p=0.5, negative_prob=0.25).sample(
        buf, np.random.default_rng(1))
    assert abs(batch.negative.mean() - 0.25) < 0.015
    episode_of_goal = batch.goal[batch.negative, 0, 0]
    assert len(set(episode_of_goal.tolist())) == buf.num_episodes   # every stored episode can be a negative


def test_hindsight_sampler_draws_exactly_the_stores_samples():
    buf, _ = fill(30, [5, 7, 2, 9, 4, 6])
    a = HindsightSampler(batch_size=32, max_k=5, with_next=True).sample(buf, np.random.default_rng(3))
    b = buf.sample(32, 5, np.random.default_rng(3), with_next=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_samplers_state_their_units_and_reject_bad_settings():
    assert HindsightSampler(200, 100).samples_per_batch == 200
    assert SequenceSampler(50, 50).samples_per_batch == 50 * 49
    assert GoalPairSampler(64).samples_per_batch == 64
    with pytest.raises(ValueError, match="length >= 2"):
        SequenceSampler(4, 1)
    with pytest.raises(ValueError, match="needs max_offset"):
        GoalPairSampler(4, law="uniform")
    with pytest.raises(ValueError, match="p must be"):
        GoalPairSampler(4, p=0.0)
    with pytest.raises(ValueError, match="negative_prob"):
        GoalPairSampler(4, negative_prob=1.5)
    with pytest.raises(ValueError, match="offset law"):
        GoalPairSampler(4, law="poisson")


def test_rewards_survive_a_state_dict_round_trip_and_old_state_dicts_load_as_zero():
    buf, ref = fill(23, [5, 9, 3, 7, 6])                        # wraps
    again = ReplayBuffer(23, (2, 3), 3)
    again.load_state_dict(buf.state_dict())
    for (f, a, r), e in zip(again.episodes(with_rewards=True), ref.episodes):
        np.testing.assert_array_equal(r, e["rewards"])
    old = {k: v for k, v in buf.state_dict().items() if k != "rewards"}   # saved before rewards existed
    again.load_state_dict(old)
    assert all(not r.any() for _, _, r in again.episodes(with_rewards=True))
    with pytest.raises(ValueError, match="rewards"):
        buf.add_episode(*make_episode(0, 3), rewards=np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="rewards"):
        buf.add_episode(*make_episode(0, 3), rewards=np.zeros(2))
