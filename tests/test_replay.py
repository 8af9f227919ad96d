"""Tests for pixelplan.data.replay.ReplayBuffer against a naive reference buffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings, target
from hypothesis import strategies as st

from pixelplan.data import PAD, HindsightBatch, ReplayBuffer

FRAME_SHAPE = (2, 3)
FS = 4


def make_episode(ep: int, num_actions: int, shape=FRAME_SHAPE):
    """Frames encode (episode id, position): pixel row 0 = ep id, row 1 = position; actions too."""
    n = num_actions + 1
    frames = np.zeros((n, *shape), dtype=np.uint8)
    frames[:, 0] = ep % 251
    frames[:, 1] = (np.arange(n) % 251).reshape(n, *([1] * (len(shape) - 1)))
    actions = (ep * 7 + np.arange(num_actions) * 3) % 17
    return frames, actions.astype(np.int64)


class NaiveBuffer:
    """As simple as possible: a list of retained episodes and the ring slots each occupies."""

    def __init__(self, capacity: int, frame_stack: int = FS):
        self.capacity = capacity
        self.frame_stack = frame_stack
        self.write = 0
        self.episodes = []  # dicts: frames, actions, slots (list, slot of each position)

    def add(self, frames, actions):
        n = len(frames)
        slots = [(self.write + i) % self.capacity for i in range(n)]
        self.episodes = [e for e in self.episodes if not (set(e["slots"]) & set(slots))]
        self.episodes.append({"frames": frames, "actions": list(actions), "slots": slots})
        self.write = (self.write + n) % self.capacity

    def valid_slots(self):
        return sorted(s for e in self.episodes for s in e["slots"])

    def locate(self, slot):
        for e in self.episodes:
            if slot in e["slots"]:
                return e, e["slots"].index(slot)
        raise KeyError(slot)

    def expected(self, slot, k, max_k):
        e, p = self.locate(slot)
        state = np.stack([e["frames"][max(0, p - self.frame_stack + 1 + j)] for j in range(self.frame_stack)])
        goal = e["frames"][p + k]
        acts = e["actions"][p : p + k] + [PAD] * (max_k - k)
        return state, goal, np.array(acts, dtype=np.int64)

    def expected_next(self, slot):
        """The stack one step after ``slot`` (its own stack at an episode's final frame)."""
        e, p = self.locate(slot)
        p = min(p + 1, len(e["frames"]) - 1)
        return np.stack([e["frames"][max(0, p - self.frame_stack + 1 + j)] for j in range(self.frame_stack)])

    def steps_left(self, slot):
        e, p = self.locate(slot)
        return len(e["frames"]) - 1 - p


def check_everything(buf: ReplayBuffer, ref: NaiveBuffer):
    """Valid slots match, and gather() (with next_state) matches the reference for every valid
    slot and every k; the retained episodes are the reference's."""
    valid = buf.valid_indices()
    assert valid.tolist() == ref.valid_slots()
    assert buf.num_frames == len(valid)
    assert buf.num_episodes == len(ref.episodes)
    starts, ks = [], []
    for s in valid.tolist():
        for k in range(ref.steps_left(s) + 1):
            starts.append(s)
            ks.append(k)
    max_k = max(ks) if ks else 0
    batch = buf.gather(np.array(starts, dtype=np.int64), np.array(ks, dtype=np.int64), max_k, with_next=True)
    assert batch.state.dtype == np.uint8 and batch.goal.dtype == np.uint8
    assert batch.actions.dtype == np.int64 and batch.k.dtype == np.int64
    assert batch.state.shape == (len(starts), buf.frame_stack, *buf.frame_shape)
    np.testing.assert_array_equal(batch.next_state, np.stack([ref.expected_next(s) for s in starts]))
    stored = buf.episodes()
    assert len(stored) == len(ref.episodes)
    for (frames, actions), e in zip(stored, ref.episodes):
        np.testing.assert_array_equal(frames, e["frames"])
        np.testing.assert_array_equal(actions, e["actions"])
    expected = [ref.expected(s, k, max_k) for s, k in zip(starts, ks)]
    np.testing.assert_array_equal(batch.state, np.stack([e[0] for e in expected]))
    np.testing.assert_array_equal(batch.goal, np.stack([e[1] for e in expected]))
    np.testing.assert_array_equal(batch.actions, np.stack([e[2] for e in expected]))
    np.testing.assert_array_equal(batch.k, ks)
    np.testing.assert_array_equal(batch.start, starts)


@st.composite
def episode_plans(draw):
    capacity = draw(st.integers(5, 40))
    length = st.one_of(
        st.integers(0, 3),  # very short, including L = 0 (a single frame)
        st.integers(0, capacity - 1),
        st.integers(max(0, capacity - 3), capacity - 1),  # near capacity (L+1 frames <= capacity)
    )
    lengths = draw(st.lists(length, min_size=1, max_size=25))
    return capacity, lengths


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(episode_plans(), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_matches_naive_reference(plan, frame_stack, seed):
    capacity, lengths = plan
    buf = ReplayBuffer(capacity, FRAME_SHAPE, frame_stack=frame_stack)
    ref = NaiveBuffer(capacity, frame_stack)
    rng = np.random.default_rng(seed)
    total_frames = 0
    for ep, num_actions in enumerate(lengths):
        frames, actions = make_episode(ep, num_actions)
        buf.add_episode(frames, actions)
        ref.add(frames, actions)
        total_frames += len(frames)
        check_everything(buf, ref)
        check_sample(buf, ref, int(rng.integers(1, 8)), rng)
        if rng.random() < 0.3:   # a checkpoint round trip, then carry on with the restored buffer
            buf = round_trip(buf, copy=bool(rng.integers(2)))
            check_everything(buf, ref)
    assert buf.total_steps_added == sum(lengths)
    wraps = total_frames / capacity
    note(f"capacity={capacity} wraps={wraps:.2f}")
    target(wraps, label="ring wraps")


def check_sample(buf: ReplayBuffer, ref: NaiveBuffer, max_k: int, rng: np.random.Generator) -> None:
    """sample() draws valid starts and k in 1..max_k clipped to the steps left, and every row
    (state, goal, actions, next_state) is the reference's for its start and k."""
    batch = buf.sample(64, max_k, rng, with_next=True)
    valid = set(ref.valid_slots())
    for i in range(64):
        s, k = int(batch.start[i]), int(batch.k[i])
        assert s in valid
        left = ref.steps_left(s)
        assert (k == 0) if left == 0 else 1 <= k <= min(max_k, left)
        state, goal, acts = ref.expected(s, k, max_k)
        np.testing.assert_array_equal(batch.state[i], state)
        np.testing.assert_array_equal(batch.goal[i], goal)
        np.testing.assert_array_equal(batch.actions[i], acts)
        np.testing.assert_array_equal(batch.next_state[i], ref.expected_next(s))


def round_trip(buf: ReplayBuffer, copy: bool) -> ReplayBuffer:
    """A new buffer restored from ``buf.state_dict(copy)``, as a checkpoint resume builds it."""
    other = ReplayBuffer(buf.capacity, buf.frame_shape, frame_stack=buf.frame_stack)
    other.load_state_dict(buf.state_dict(copy=copy))
    return other


def test_generated_plans_wrap_many_times():
    """The property test's generator really produces buffers that wrap many times."""
    wraps = []

    # A statement about the generator's distribution, so drawn deterministically: with random
    # draws, 100 examples occasionally fell under the 50% bar (0.44 in one fresh-clone run).
    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(episode_plans())
    def collect(plan):
        capacity, lengths = plan
        wraps.append(sum(L + 1 for L in lengths) / capacity)

    collect()
    wraps = np.array(wraps)
    assert (wraps > 1).mean() > 0.5
    assert wraps.max() >= 5


def test_sample_after_many_wraps_matches_naive():
    """Explicit regression test for frame stacks misaligned after the ring wraps."""
    capacity = 53
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(capacity, FRAME_SHAPE, frame_stack=FS)
    ref = NaiveBuffer(capacity)
    total = 0
    for ep in range(40):
        frames, actions = make_episode(ep, int(rng.integers(4, 12)))
        buf.add_episode(frames, actions)
        ref.add(frames, actions)
        total += len(frames)
    assert total > 5 * capacity
    max_k = 6
    batch = buf.sample(400, max_k, np.random.default_rng(1))
    # Some episode straddles the wrap point, and it gets sampled.
    straddling = [e for e in ref.episodes if e["slots"][0] > e["slots"][-1]]
    assert straddling
    assert set(batch.start.tolist()) & set(straddling[0]["slots"])
    for i in range(400):
        s, k = int(batch.start[i]), int(batch.k[i])
        state, goal, acts = ref.expected(s, k, max_k)
        np.testing.assert_array_equal(batch.state[i], state)
        np.testing.assert_array_equal(batch.goal[i], goal)
        np.testing.assert_array_equal(batch.actions[i], acts)
        # The newest frame of the state is the frame at the start slot itself.
        assert batch.state[i, -1, 1, 0] == ref.locate(s)[1]


def filled_buffer(capacity=60, episodes=20, seed=0, shape=FRAME_SHAPE):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity, shape, frame_stack=FS)
    for ep in range(episodes):
        buf.add_episode(*make_episode(ep, int(rng.integers(0, 15)), shape))
    return buf


def test_sample_k_distribution_and_padding():
    buf = filled_buffer()
    max_k = 5
    b = buf.sample(5000, max_k, np.random.default_rng(3))
    assert isinstance(b, HindsightBatch)
    assert b.state.shape == (5000, FS, *FRAME_SHAPE) and b.goal.shape == (5000, *FRAME_SHAPE)
    assert b.actions.shape == (5000, max_k)
    left = buf.steps_left(b.start)
    assert np.all(b.k >= 0) and np.all(b.k <= max_k)
    np.testing.assert_array_equal(b.k, np.minimum(b.k, left))
    # k >= 1 wherever steps remain; every value 1..max_k occurs when unclipped.
    assert np.all(b.k[left > 0] >= 1)
    assert set(b.k[left >= max_k].tolist()) == set(range(1, max_k + 1))
    assert set(np.flatnonzero(b.k == 0)) == set(np.flatnonzero(left == 0))
    # k = 0: goal is the state's own newest frame and all actions are PAD.
    zero = b.k == 0
    assert zero.any()
    np.testing.assert_array_equal(b.goal[zero], b.state[zero, -1])
    assert np.all(b.actions[zero] == PAD)
    # Padding beyond k, real (non-negative) actions before it.
    steps = np.arange(max_k)[None, :]
    assert np.all(b.actions[steps >= b.k[:, None]] == PAD)
    assert np.all(b.actions[steps < b.k[:, None]] >= 0)
    # Starts are valid slots, and every valid slot can be drawn (including final frames).
    assert set(b.start.tolist()) == set(buf.valid_indices().tolist())


def test_sample_deterministic_for_seed():
    buf = filled_buffer()
    a = buf.sample(64, 7, np.random.default_rng(11))
    b = buf.sample(64, 7, np.random.default_rng(11))
    c = buf.sample(64, 7, np.random.default_rng(12))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.start, c.start)


