"""PlaNet's world model (nets/rssm.py): shapes, the posterior against the prior, the free-nats KL
against a hand computation, the 5-bit preprocessing, and that the loss trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelplan.nets.rssm import (RSSM, ConvDecoder, ConvEncoder, RSSMSizes, State, WorldModel, free_nats_kl,
                                 gaussian_kl, postprocess, preprocess)

SMALL = RSSMSizes(deter=16, stoch=4, hidden=16)


def test_encoder_and_decoder_are_ha_and_schmidhubers_sizes():
    enc, dec = ConvEncoder(), ConvDecoder(230)
    images = torch.zeros(2, 3, 3, 64, 64)
    assert enc(images).shape == (2, 3, 1024)
    assert dec(torch.zeros(2, 3, 230)).shape == (2, 3, 3, 64, 64)


def test_rssm_shapes_and_the_posterior_sees_the_image_the_prior_does_not():
    torch.manual_seed(0)
    rssm = RSSM(2, RSSMSizes(deter=16, stoch=4, hidden=16, embed=8))
    embeds, actions = torch.randn(3, 5, 8), torch.randn(3, 4, 2)
    priors, posts = rssm.observe(embeds, actions)
    for state in (priors, posts):
        assert state.h.shape == (3, 5, 16) and state.z_stoch.shape == (3, 5, 4) and (state.std >= 0.1).all()
    assert torch.equal(priors.h, posts.h)                              # one deterministic path
    assert not torch.allclose(priors.mean, posts.mean)
    # Another image at step 2 changes the posterior there, not the prior.
    other = embeds.clone()
    other[:, 2] += 5
    priors2, posts2 = rssm.observe(other, actions, generator=torch.Generator().manual_seed(1))
    priors1, posts1 = rssm.observe(embeds, actions, generator=torch.Generator().manual_seed(1))
    assert torch.equal(priors1.mean[:, 2], priors2.mean[:, 2])
    assert not torch.allclose(posts1.mean[:, 2], posts2.mean[:, 2])
    # Imagining from a state rolls the same prior as observing would.
    start = State(*(x[:, 1] for x in posts1))
    g = torch.Generator().manual_seed(2)
    imagined = rssm.imagine(start, actions[:, 1:2], generator=g)
    g = torch.Generator().manual_seed(2)
    step = rssm.prior_step(start, actions[:, 1], generator=g)
    assert torch.allclose(imagined.mean[:, 0], step.mean) and torch.allclose(imagined.h[:, 0], priors1.h[:, 2])


def test_kl_with_free_nats_is_clipped_per_time_step_against_a_hand_computation():
    mq, sq = torch.tensor([[[0.0, 1.0]], [[2.0, 0.0]]]), torch.tensor([[[1.0, 0.5]], [[1.0, 2.0]]])
    mp, sp = torch.zeros(2, 1, 2), torch.ones(2, 1, 2)
    post, prior = State(mq, mq, mq, sq), State(mp, mp, mp, sp)

    def kl1(m1, s1, m2, s2):
        return math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5

    per_step = [kl1(0, 1, 0, 1) + kl1(1, 0.5, 0, 1), kl1(2, 1, 0, 1) + kl1(0, 2, 0, 1)]   # 0.818, 2.807
    assert torch.allclose(gaussian_kl(post, prior).flatten(), torch.tensor(per_step))
    # Clipped at 1 nat per step: max(0.818, 1) and max(2.807, 1), then the mean.
    assert free_nats_kl(post, prior, 1.0).item() == pytest.approx((1.0 + per_step[1]) / 2)
    # The trap: clipping after averaging would give max(mean, 1) = 1.81 here.
    assert free_nats_kl(post, prior, 1.0).item() != pytest.approx(max(np.mean(per_step), 1.0))


def test_five_bit_preprocessing_round_trips_to_the_bins():
    frames = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(1, 16, 16, 3).contiguous()
    x = preprocess(frames, noise=False)
    assert x.shape == (1, 3, 16, 16) and x.min() == -0.5 and x.max() < 0.5
    assert len(torch.unique(x)) == 32
    assert torch.equal(postprocess(x), (frames // 8) * 8)
    noisy = preprocess(frames, generator=torch.Generator().manual_seed(0))
    assert torch.equal(postprocess(noisy), (frames // 8) * 8)          # the noise stays within a bin
    assert ((noisy - x) >= 0).all() and ((noisy - x) < 1 / 32).all()


def test_the_world_model_loss_trains_on_a_fixed_batch():
    torch.manual_seed(0)
    model = WorldModel(1, SMALL, free_nats=3.0)
    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8))
    actions, rewards = torch.randn(2, 3, 1), torch.randn(2, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    losses = []
    for _ in range(15):
        loss, metrics = model.loss(frames, actions, rewards, generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert metrics["kl"] >= 3.0 and set(metrics) >= {"recon_nll", "reward_nll", "kl"}
    assert losses[-1] < losses[0]


def test_latent_overshooting_against_a_hand_rollout():
    """Equation 7 with D = 3 on the deterministic model (no sampling, so a hand rollout is exact):
    for d = 2, 3 the prior rolled d steps from each posterior is compared with the posterior d
    steps later (its gradient stopped), clipped at the free nats per step, averaged, summed
    over d; the loss is (one-step KL + beta x that) / D."""
    torch.manual_seed(0)
    rssm = RSSM(2, RSSMSizes(deter=8, stoch=3, hidden=8, embed=6), kind="deterministic")
    model = WorldModel(2, SMALL, free_nats=0.05, kind="deterministic", overshooting=3, overshooting_beta=0.5)
    model.rssm = rssm
    embeds, actions = torch.randn(2, 6, 6), torch.randn(2, 5, 2)
    _, posts = rssm.observe(embeds, actions)
    expected = 0.0
    for d in (2, 3):
        per_start = []
        for t in range(6 - d):
            start = State(*(x[:, t] for x in posts))
            prior = State(*(x[:, -1] for x in rssm.imagine(start, actions[:, t:t + d])))
            target = State(*(x[:, t + d] for x in posts))
            per_start.append(torch.clamp(gaussian_kl(target, prior), min=0.05))
        expected += torch.stack(per_start, 1).mean()
    got = model.overshooting_kl(posts, actions)
    assert torch.allclose(got, expected, atol=1e-6)
    # The posterior targets get no gradient from these terms: the last frame's embedding is only
    # ever a target (never a start), so its gradient is zero; the first frame's (a start) is not.
    embeds.requires_grad_()
    _, posts = rssm.observe(embeds, actions)
    model.overshooting_kl(posts, actions).backward()
    assert embeds.grad[:, -1].abs().sum() == 0 and embeds.grad[:, 0].abs().sum() > 0


@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
def test_the_papers_other_transition_models(kind):
    """GRU alone: every latent is its mean with unit std, so rollouts are deterministic. SSM
    alone: no memory but z_stoch (h is this step's hidden layer), features are z_stoch."""
    torch.manual_seed(0)
    rssm = RSSM(2, RSSMSizes(deter=16, stoch=4, hidden=16, embed=8), kind=kind)
    embeds, actions = torch.randn(3, 5, 8), torch.randn(3, 4, 2)
    priors, posts = rssm.observe(embeds, actions, generator=torch.Generator().manual_seed(0))
    if kind == "deterministic":
        assert torch.equal(posts.z_stoch, posts.mean) and torch.equal(posts.std, torch.ones_like(posts.std))
        again = rssm.observe(embeds, actions, generator=torch.Generator().manual_seed(1))[1]
        assert torch.equal(again.z_stoch, posts.z_stoch)
        assert rssm.feature_dim == 20
    else:
        assert rssm.feature_dim == 4 and torch.equal(rssm.features(posts), posts.z_stoch)
        # No memory: the prior at t depends on the previous z_stoch and action only.
        start = State(*(x[:, 1] for x in posts))
        other = State(start.h + 100.0, start.z_stoch, start.mean, start.std)
        a = rssm.prior_step(start, actions[:, 1], generator=torch.Generator().manual_seed(2))
        b = rssm.prior_step(other, actions[:, 1], generator=torch.Generator().manual_seed(2))
        assert torch.equal(a.mean, b.mean)
    with pytest.raises(ValueError, match="unknown transition model"):
        RSSM(2, kind="gru")
