"""The random agent: seeded, uniform, resumable, and strict about input shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelplan import config as config_lib
from pixelplan.agents import AGENTS, ObsSpec, make_agent
from pixelplan.agents.random import RandomAgent

N_ACTIONS = 5
SPEC = ObsSpec(frame_shape=(9, 9), frame_stack=2, n_actions=N_ACTIONS, max_episode_steps=7)
ROWS = 6


def make_random(seed: int = 0, spec: ObsSpec = SPEC) -> RandomAgent:
    agent = make_agent("random", config_lib.preset("debug"), spec, torch.device("cpu"), seed)
    assert isinstance(agent, RandomAgent)
    return agent


def inputs(rows: int = ROWS, spec: ObsSpec = SPEC):
    state = np.zeros((rows, spec.frame_stack, *spec.frame_shape), np.uint8)
    goal = np.zeros((rows, *spec.frame_shape), np.uint8)
    return state, goal, np.zeros(rows, np.int64)


def actions(agent: RandomAgent, calls: int, explore: bool = True) -> np.ndarray:
    state, goal, t = inputs()
    decisions = [agent.act(state, goal, t, explore, env_steps=i) for i in range(calls)]
    assert not any(d.stop.any() for d in decisions)                # evaluation always runs to T
    return np.stack([d.actions for d in decisions])


def test_registered_and_declares_it_does_not_learn():
    assert "random" in AGENTS
    agent = make_random()
    assert agent.learns is False and RandomAgent.learns is False
    assert agent.sampler is None
    assert agent.update(object()) == {}
    assert "floor row" in RandomAgent.__doc__


def test_same_seed_same_actions_other_seed_differs():
    a, b, c = actions(make_random(3), 20), actions(make_random(3), 20), actions(make_random(4), 20)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("explore", [True, False])
def test_actions_are_uniform_over_the_action_range(explore):
    got = actions(make_random(0), 2000, explore).ravel()        # 12,000 draws
    assert got.dtype == np.int64 and got.shape == (2000 * ROWS,)
    assert got.min() == 0 and got.max() == N_ACTIONS - 1
    freq = np.bincount(got, minlength=N_ACTIONS) / len(got)
    assert np.allclose(freq, 1 / N_ACTIONS, atol=0.02), freq


def test_single_action_env_always_gets_action_zero():
    spec = ObsSpec(frame_shape=(4, 4, 3), frame_stack=1, n_actions=1, max_episode_steps=3)
    agent = make_random(0, spec)
    state, goal, t = inputs(3, spec)
    assert agent.act(state, goal, t, False, 0).actions.tolist() == [0, 0, 0]


def test_state_dict_round_trip_continues_the_same_sequence():
    straight = make_random(7)
    expected = actions(straight, 10)
    first = make_random(7)
    head = actions(first, 4)
    saved = first.state_dict()
    resumed = make_random(123)                                  # another seed: the state wins
    resumed.load_state_dict(saved)
    assert np.array_equal(np.concatenate([head, actions(resumed, 6)]), expected)
    # The saved state is a copy: the original agent also continues from where it was.
    assert np.array_equal(actions(first, 6), expected[4:])


def test_state_dict_survives_a_torch_checkpoint(tmp_path):
    agent = make_random(11)
    actions(agent, 3)
    torch.save({"agent": agent.state_dict()}, tmp_path / "ckpt.pt")
    expected = actions(agent, 5)
    resumed = make_random(0)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=False)["agent"])
    assert np.array_equal(actions(resumed, 5), expected)


@pytest.mark.parametrize("which,bad,needle", [
    ("state", np.zeros((ROWS, 3, 9, 9), np.uint8), "state must be a uint8 array of shape (batch, 2, 9, 9)"),
    ("state", np.zeros((ROWS, 2, 9, 9), np.float32), "dtype float32"),
    ("goal", np.zeros((ROWS, 2, 9, 9), np.uint8), "goal must be a uint8 array of shape (batch, 9, 9)"),
    ("goal", [[0] * 9] * 9, "got list"),
    ("t", np.zeros(ROWS + 1, np.int64), "one row each per env"),
])
def test_bad_inputs_give_a_clear_value_error(which, bad, needle):
    state, goal, t = inputs()
    args = {"state": state, "goal": goal, "t": t, **{which: bad}}
    with pytest.raises(ValueError) as info:
        make_random().act(args["state"], args["goal"], args["t"], True, 0)
    assert needle in str(info.value)