def test_sample_empty_raises():
    buf = ReplayBuffer(10, FRAME_SHAPE)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4, 3, np.random.default_rng(0))


def test_gather_rejects_invalid_requests():
    buf = ReplayBuffer(20, FRAME_SHAPE)
    buf.add_episode(*make_episode(0, 4))  # slots 0..4
    with pytest.raises(ValueError, match="no retained frame"):
        buf.gather(np.array([7]), np.array([0]), 3)
    with pytest.raises(ValueError, match="steps left"):
        buf.gather(np.array([3]), np.array([2]), 3)  # only 1 step left at position 3
    with pytest.raises(ValueError, match="max_k"):
        buf.gather(np.array([0]), np.array([3]), 2)


def test_state_dict_round_trip():
    buf = filled_buffer(seed=5)
    state = buf.state_dict()
    other = ReplayBuffer(buf.capacity, buf.frame_shape, frame_stack=FS)
    other.load_state_dict(state)
    assert other.num_frames == buf.num_frames and other.num_episodes == buf.num_episodes
    assert other.total_steps_added == buf.total_steps_added
    np.testing.assert_array_equal(other.valid_indices(), buf.valid_indices())
    for x, y in zip(buf.sample(128, 9, np.random.default_rng(2)), other.sample(128, 9, np.random.default_rng(2))):
        np.testing.assert_array_equal(x, y)
    # Both continue identically after further adds (write position and eviction state restored).
    for ep in range(100, 106):
        buf.add_episode(*make_episode(ep, 9))
        other.add_episode(*make_episode(ep, 9))
    np.testing.assert_array_equal(other.valid_indices(), buf.valid_indices())
    for x, y in zip(buf.sample(128, 9, np.random.default_rng(4)), other.sample(128, 9, np.random.default_rng(4))):
        np.testing.assert_array_equal(x, y)
    # The copied state dict did not change with the later adds.
    fresh = ReplayBuffer(buf.capacity, buf.frame_shape, frame_stack=FS)
    fresh.load_state_dict(state)
    assert fresh.total_steps_added == buf.total_steps_added - 6 * 9


