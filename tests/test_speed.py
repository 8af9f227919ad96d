"""The faster GLAMOR update computes the same thing: bucketed LSTM heads against the padded
ones, bf16 encoders against fp32 ones, and the switches that keep the old arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixelplan import config as config_lib
from pixelplan.agents import EnvSpec, make_agent
from pixelplan.data.replay import ReplayBuffer
from pixelplan.nets.action_model import ActionSequenceModel
from pixelplan.nets.encoders import ImpalaEncoder, SmallEncoder, make_encoder, native_bf16, resolve_precision, \
    set_precision


def _sequences(rng, batch: int, n_actions: int, max_len: int):
    k = torch.as_tensor(rng.integers(0, max_len, size=batch))
    k[0], k[-1] = 0, max_len - 1                     # the shortest and the longest possible
    length = int(k.max()) + 1
    acts = torch.as_tensor(rng.integers(0, n_actions, size=(batch, length - 1)))
    pos = torch.arange(length).unsqueeze(0)
    targets = torch.full((batch, length), -100)
    targets[:, :-1] = torch.where(pos[:, :-1] < k[:, None], acts, -100)
    targets.scatter_(1, k[:, None], n_actions)
    acts = torch.where(pos[:, :-1] < k[:, None], acts, -1)
    prev = torch.cat([torch.full((batch, 1), -1), acts], 1)
    return prev, targets, k + 1


@pytest.mark.parametrize("buckets", [1, 2, 6, 64])
def test_bucketed_heads_give_the_padded_heads_likelihoods_and_gradients(buckets):
    torch.manual_seed(0)
    model = ActionSequenceModel(12, 5, 8)
    code = torch.randn(20, 12, requires_grad=True)
    prev, targets, lengths = _sequences(np.random.default_rng(buckets), 20, 5, 9)
    padded = F.cross_entropy(model(code, prev).flatten(0, 1), targets.flatten(), ignore_index=-100)
    total, count = model.token_nll(code, prev, targets, lengths, buckets)
    assert count == int(lengths.sum())
    assert torch.allclose(total / count, padded, rtol=1e-6, atol=1e-6)
    params = [code, *model.parameters()]
    for g_bucketed, g_padded in zip(torch.autograd.grad(total / count, params), torch.autograd.grad(padded, params)):
        assert torch.allclose(g_bucketed, g_padded, rtol=1e-5, atol=1e-6)


def test_bucketed_heads_ignore_whatever_the_padding_holds():
    torch.manual_seed(1)
    model = ActionSequenceModel(6, 3, 4)
    code = torch.randn(5, 6)
    prev, targets, lengths = _sequences(np.random.default_rng(0), 5, 3, 7)
    junk_prev, junk_targets = prev.clone(), targets.clone()
    pad = torch.arange(prev.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    junk_prev[pad], junk_targets[pad] = 2, 1
    a, _ = model.token_nll(code, prev, targets, lengths, 3)
    b, _ = model.token_nll(code, junk_prev, junk_targets, lengths, 3)
    assert torch.equal(a, b)


def _agent(T: int = 10, **shared):
    cfg = config_lib.preset("debug")
    cfg.shared.encoder, cfg.shared.state_size, cfg.shared.batch_size = "impala", 16, 8
    for key, value in shared.items():
        setattr(cfg.glamor if key == "lstm_buckets" else cfg.shared, key, value)
    return make_agent("glamor", cfg, EnvSpec((16, 20), 2, 4, T), torch.device("cpu"), 0)


def _batch(agent, seed=0, T: int = 10):
    rng = np.random.default_rng(seed)
    store = ReplayBuffer(6 * (T + 1), (16, 20), 2)
    for _ in range(5):
        store.add_episode(rng.integers(0, 256, (T + 1, 16, 20), dtype=np.uint8), rng.integers(0, 4, T))
    return store.sample(8, T, rng)


def test_the_agents_bucketed_loss_is_its_padded_loss_on_long_sequences():
    from pixelplan.agents.glamor import BUCKET_MIN_TOKENS
    T = 2 * BUCKET_MIN_TOKENS
    padded, bucketed = _agent(T, precision="fp32", lstm_buckets=1), _agent(T, precision="fp32", lstm_buckets=3)
    batch = _batch(padded, 3, T)
    assert batch.k.max() + 1 > BUCKET_MIN_TOKENS          # the bucketed path runs
    a, metrics_a = padded.loss(batch)
    b, metrics_b = bucketed.loss(batch)
    assert torch.allclose(a, b, rtol=1e-6) and a.item() != 0


def test_bf16_encoders_match_fp32_within_tolerance_on_a_fixed_batch():
    fp32, bf16 = _agent(precision="fp32"), _agent(precision="bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    bf16.model.load_state_dict(fp32.model.state_dict())
    batch = _batch(fp32)
    grads = []
    losses = []
    for agent in (fp32, bf16):
        agent.model.zero_grad()
        loss, _ = agent.loss(batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in agent.model.parameters() if p.grad is not None]))
    # Stated tolerance: bf16 keeps 8 mantissa bits in the convolutions only; normalisation
    # and everything after the encoders are fp32.
    assert abs(losses[1] - losses[0]) <= 1e-2 * abs(losses[0])
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
    assert losses[0] != losses[1]          # the bf16 path really ran in bf16


def test_fp32_and_one_bucket_are_the_old_arithmetic_exactly():
    old, new = _agent(precision="fp32", lstm_buckets=1), _agent()
    batch = _batch(old)
    loss_old, _ = old.loss(batch)
    loss_new, _ = new.loss(batch)
    # The same weights (same seed); the default path differs from the old one only by rounding.
    assert all(torch.equal(a, b) for a, b in zip(old.model.state_dict().values(), new.model.state_dict().values()))
    assert abs(loss_new.item() - loss_old.item()) <= 1e-2 * abs(loss_old.item())
    for module in old.model.modules():
        if isinstance(module, ImpalaEncoder):
            assert module.compute_dtype is None


def test_auto_precision_is_bf16_only_where_the_device_has_it_and_never_for_the_small_encoder():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    small = make_encoder("small", 1, (27, 27), 8)
    set_precision(small, "bf16", torch.device("cpu"))
    assert isinstance(small, SmallEncoder) and small.compute_dtype is None
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_precision_and_buckets_may_change_on_resume_but_are_validated():
    saved, new = config_lib.preset("debug"), config_lib.preset("debug")
    new.shared.precision, new.glamor.lstm_buckets = "fp32", 1
    assert config_lib.incompatible_fields(saved, new) == []
    new.glamor.lstm_buckets = 0
    with pytest.raises(ValueError, match="lstm_buckets"):
        config_lib.validate(new)


@pytest.mark.parametrize("name", ["gcsl", "discern"])
def test_the_baselines_share_the_bf16_encoders_and_still_learn(name):
    cfg = config_lib.preset("debug")
    cfg.shared.encoder, cfg.shared.state_size, cfg.shared.batch_size, cfg.shared.precision = "impala", 16, 8, "bf16"
    spec = EnvSpec((16, 20), 2, 4, 10)
    agent = make_agent(name, cfg, spec, torch.device("cpu"), 0)
    encoders = [m for m in (agent.policy if name == "gcsl" else agent.q).modules() if isinstance(m, ImpalaEncoder)]
    assert agent.precision == "bf16" and encoders and all(m.compute_dtype == torch.bfloat16 for m in encoders)
    rng = np.random.default_rng(0)
    store = ReplayBuffer(60, (16, 20), 2)
    for _ in range(5):
        store.add_episode(rng.integers(0, 256, (11, 16, 20), dtype=np.uint8), rng.integers(0, 4, 10))
    if name == "discern":
        for _ in range(3):
            agent.end_episodes(np.arange(2), rng.integers(0, 256, (2, 16, 20), dtype=np.uint8),
                               rng.integers(0, 256, (2, 16, 20), dtype=np.uint8), explore=True)
    metrics = [agent.update(agent.sampler.sample(store, rng)) for _ in range(3)]
    assert all(np.isfinite(v) for m in metrics for v in m.values())
    decision = agent.act(store.stacks_at(store.episode_slots()[:2, 0]), rng.integers(0, 256, (2, 16, 20), np.uint8),
                         np.zeros(2, np.int64), explore=False, env_steps=0)
    assert decision.actions.shape == (2,) and ((decision.actions >= 0) & (decision.actions < 4)).all()
