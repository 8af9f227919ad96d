"""GLAMOR's random-shooting planner: sample action sequences token by token, score, argmax.

Given an inverse dynamics model p_idm(a_1..a_k, END | s, g) and an action prior
p_prior(a_1..a_k, END | s), GLAMOR (eq. 8) picks

    argmax_{a_1..a_k}  gamma^k * p_idm(a_1..a_k, END | s, g) / p_prior(a_1..a_k, END | s).

Random shooting with guided proposals (paper 3.4 and A.3): all ``trials`` are sampled as
one batch. At each token, over the actions and END,

    z = log p_idm - log p_prior          (or log p_idm alone when the prior is off)

and the next token is drawn from softmax(z). Tokens whose immediate log p_idm is below
``clip_logp`` (the paper's clip-p-actions) are not expanded. A plan's score is the sum of z
over its tokens, END included, plus (number of actions) * log(gamma); the best-scoring
trial is returned.

Length rules: a plan has at most ``max_len`` actions (T - t at time t), so END is forced
at position ``max_len``. Under ``termination="plan_end"`` (paper 4.7.2) END may not be
drawn before that position either, so every plan is exactly ``max_len`` long.

``proposal="sparse"`` is the ablation of paper 4.7.3: tokens are drawn uniformly (subject
to the length rules only), so the intermediate probabilities do not guide the search; the
scoring is unchanged.

Choices where the paper is silent (documented in docs/glamor.md):
* The clip applies to action tokens only: END ends a plan rather than expanding it. (Clipping
  END too would forbid "END now" whenever p_idm(END | s, g) < e^-3.15, and under
  hindsight relabelling p_idm(END | s, g = s) is small even when s = g, because random
  walks that return to s outnumber the k = 0 samples.) If every action a row may take
  is clipped and END is not permitted (plan_end), the action with the highest log p_idm
  stays available, so a row can always continue (the authors' release set clipped z to
  -20, which has the same effect there).
* Sampling uses the Gumbel-max trick with noise drawn from a caller-supplied generator,
  so plans are reproducible under a fixed seed.

This module knows nothing of environments or encoders: it sees a token-stepping function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

# step(prev_tokens (R,)) -> log-probabilities (M, R, A+1): M = 2 gives (idm, prior), M = 1 idm only.
StepFn = Callable[[torch.Tensor], torch.Tensor]

Proposal = Literal["guided", "sparse"]
Termination = Literal["early", "plan_end"]

# Check whether every trial has ended only every few tokens: each check is a host sync.
_DONE_CHECK_EVERY = 4


@dataclass
class Plans:
    """Sampled plans for R rows. ``actions`` is padded with -1 after each plan's end."""
    actions: torch.Tensor   # (R, L) long
    lengths: torch.Tensor   # (R,) long, number of actions before END
    scores: torch.Tensor    # (R,) float


def sample_plans(step: StepFn, n_actions: int, max_len: torch.Tensor, *, use_prior: bool = True,
                 clip_logp: float | None = -3.15, gamma: float = 0.99,
                 proposal: Proposal = "guided", termination: Termination = "early",
                 generator: torch.Generator | None = None) -> Plans:
    """Sample one plan per row. ``max_len`` (R,) is each row's maximum number of actions."""
    rows = max_len.shape[0]
    device = max_len.device
    end = n_actions
    horizon = int(max_len.max()) if rows else 0
    tokens = torch.arange(n_actions + 1, device=device)
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    scores = torch.zeros(rows, device=device)
    actions = torch.full((rows, horizon), -1, dtype=torch.long, device=device)
    prev = torch.full((rows,), end, dtype=torch.long, device=device)   # plan start
    # Exponential noise for the Gumbel-max trick, drawn once for every token position.
    noise = torch.empty(horizon + 1, rows, n_actions + 1, device=device).exponential_(
        generator=generator).log_().neg_()
    is_end_col = tokens == end
    for i in range(horizon + 1):
        logp = step(prev)
        logp_idm = logp[0]
        z = logp_idm - logp[1] if use_prior else logp_idm
        # Hard length rules: END forced at max_len; under plan_end, END only there.
        at_limit = (max_len == i).unsqueeze(1)
        if termination == "plan_end":
            permitted = torch.where(at_limit, is_end_col, ~is_end_col)
        else:
            permitted = at_limit.logical_not() | is_end_col
        if proposal == "guided":
            allowed = permitted
            if clip_logp is not None:
                # END does not expand a plan, so only action tokens are clipped.
                allowed = permitted & ((logp_idm >= clip_logp) | is_end_col)
                # Never clip every permitted token: then the idm's favourite one stays open.
                favourite = torch.where(permitted, logp_idm, -math.inf).argmax(1, keepdim=True)
                stuck = allowed.any(1, keepdim=True).logical_not()
                allowed = allowed.scatter(1, favourite, stuck | allowed.gather(1, favourite))
            logits = torch.where(allowed, z, -math.inf)
        else:
            logits = torch.where(permitted, 0.0, -math.inf)
        token = (logits + noise[i]).argmax(1)
        is_end = token == end
        live = ~ended
        scores += torch.where(live, z.gather(1, token.unsqueeze(1)).squeeze(1), 0.0)
        if i < horizon:
            actions[:, i] = torch.where(live & ~is_end, token, -1)
        lengths += (live & ~is_end).long()
        ended |= is_end
        prev = token
        if (i + 1) % _DONE_CHECK_EVERY == 0 and bool(ended.all()):
            break
    scores += lengths.to(scores.dtype) * math.log(gamma)
    return Plans(actions=actions, lengths=lengths, scores=scores)


def best_of(plans: Plans, n_groups: int) -> Plans:
    """Argmax over trials: rows are laid out as (n_groups, trials), trials varying fastest."""
    trials = plans.scores.shape[0] // n_groups
    scores = plans.scores.view(n_groups, trials)
    best = scores.argmax(1) + torch.arange(n_groups, device=scores.device) * trials
    return Plans(actions=plans.actions[best], lengths=plans.lengths[best], scores=plans.scores[best])