def test_state_dict_of_a_partly_filled_buffer_saves_only_the_written_slots():
    buf = ReplayBuffer(1000, FRAME_SHAPE, frame_stack=FS)
    for ep in range(3):
        buf.add_episode(*make_episode(ep, 5))            # 6 frames each
    state = buf.state_dict()
    assert state["frames"].shape == (18, *FRAME_SHAPE)
    assert all(state[n].shape == (18,) for n in ("actions", "pos", "ep_len", "ep_id"))
    other = ReplayBuffer(1000, FRAME_SHAPE, frame_stack=FS)
    other.add_episode(*make_episode(50, 30))               # stale content the load must clear
    other.load_state_dict(state)
    for name in ("_frames", "_actions", "_pos", "_ep_len", "_ep_id"):
        np.testing.assert_array_equal(getattr(other, name), getattr(buf, name), err_msg=name)
    for ep in range(3, 300):                               # on past the first wrap
        buf.add_episode(*make_episode(ep, 5))
        other.add_episode(*make_episode(ep, 5))
    assert buf.state_dict()["frames"].shape[0] == 1000
    for x, y in zip(buf.sample(64, 5, np.random.default_rng(1)), other.sample(64, 5, np.random.default_rng(1))):
        np.testing.assert_array_equal(x, y)


