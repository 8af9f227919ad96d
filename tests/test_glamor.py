"""GLAMOR: the token stepper, the loss masking, and the agent's acting rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixelplan import config as config_lib
from pixelplan.agents import ObsSpec, make_agent
from pixelplan.agents.glamor import GlamorAgent
from pixelplan.data.replay import PAD, HindsightBatch, ReplayBuffer
from pixelplan.nets.action_model import ActionSequenceModel, TokenStepper
from pixelplan.nets.encoders import make_encoder
from pixelplan.planners import shooting
from pixelplan.planners.shooting import sample_plans

from conftest import with_glamor_values

N_ACTIONS = 4
T = 6
SPEC = ObsSpec(frame_shape=(27, 27), frame_stack=2, n_actions=N_ACTIONS, max_episode_steps=T)


def make_glamor(seed: int = 0, **glamor) -> GlamorAgent:
    """A debug-preset GLAMOR agent; self-goal samples off unless asked for, so the loss tests
    see exactly the batch they build."""
    glamor.setdefault("self_goal_prob", 0.0)
    cfg = with_glamor_values(config_lib.preset("debug"), **glamor)
    agent = make_agent("glamor", cfg, SPEC, torch.device("cpu"), seed)
    assert isinstance(agent, GlamorAgent)
    return agent


def frames(rng: np.random.Generator, *shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


# ---------------------------------------------------- TokenStepper vs forward
def run_stepper(stepper: TokenStepper, tokens: torch.Tensor, trials: int = 1) -> list[torch.Tensor]:
    """Log-probabilities at each position of ``tokens`` (R, L), fed one position at a time."""
    state, out = stepper.start(trials), []
    for i in range(tokens.shape[1]):
        logp, state = stepper.advance(state, tokens[:, i])
        out.append(logp)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_token_stepper_matches_teacher_forced_forward(seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_actions = [2, 3, 4, 5][seed]
    hidden = [8, 16, 5, 12][seed]
    rows, length = 7, 6
    idm = ActionSequenceModel(10, n_actions, hidden)
    prior = ActionSequenceModel(6, n_actions, hidden)      # different code sizes are fine
    for p in list(idm.parameters()) + list(prior.parameters()):   # leave the default init behind
        p.data.normal_(0, 0.5, generator=gen)
    codes = [torch.randn(rows, 10, generator=gen), torch.randn(rows, 6, generator=gen)]
    seq = torch.randint(0, n_actions, (rows, length), generator=gen)
    # Teacher forcing feeds "no action" first, then a_1..a_{L-1}.
    prev = torch.cat([torch.full((rows, 1), -1), seq[:, :-1]], 1)
    with torch.no_grad():
        want = torch.stack([F.log_softmax(m(c, prev), -1) for m, c in zip((idm, prior), codes)])
        tokens = torch.cat([torch.full((rows, 1), n_actions), seq[:, :-1]], 1)   # n_actions = plan start
        got = torch.stack(run_stepper(TokenStepper([idm, prior], codes), tokens), 2)   # (M, R, L, A+1)
        got_single = torch.stack(run_stepper(TokenStepper([prior], [codes[1]]), tokens), 2)
    assert got.shape == (2, rows, length, n_actions + 1)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.allclose(got_single[0], want[1], atol=1e-5)


def test_token_stepper_repeats_each_code_for_its_trials():
    torch.manual_seed(0)
    model = ActionSequenceModel(5, 3, 8)
    codes = torch.randn(2, 5)
    prev = torch.tensor([3, 3, 3, 3, 3, 3])               # 2 codes x 3 trials, plan start
    with torch.no_grad():
        repeated = run_stepper(TokenStepper([model], [codes]), prev.unsqueeze(1), trials=3)[0]
        explicit = run_stepper(TokenStepper([model], [codes.repeat_interleave(3, 0)]), prev.unsqueeze(1))[0]
    assert torch.allclose(repeated, explicit)
    assert not torch.allclose(repeated[0, 0], repeated[0, 3])   # the two codes differ


@pytest.mark.parametrize("use_prior,proposal,termination,clip", [
    (True, "guided", "early", -2.05), (True, "guided", "plan_end", -2.05), (False, "guided", "early", None),
    (True, "sparse", "early", -2.05), (True, "guided", "early", None)])
def test_scripted_lstm_sampling_equals_the_generic_loop(use_prior, proposal, termination, clip):
    # The planner's token loop compiled by TorchScript around a TokenStepper against the same
    # loop run eagerly (the stepper marked not scriptable): identical plans for the same noise.
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    n_actions, hidden, groups, trials = 4, 8, 3, 40
    idm, prior = ActionSequenceModel(6, n_actions, hidden), ActionSequenceModel(6, n_actions, hidden)
    for p in list(idm.parameters()) + list(prior.parameters()):
        p.data.normal_(0, 0.25, generator=gen)
    codes = [torch.randn(groups, 6, generator=gen), torch.randn(groups, 6, generator=gen)]
    models, codes = ([idm, prior], codes) if use_prior else ([idm], codes[:1])
    limits = torch.tensor([5, 0, 3])
    kw = dict(trials=trials, use_prior=use_prior, clip_logp=clip, gamma=0.9, proposal=proposal,
              termination=termination)
    eager = TokenStepper(models, codes)
    eager.scriptable = False
    with torch.no_grad():
        fast = sample_plans(TokenStepper(models, codes), n_actions, limits,
                            generator=torch.Generator().manual_seed(5), **kw)
        generic = sample_plans(eager, n_actions, limits, generator=torch.Generator().manual_seed(5), **kw)
        # The old layout, each code and limit repeated by hand, one trial each: the same plans.
        explicit = sample_plans(TokenStepper(models, [c.repeat_interleave(trials, 0) for c in codes]), n_actions,
                                limits.repeat_interleave(trials), generator=torch.Generator().manual_seed(5),
                                **{**kw, "trials": 1})
    assert isinstance(shooting._scripted_token_loop(TokenStepper.advance), torch.jit.ScriptFunction)
    assert fast.actions.shape == (groups * trials, 5)
    # The same plans; the scores to float rounding: the two layouts project the codes in GEMMs
    # of different shapes, which some CPUs' kernels (this project's AMD EPYC VM) round apart.
    assert torch.equal(fast.actions, explicit.actions)
    assert torch.allclose(fast.scores, explicit.scores, atol=1e-5, rtol=0)
    assert torch.equal(fast.actions, generic.actions)
    assert torch.equal(fast.lengths, generic.lengths)
    assert torch.allclose(fast.scores, generic.scores, atol=1e-5)
    assert len(set(map(tuple, fast.actions.tolist()))) > 10      # the plans are varied


def test_token_stepper_rejects_mismatched_models():
    with pytest.raises(ValueError, match="share n_actions and hidden"):
        TokenStepper([ActionSequenceModel(4, 3, 8), ActionSequenceModel(4, 3, 9)],
                     [torch.zeros(2, 4), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="same number of rows"):
        TokenStepper([ActionSequenceModel(4, 3, 8), ActionSequenceModel(4, 3, 8)],
                     [torch.zeros(2, 4), torch.zeros(3, 4)])


# ------------------------------------------------------------- loss masking
def make_batch(rng, ks, max_k=T) -> HindsightBatch:
    ks = np.asarray(ks, dtype=np.int64)
    acts = rng.integers(0, N_ACTIONS, size=(len(ks), max_k))
    acts = np.where(np.arange(max_k) < ks[:, None], acts, PAD).astype(np.int64)
    return HindsightBatch(state=frames(rng, len(ks), SPEC.frame_stack, 27, 27), goal=frames(rng, len(ks), 27, 27),
                          actions=acts, k=ks, start=np.arange(len(ks), dtype=np.int64))


def loss_of(agent: GlamorAgent, batch: HindsightBatch) -> float:
    with torch.no_grad():
        return agent.loss(batch)[0].item()


def hand_loss(agent: GlamorAgent, batch: HindsightBatch) -> float:
    """Token-mean NLL over a_1..a_k, END of each row, each row run alone (no padding at all)."""
    end = SPEC.n_actions
    with torch.no_grad():
        idm_code, prior_code = agent.model.codes(torch.as_tensor(batch.state), torch.as_tensor(batch.goal))
        totals, tokens = [0.0, 0.0], 0
        for r, k in enumerate(batch.k.tolist()):
            seq = batch.actions[r, :k].tolist()
            prev = torch.tensor([[-1] + seq])                          # k + 1 inputs
            target = torch.tensor(seq + [end])                         # k + 1 targets
            for j, (model, code) in enumerate(((agent.model.idm, idm_code), (agent.model.prior, prior_code))):
                logp = F.log_softmax(model(code[r:r + 1], prev)[0], -1)
                totals[j] -= float(logp[torch.arange(k + 1), target].sum())
            tokens += k + 1
    return totals[0] / tokens + agent.cfg.alpha * totals[1] / tokens


def test_loss_is_token_mean_nll_over_actions_and_end():
    agent = make_glamor(alpha=0.7)
    rng = np.random.default_rng(0)
    batch = make_batch(rng, [0, 3, 1, 6, 0, 2])
    loss, metrics = agent.loss(batch)
    assert loss.item() == pytest.approx(hand_loss(agent, batch), abs=1e-5)
    assert metrics["loss"] == pytest.approx(metrics["nll_idm"] + 0.7 * metrics["nll_prior"], abs=1e-6)


def test_loss_with_unused_action_columns_beyond_max_k():
    # max(k) = 2 but the batch carries T columns: the extra all-PAD columns change nothing.
    agent = make_glamor()
    rng = np.random.default_rng(1)
    batch = make_batch(rng, [2, 0, 1])
    narrow = batch._replace(actions=batch.actions[:, :2])
    assert loss_of(agent, batch) == pytest.approx(hand_loss(agent, batch), abs=1e-5)
    assert loss_of(agent, narrow) == pytest.approx(loss_of(agent, batch), abs=1e-6)


def test_k_zero_rows_contribute_exactly_one_end_token():
    agent = make_glamor()
    rng = np.random.default_rng(2)
    batch = make_batch(rng, [0, 0, 0])
    end = SPEC.n_actions
    with torch.no_grad():
        idm_code, prior_code = agent.model.codes(torch.as_tensor(batch.state), torch.as_tensor(batch.goal))
        start = torch.full((3, 1), -1)
        want = -(F.log_softmax(agent.model.idm(idm_code, start)[:, 0], -1)[:, end].mean()
                 + agent.cfg.alpha * F.log_softmax(agent.model.prior(prior_code, start)[:, 0], -1)[:, end].mean())
    assert loss_of(agent, batch) == pytest.approx(float(want), abs=1e-5)
    # Weight of a k = 0 row in a mixed batch: 1 token of 1 + 4 = 5.
    mixed = make_batch(rng, [0, 3])
    zero, three = (mixed._replace(**{f: getattr(mixed, f)[i:i + 1] for f in ("state", "goal", "actions", "k")})
                   for i in (0, 1))
    combined = (1 * loss_of(agent, zero) + 4 * loss_of(agent, three)) / 5
    assert loss_of(agent, mixed) == pytest.approx(combined, abs=1e-5)


def test_loss_from_real_replay_batches():
    # Batches from the replay itself, including k = 0 samples at episodes' final frames.
    agent = make_glamor()
    rng = np.random.default_rng(3)
    replay = ReplayBuffer(200, SPEC.frame_shape, SPEC.frame_stack)
    for length in (T, 3, 1, T):
        replay.add_episode(frames(rng, length + 1, 27, 27), rng.integers(0, N_ACTIONS, size=length))
    valid = replay.valid_indices()
    starts = np.concatenate([valid[:8], valid[-3:]])
    ks = np.minimum(np.arange(len(starts)) % (T + 1), replay.steps_left(starts))
    batch = replay.gather(starts, ks, T)
    assert (batch.k == 0).any() and batch.k.max() >= 3
    assert loss_of(agent, batch) == pytest.approx(hand_loss(agent, batch), abs=1e-5)


def test_changing_padded_actions_does_not_change_the_loss():
    agent = make_glamor()
    rng = np.random.default_rng(4)
    batch = make_batch(rng, [0, 2, 5, 1])
    base = loss_of(agent, batch)
    junk = batch.actions.copy()
    pad = np.arange(T) >= batch.k[:, None]
    junk[pad] = rng.integers(0, N_ACTIONS, size=int(pad.sum()))
    assert loss_of(agent, batch._replace(actions=junk)) == pytest.approx(base, abs=1e-6)


def test_changing_actions_inside_k_does_change_the_loss():
    # The counterpart of the padding test: real actions are targets.
    agent = make_glamor()
    rng = np.random.default_rng(5)
    batch = make_batch(rng, [0, 2, 5, 1])
    changed = batch.actions.copy()
    changed[2, 3] = (changed[2, 3] + 1) % N_ACTIONS
    assert abs(loss_of(agent, batch._replace(actions=changed)) - loss_of(agent, batch)) > 1e-6


# ------------------------------------------------------------------- acting
def obs_batch(rng, n):
    return frames(rng, n, SPEC.frame_stack, 27, 27), frames(rng, n, 27, 27)


def bias_idm(agent: GlamorAgent, token: int) -> None:
    """Make the idm put (almost) all its mass on ``token`` at every step, whatever the input.

    Edits the weights the planner uses (the moving average when ``plan_ema`` is on).
    """
    head = agent.planning_model.idm.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-25.0)
        head.bias[token] = 25.0


def test_act_terminates_when_no_steps_are_left():
    agent = make_glamor()
    rng = np.random.default_rng(6)
    state, goal = obs_batch(rng, 3)
    bias_idm(agent, 1)                     # the idm would go on forever if it could
    out = agent.act(state, goal, np.array([T, T, T]), explore=False, env_steps=0)
    assert out.stop.tolist() == [True] * 3        # "stop" is its own signal, not an action value
    mixed = agent.act(state, goal, np.array([T, 0, T - 1]), explore=False, env_steps=0)
    assert mixed.stop.tolist() == [True, False, False] and mixed.actions[1:].tolist() == [1, 1]
    assert ((mixed.actions >= 0) & (mixed.actions < N_ACTIONS)).all()   # a stopped row's action is valid too


def test_act_terminates_when_the_best_plan_is_end_now():
    agent = make_glamor()
    rng = np.random.default_rng(7)
    state, goal = obs_batch(rng, 4)
    bias_idm(agent, N_ACTIONS)             # END
    out = agent.act(state, goal, np.zeros(4, dtype=np.int64), explore=False, env_steps=0)
    assert out.stop.tolist() == [True] * 4


def test_act_returns_the_first_action_of_the_best_plan():
    agent = make_glamor()
    rng = np.random.default_rng(8)
    state, goal = obs_batch(rng, 5)
    bias_idm(agent, 2)
    out = agent.act(state, goal, np.array([0, 1, 2, 3, 5]), explore=False, env_steps=0)
    assert not out.stop.any()
    assert out.actions.dtype.kind == "i" and out.actions.tolist() == [2] * 5
    plans = agent.plan(state, goal, np.array([T, 3, 0, 1, 2]), trials=4)
    assert plans.lengths.tolist() == [T, 3, 0, 1, 2]     # END only where forced
    assert plans.actions[0].tolist() == [2] * T


def test_act_plan_end_at_the_last_step_returns_a_valid_action():
    agent = make_glamor(termination="plan_end")
    rng = np.random.default_rng(9)
    state, goal = obs_batch(rng, 50)
    out = agent.act(state, goal, np.full(50, T), explore=False, env_steps=0)
    assert not out.stop.any() and ((out.actions >= 0) & (out.actions < N_ACTIONS)).all()


def test_explore_with_epsilon_one_is_uniform_random():
    agent = make_glamor(eps_start=1.0, eps_final=1.0)
    bias_idm(agent, 2)                     # a plan, if used, would say 2 every time
    rng = np.random.default_rng(10)
    n = 2000
    state, goal = obs_batch(rng, n)
    counts = np.zeros(N_ACTIONS)
    agent.begin_episodes(np.arange(n), goal, explore=True)
    for t in range(3):
        out = agent.act(state, goal, np.full(n, t), explore=True, env_steps=10_000).actions
        assert out.shape == (n,) and ((out >= 0) & (out < N_ACTIONS)).all()
        counts += np.bincount(out, minlength=N_ACTIONS)
    freq = counts / counts.sum()
    assert np.abs(freq - 1 / N_ACTIONS).max() < 0.02, freq


def test_explore_with_epsilon_zero_follows_the_plan_open_loop():
    # Contrast for the test above: with epsilon 0 the training plan is followed.
    agent = make_glamor(eps_start=0.0, eps_final=0.0)
    bias_idm(agent, 3)
    rng = np.random.default_rng(11)
    state, goal = obs_batch(rng, 6)
    agent.begin_episodes(np.arange(6), goal, explore=True)
    for t in range(T):
        out = agent.act(state, goal, np.full(6, t), explore=True, env_steps=0).actions
        assert out.tolist() == [3] * 6


def test_training_plans_are_keyed_by_env_row_and_made_when_an_episode_begins():
    # Rows 4 and 9 begin episodes; a call for the rows in another order, or a subset, follows
    # each row's own plan, and no plan is made without begin_episodes.
    agent = make_glamor(eps_start=0.0, eps_final=0.0)
    rng = np.random.default_rng(14)
    state, goal = obs_batch(rng, 2)
    bias_idm(agent, 1)
    agent.begin_episodes(np.array([4, 9]), goal, explore=True)
    agent.act(state, goal, np.zeros(2, np.int64), explore=True, env_steps=0, rows=np.array([4, 9]))
    assert sorted(agent._open_loop) == [4, 9] and not agent._to_plan
    agent._open_loop[9] = np.array([0, 2, 2, 2, 2, 2], np.int64)   # row 9's plan says 2 from t = 1
    out = agent.act(state[::-1], goal[::-1], np.ones(2, np.int64), explore=True, env_steps=0,
                    rows=np.array([9, 4])).actions
    assert out.tolist() == [2, 1]
    with pytest.raises(ValueError, match="one env row id per batch row"):
        agent.act(state, goal, np.ones(2, np.int64), explore=True, env_steps=0, rows=np.array([4]))


def test_epsilon_schedule():
    agent = make_glamor(eps_start=1.0, eps_final=0.2, eps_steps=100)
    assert agent.epsilon(0) == pytest.approx(1.0)
    assert agent.epsilon(50) == pytest.approx(0.6)
    assert agent.epsilon(100) == pytest.approx(0.2)
    assert agent.epsilon(10_000) == pytest.approx(0.2)


@pytest.mark.parametrize("what,bad,expected", [
    ("goal", lambda rng: frames(rng, 2, 28, 27), "(batch, 27, 27)"),
    ("goal", lambda rng: frames(rng, 2, 27, 27).astype(np.float32), "(batch, 27, 27)"),
    ("goal", lambda rng: frames(rng, 2, SPEC.frame_stack, 27, 27), "(batch, 27, 27)"),
    ("state", lambda rng: frames(rng, 2, 27, 27), f"(batch, {SPEC.frame_stack}, 27, 27)"),
])
@pytest.mark.parametrize("explore", [False, True])
def test_act_rejects_frames_of_the_wrong_shape_or_dtype(what, bad, expected, explore):
    agent = make_glamor()
    rng = np.random.default_rng(12)
    state, goal = obs_batch(rng, 2)
    args = {"state": state, "goal": goal, what: bad(rng)}
    with pytest.raises(ValueError) as info:
        agent.act(args["state"], args["goal"], np.zeros(2, dtype=np.int64), explore=explore, env_steps=0)
    msg = str(info.value)
    assert what in msg and expected in msg and "uint8" in msg


def test_agent_state_dict_round_trip_reproduces_plans():
    agent = make_glamor(seed=3)
    rng = np.random.default_rng(13)
    state, goal = obs_batch(rng, 3)
    saved = {k: v for k, v in agent.state_dict().items()}
    first = agent.plan(state, goal, np.array([T, 2, 4]), trials=8)
    other = make_glamor(seed=4)
    other.load_state_dict(saved)
    again = other.plan(state, goal, np.array([T, 2, 4]), trials=8)
    assert torch.equal(first.actions, again.actions) and torch.allclose(first.scores, again.scores)


# ---------------------------------------------------------- inference speed-ups
def test_batch_one_convolutions_route_to_onednn_with_the_same_result():
    torch.manual_seed(0)
    enc = make_encoder("impala", 4, (40, 36), 16)
    x = torch.randint(0, 256, (3, 4, 40, 36), dtype=torch.uint8)
    with torch.no_grad():
        batched = enc(x)                       # batch 3: PyTorch's own choice of kernel
        single = torch.cat([enc(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-4), (batched - single).abs().max()


def test_goal_features_are_cached_until_the_weights_change():
    agent = make_glamor(seed=0)
    rng = np.random.default_rng(0)
    goals = frames(rng, 3, 27, 27)
    with torch.no_grad():
        fresh = agent.model.encode_goal(torch.as_tensor(goals))
        first = agent._goal_features(goals)
        again = agent._goal_features(goals[[2, 0]])            # served from the cache
    assert torch.allclose(first, fresh) and torch.allclose(again, fresh[[2, 0]])
    replay = ReplayBuffer(200, (27, 27), SPEC.frame_stack)
    for _ in range(4):
        replay.add_episode(frames(rng, T + 1, 27, 27), rng.integers(0, N_ACTIONS, T))
    agent.update(replay.sample(16, T, rng))
    with torch.no_grad():
        after = agent._goal_features(goals)
        want = agent.model.encode_goal(torch.as_tensor(goals))
    assert torch.allclose(after, want) and not torch.allclose(after, first)


def test_plan_ema_plans_with_the_moving_average_and_survives_a_checkpoint():
    agent = make_glamor(seed=0, plan_ema=0.5)
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(200, (27, 27), SPEC.frame_stack)
    for _ in range(4):
        replay.add_episode(frames(rng, T + 1, 27, 27), rng.integers(0, N_ACTIONS, T))
    start = {k: v.clone() for k, v in agent.model.state_dict().items()}
    agent.update(replay.sample(16, T, rng))        # the first update copies the weights
    first = {k: v.clone() for k, v in agent.model.state_dict().items()}
    agent.update(replay.sample(16, T, rng))
    trained = agent.model.state_dict()
    averaged = agent.planning_model.state_dict()
    name = "idm.head.weight"
    assert not torch.allclose(start[name], first[name])
    assert torch.allclose(averaged[name], 0.5 * first[name] + 0.5 * trained[name], atol=1e-6)
    # A checkpoint round trip restores the average, not just the trained weights.
    clone = make_glamor(seed=1, plan_ema=0.5)
    clone.load_state_dict(agent.state_dict())
    assert torch.equal(clone.planning_model.state_dict()[name], averaged[name])
    state, goal = frames(rng, 2, SPEC.frame_stack, 27, 27), frames(rng, 2, 27, 27)
    clone.generator.manual_seed(4)
    agent.generator.manual_seed(4)
    a, b = agent.plan(state, goal, np.array([T, T]), 8), clone.plan(state, goal, np.array([T, T]), 8)
    assert torch.equal(a.actions, b.actions) and torch.allclose(a.scores, b.scores)


# ------------------------------------------------------------ self-goal samples
def _batch(rng: np.random.Generator, rows: int = 64) -> HindsightBatch:
    k = rng.integers(1, T + 1, size=rows)
    actions = np.where(np.arange(T)[None] < k[:, None], rng.integers(0, N_ACTIONS, size=(rows, T)), PAD)
    return HindsightBatch(state=frames(rng, rows, 2, 27, 27), goal=frames(rng, rows, 27, 27), actions=actions,
                          k=k, start=np.arange(rows))


def test_self_goal_samples_make_the_start_its_own_goal():
    agent = make_glamor(self_goal_prob=0.3)
    batch = _batch(np.random.default_rng(0), rows=400)
    out = agent.self_goal_samples(batch)
    own = out.k == 0
    assert 0.2 < own.mean() < 0.4
    np.testing.assert_array_equal(out.goal[own], batch.state[own, -1])
    assert np.all(out.actions[own] == PAD)
    for name in ("goal", "actions", "k", "state"):
        np.testing.assert_array_equal(getattr(out, name)[~own], getattr(batch, name)[~own])
    assert np.all(batch.k > 0)     # the replay's batch itself is left alone


def test_self_goal_prob_zero_is_the_papers_sampling_and_draws_nothing():
    agent = make_glamor()
    before = agent.sample_rng.bit_generator.state
    batch = _batch(np.random.default_rng(1))
    loss_a = agent.loss(batch)[0]
    assert agent.sample_rng.bit_generator.state == before
    assert torch.equal(loss_a, agent.loss(batch)[0])


def test_self_goal_samples_make_end_now_lose_away_from_the_goal():
    """A one-step env whose start never ends an episode: under the paper's sampling END at a
    plan's start is never seen at the start state; with self-goal samples its log-ratio is
    learned: high where the goal is the start, far below zero elsewhere."""
    spec = ObsSpec(frame_shape=(9, 9), frame_stack=1, n_actions=2, max_episode_steps=1)
    cells = np.zeros((3, 9, 9), np.uint8)
    for i in range(3):
        cells[i, :, 3 * i:3 * i + 3] = 255        # start, left, right
    replay = ReplayBuffer(600, (9, 9), 1)
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = int(rng.integers(2))
        replay.add_episode(cells[[0, 1 + a]], np.array([a]))
    cfg = config_lib.preset("debug")
    cfg = with_glamor_values(cfg, self_goal_prob=0.2, lr=3e-3)
    agent = make_agent("glamor", cfg, spec, torch.device("cpu"), 0)
    for _ in range(150):
        agent.update(replay.sample(64, 1, rng))
    model = agent.model.eval()
    with torch.no_grad():
        state = torch.as_tensor(cells[[0, 0]][:, None])
        idm_code, prior_code = model.codes(state, torch.as_tensor(cells[[0, 1]]))
        start = torch.full((2, 1), -1)
        z_end = (F.log_softmax(model.idm(idm_code, start), -1) - F.log_softmax(model.prior(prior_code, start), -1))
    z_end_now = z_end[:, 0, spec.n_actions]
    assert z_end_now[0] > 1.0      # the goal is the start: END now is right
    assert z_end_now[1] < -3.0     # the goal is elsewhere: END now loses to the 1-step plan
