"""CEM (planners/cem.py): finds known optima, keeps bounds, and its noise has the stated law."""

import math

import pytest
import torch

from pixelplan.planners.cem import cem, correlated_noise


def quadratic(target: torch.Tensor):
    """Score = -||a - target||^2 per candidate; target (B, H, A)."""
    return lambda actions: -((actions - target.unsqueeze(1)) ** 2).sum((2, 3))


@pytest.mark.parametrize("noise,beta", [("white", 1.0), ("correlated", 0.3)])
@pytest.mark.parametrize("refit,weights", [("mean_std", "plain"), ("mean_std", "softmax"), ("mean", "plain")])
def test_cem_finds_the_optimum_of_a_quadratic_for_every_row(noise, beta, refit, weights):
    g = torch.Generator().manual_seed(0)
    # A different optimum per row, smooth in time (what correlated noise is for).
    target = torch.rand((3, 1, 2), generator=g) * 1.2 - 0.8 + 0.1 * torch.arange(5.0).view(1, 5, 1)
    init_std = 1.0 if refit == "mean_std" else 0.05
    iterations = 20 if refit == "mean_std" else 60
    res = cem(quadratic(target), batch=3, horizon=5, action_dim=2, candidates=400, iterations=iterations,
              elites=40, noise=noise, beta=beta, refit=refit, elite_weights=weights, temperature=1.0,
              init_std=init_std, generator=g)
    assert res.mean.shape == (3, 5, 2) and res.best_actions.shape == (3, 5, 2)
    assert (res.mean - target).abs().max() < 0.05
    assert (res.best_actions - target).abs().max() < 0.15
    # the cost curve: one mean elite score per iteration and row, rising as the belief narrows
    assert res.elite_scores.shape == (3, iterations)
    assert bool((res.elite_scores[:, -1] > res.elite_scores[:, 0]).all())
    # The best score is the score of best_actions, and no worse than the mean's.
    best = quadratic(target)(res.best_actions.unsqueeze(1)).squeeze(1)
    assert torch.allclose(best, res.best_score)


def test_cem_respects_action_bounds_and_finds_an_optimum_on_the_boundary():
    seen = []

    def score(actions):
        seen.append(actions)
        return actions.sum((2, 3))                                    # maximised at the upper bound
    low, high = torch.tensor([-0.5, 0.0]), torch.tensor([0.25, 2.0])
    res = cem(score, batch=2, horizon=4, action_dim=2, candidates=200, iterations=15, elites=20,
              low=low, high=high, generator=torch.Generator().manual_seed(1))
    every = torch.cat(seen)
    assert (every >= low).all() and (every <= high).all()
    assert torch.allclose(res.best_actions, high.expand(2, 4, 2), atol=0.05)


def test_cem_is_deterministic_under_a_seeded_generator():
    target = torch.zeros(1, 3, 1)
    a = cem(quadratic(target), batch=1, horizon=3, action_dim=1, candidates=50, iterations=3, elites=5,
            generator=torch.Generator().manual_seed(7))
    b = cem(quadratic(target), batch=1, horizon=3, action_dim=1, candidates=50, iterations=3, elites=5,
            generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.best_actions, b.best_actions)


def test_cem_rows_do_not_influence_each_other():
    g = torch.Generator().manual_seed(3)
    target = torch.rand((4, 6, 3), generator=g)
    full = cem(quadratic(target), batch=4, horizon=6, action_dim=3, candidates=300, iterations=8,
               elites=30, generator=torch.Generator().manual_seed(5))
    # Row 2 alone, scored by a function that only ever sees row 2: the same optimum.
    one = cem(quadratic(target[2:3]), batch=1, horizon=6, action_dim=3, candidates=300, iterations=8,
              elites=30, generator=torch.Generator().manual_seed(5))
    assert (full.mean[2] - target[2]).abs().max() < 0.05
    assert (one.mean[0] - target[2]).abs().max() < 0.05


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.2])
def test_correlated_noise_has_unit_variance_and_the_stated_autocorrelation(beta):
    g = torch.Generator().manual_seed(0)
    n = correlated_noise((20000, 12, 1), beta, time_dim=1, generator=g)[..., 0]   # (samples, time)
    assert n.var(0).sub(1).abs().max() < 0.05                                   # every step ~ N(0, 1)
    for lag in (1, 2, 4):
        corr = (n[:, :-lag] * n[:, lag:]).mean()
        assert abs(float(corr) - (1 - beta) ** lag) < 0.03, (lag, float(corr))


def test_cem_rejects_bad_settings_with_clear_messages():
    f = quadratic(torch.zeros(1, 2, 1))
    with pytest.raises(ValueError, match="elites"):
        cem(f, batch=1, horizon=2, action_dim=1, candidates=5, elites=6)
    with pytest.raises(ValueError, match="beta"):
        cem(f, batch=1, horizon=2, action_dim=1, candidates=5, elites=2, noise="correlated", beta=0.0)
    with pytest.raises(ValueError, match="low > high"):
        cem(f, batch=1, horizon=2, action_dim=1, candidates=5, elites=2, low=1.0, high=0.0)
    with pytest.raises(ValueError, match="score_fn must return"):
        cem(lambda a: a.sum(), batch=1, horizon=2, action_dim=1, candidates=5, elites=2)


def test_cem_handles_nan_scores_as_worst():
    def score(actions):
        s = -(actions ** 2).sum((2, 3))
        return torch.where(actions[..., 0, 0] > 0.5, torch.full_like(s, math.nan), s)
    res = cem(score, batch=1, horizon=1, action_dim=1, candidates=200, iterations=5, elites=20,
              generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.best_score).all() and res.mean.abs().max() < 0.1
