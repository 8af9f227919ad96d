"""The cross-entropy method (CEM) over continuous action sequences, batched over env rows.

PlaNet (Algorithm 2) and MBOLD (A.2) plan with CEM: keep a time-dependent diagonal Gaussian
over action sequences of length ``horizon``; ``iterations`` times, sample ``candidates``
sequences, score them with a model, and refit the Gaussian to the best ``elites``. The
planner owns the search; the caller supplies only a batched score function::

    score_fn(actions: (B, J, H, A) tensor) -> (B, J) scores   (higher is better)

where B is the number of env rows planned for at once and J = ``candidates``. Every row's
candidates are scored in one call: no Python loop over candidates or rows, and no host sync
inside the iteration loop.

Options, each from one of the papers or a common variant of CEM:

* ``noise``: ``"white"`` draws each time step independently (PlaNet). ``"correlated"`` draws
  an AR(1) process along the horizon, the filtering of Nagabandi et al. (2020) that MBOLD
  uses to make sequences smoother: with u_t standard normal,
  ``n_0 = u_0`` and ``n_t = (1 - beta) n_{t-1} + sqrt(1 - (1 - beta)^2) u_t``. Each n_t is
  standard normal and the correlation of n_t and n_{t+l} is ``(1 - beta)^l``; beta = 1 is
  white noise. (Nagabandi et al. write ``n_t = beta u_t + (1 - beta) n_{t-1}``, whose variance
  shrinks with beta; we rescale so that ``init_std`` and the refitted std mean what they say
  whatever beta is.)
* ``refit``: ``"mean_std"`` refits mean and std to the elites (PlaNet); ``"mean"`` refits the
  mean only and keeps the initial std.
* ``elite_weights``: ``"plain"`` averages the elites equally (PlaNet); ``"softmax"`` weights
  them by ``softmax(score / temperature)`` (as MPPI-style variants do).
* ``momentum``: the new mean and std are ``momentum * old + (1 - momentum) * fitted`` (0 =
  plain refit, the papers' choice).
* Samples are clipped to ``[low, high]`` before scoring, so the score and the refit see the
  actions that would be executed.

The result gives the refitted mean (PlaNet executes its first step), the best sequence ever
scored with its score (MBOLD returns "the best action found so far"), and each iteration's
mean elite score (the planner's cost curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Noise = Literal["white", "correlated"]
Refit = Literal["mean_std", "mean"]
EliteWeights = Literal["plain", "softmax"]


@dataclass
class CEMResult:
    mean: torch.Tensor          # (B, H, A): the final belief's mean
    std: torch.Tensor           # (B, H, A): the final belief's std
    best_actions: torch.Tensor  # (B, H, A): the best sequence scored in any iteration
    best_score: torch.Tensor    # (B,)
    elite_scores: torch.Tensor | None = None  # (B, I): each iteration's mean elite score (the cost curve)


def correlated_noise(shape: tuple[int, ...], beta: float, *, time_dim: int = -2,
                     generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise that is AR(1) along ``time_dim`` with lag-l correlation (1 - beta)^l."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1] (1 = white noise), got {beta}")
    u = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if beta == 1.0:
        return u
    u = u.movedim(time_dim, 0)
    rho = 1.0 - beta
    scale = math.sqrt(1.0 - rho * rho)
    out = torch.empty_like(u)
    out[0] = u[0]
    for t in range(1, len(u)):                  # horizon steps, not candidates: short
        out[t] = rho * out[t - 1] + scale * u[t]
    return out.movedim(0, time_dim)


def cem(score_fn: ScoreFn, *, batch: int, horizon: int, action_dim: int,
        candidates: int = 1000, iterations: int = 10, elites: int = 100,
        low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0,
        init_mean: torch.Tensor | None = None, init_std: float | torch.Tensor = 1.0,
        min_std: float = 0.0, noise: Noise = "white", beta: float = 1.0,
        refit: Refit = "mean_std", elite_weights: EliteWeights = "plain", temperature: float = 1.0,
        momentum: float = 0.0, generator: torch.Generator | None = None,
        device: torch.device | str | None = None) -> CEMResult:
    """Maximise ``score_fn`` over action sequences of shape (horizon, action_dim), per row.

    Defaults are PlaNet's (J = 1000, I = 10, K = 100, white noise, mean and std refit,
    starting from zero mean and unit std). ``low``/``high`` are scalars or (action_dim,)
    bounds; ``init_mean`` is (B, H, A) or broadcastable to it (e.g. a shifted previous plan).
    """
    _check(batch=batch, horizon=horizon, action_dim=action_dim, candidates=candidates,
           iterations=iterations, elites=elites, temperature=temperature, momentum=momentum,
           min_std=min_std)
    if elites > candidates:
        raise ValueError(f"elites ({elites}) must not exceed candidates ({candidates})")
    if noise not in ("white", "correlated"):
        raise ValueError(f"noise must be 'white' or 'correlated', got {noise!r}")
    if refit not in ("mean_std", "mean"):
        raise ValueError(f"refit must be 'mean_std' or 'mean', got {refit!r}")
    if elite_weights not in ("plain", "softmax"):
        raise ValueError(f"elite_weights must be 'plain' or 'softmax', got {elite_weights!r}")
    shape = (batch, horizon, action_dim)
    low_t = torch.as_tensor(low, dtype=torch.float32, device=device).expand(action_dim)
    high_t = torch.as_tensor(high, dtype=torch.float32, device=device).expand(action_dim)
    if bool((low_t > high_t).any()):
        raise ValueError(f"action bounds have low > high: low={low_t.tolist()}, high={high_t.tolist()}")
    mean = (torch.zeros(shape, device=device) if init_mean is None
            else torch.as_tensor(init_mean, dtype=torch.float32, device=device).expand(shape).clone())
    std0 = torch.as_tensor(init_std, dtype=torch.float32, device=device).expand(shape).clone()
    std = std0.clone()
    best_score = torch.full((batch,), -math.inf, device=device)
    best_actions = mean.clone()
    rows = torch.arange(batch, device=device)
    elite_means = []
    for _ in range(iterations):
        sample_shape = (batch, candidates, horizon, action_dim)
        if noise == "white":
            eps = torch.randn(sample_shape, generator=generator, device=device)
        else:
            eps = correlated_noise(sample_shape, beta, time_dim=2, generator=generator, device=device)
        actions = torch.maximum(torch.minimum(mean.unsqueeze(1) + std.unsqueeze(1) * eps, high_t), low_t)
        scores = score_fn(actions)
        if scores.shape != (batch, candidates):
            raise ValueError(f"score_fn must return shape {(batch, candidates)}, got {tuple(scores.shape)}")
        scores = torch.nan_to_num(scores.float(), nan=-math.inf)
        top_scores, top = scores.topk(elites, dim=1)                     # (B, K)
        elite_means.append(top_scores.mean(1))
        elite = actions[rows.unsqueeze(1), top]                          # (B, K, H, A)
        better = top_scores[:, 0] > best_score
        best_score = torch.where(better, top_scores[:, 0], best_score)
        best_actions = torch.where(better[:, None, None], elite[:, 0], best_actions)
        if elite_weights == "plain":
            w = torch.full_like(top_scores, 1.0 / elites)
        else:
            finite = torch.where(torch.isfinite(top_scores), top_scores, top_scores.new_tensor(-1e30))
            w = torch.softmax(finite / temperature, dim=1)
        w = w[:, :, None, None]
        fit_mean = (w * elite).sum(1)
        new_mean = momentum * mean + (1 - momentum) * fit_mean
        if refit == "mean_std":
            fit_std = (w * (elite - fit_mean.unsqueeze(1)) ** 2).sum(1).sqrt()
            std = (momentum * std + (1 - momentum) * fit_std).clamp_min(min_std)
        mean = new_mean
    return CEMResult(mean=mean, std=std, best_actions=best_actions, best_score=best_score,
                     elite_scores=torch.stack(elite_means, 1))


def _check(**values) -> None:
    for name in ("batch", "horizon", "action_dim", "candidates", "iterations", "elites"):
        if int(values[name]) < 1:
            raise ValueError(f"CEM {name} must be >= 1, got {values[name]}")
    if values["temperature"] <= 0:
        raise ValueError(f"CEM temperature must be > 0, got {values['temperature']}")
    if not 0 <= values["momentum"] < 1:
        raise ValueError(f"CEM momentum must be in [0, 1), got {values['momentum']}")
    if values["min_std"] < 0:
        raise ValueError(f"CEM min_std must be >= 0, got {values['min_std']}")