def test_state_dict_mismatch_errors():
    state = filled_buffer().state_dict()
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(61, FRAME_SHAPE).load_state_dict(state)
    with pytest.raises(ValueError, match="frame_shape"):
        ReplayBuffer(60, (3, 2)).load_state_dict(state)
    with pytest.raises(ValueError, match="frame_stack"):
        ReplayBuffer(60, FRAME_SHAPE, frame_stack=3).load_state_dict(state)


def test_input_validation():
    buf = ReplayBuffer(10, FRAME_SHAPE)
    frames, actions = make_episode(0, 3)
    with pytest.raises(ValueError, match="uint8"):
        buf.add_episode(frames.astype(np.float32), actions)
    with pytest.raises(ValueError, match="shape"):
        buf.add_episode(np.zeros((4, 3, 2), dtype=np.uint8), actions)
    with pytest.raises(ValueError, match="shape"):
        buf.add_episode(np.zeros((4, 2, 3, 1), dtype=np.uint8), actions)
    with pytest.raises(ValueError, match="len\\(actions\\)"):
        buf.add_episode(frames, actions[:-1])
    with pytest.raises(ValueError, match="integers"):
        buf.add_episode(frames, actions.astype(np.float64))
    with pytest.raises(ValueError, match="reserved"):
        buf.add_episode(frames, -np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match="longer than the buffer capacity"):
        buf.add_episode(*make_episode(1, 10))  # 11 frames > 10 slots
    assert buf.num_frames == 0 and buf.total_steps_added == 0
    buf.add_episode(*make_episode(2, 9))  # exactly capacity frames is fine
    assert buf.num_frames == 10


def test_memory_prediction():
    for cap, shape in [(100, (27, 27)), (50, (80, 104)), (10, (8, 8, 3))]:
        buf = ReplayBuffer(cap, shape)
        predicted = ReplayBuffer.bytes_needed(cap, shape)
        assert abs(buf.nbytes - predicted) <= 0.05 * predicted
        assert buf.nbytes >= cap * int(np.prod(shape))  # frames are stored once, as uint8


def test_rgb_frames_and_straddling_episode():
    shape = (4, 5, 3)
    buf = ReplayBuffer(12, shape)
    ref = NaiveBuffer(12)
    for ep, L in enumerate([6, 7, 2, 9]):  # the second episode straddles the wrap point
        frames, actions = make_episode(ep, L, shape)
        buf.add_episode(frames, actions)
        ref.add(frames, actions)
        check_everything(buf, ref)
