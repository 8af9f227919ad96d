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

This module knows nothing of environments, encoders or LSTMs: it sees a ``Stepper`` (below),
which ``nets.action_model.TokenStepper`` is, or a plain token-stepping function. There is one
token loop (``_token_loop``). ``trials`` is a parameter: the caller gives one row per state
and goal, and the planner asks the stepper for ``trials`` copies of each.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from dataclasses import dataclass
from typing import Callable, List, Literal, Protocol, Tuple

import torch

# step(prev_tokens (R,)) -> log-probabilities (M, R, A+1): M = 2 gives (idm, prior), M = 1 idm only.
StepFn = Callable[[torch.Tensor], torch.Tensor]
# advance(state, prev_tokens (R,)) -> (log-probabilities (M, R, A+1), next state).
AdvanceFn = Callable[[List[torch.Tensor], torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]

Proposal = Literal["guided", "sparse"]
Termination = Literal["early", "plan_end"]

# Check whether every trial has ended only every few tokens: each check is a host sync.
_DONE_CHECK_EVERY = 4

# How far (in nats) a clipped token is pushed below the unclipped ones: far more than any
# z + Gumbel noise spans, yet small enough that float32 still orders the clipped tokens by
# log p_idm (to about 0.01 nats), which decides the fallback when all are clipped.
_DEMOTE = 1e5


class Stepper(Protocol):
    """What the planner needs of a model of action sequences, one token at a time.

    ``rows`` is the number of distinct rows (one per state and goal). ``start(trials)``
    returns the initial state (a list of tensors) for ``rows * trials`` plans, row r's
    trials consecutive. ``advance(state, prev)`` takes every plan's previous token (R,)
    long, ``n_actions`` at the start of a plan, and returns the log-probabilities
    (M, R, A+1) over the actions and END, M = 2 for (idm, prior) or 1 for the idm alone,
    with the next state. If ``scriptable`` is true, ``advance`` is a function TorchScript
    compiles (e.g. a static method over tensors only) and the planner compiles its token
    loop around it; otherwise the loop runs eagerly.
    """

    rows: int
    scriptable: bool

    def start(self, trials: int) -> List[torch.Tensor]: ...

    def advance(self, state: List[torch.Tensor], prev: torch.Tensor
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]: ...


@dataclass
class Plans:
    """Sampled plans for R rows. ``actions`` is padded with -1 after each plan's end."""
    actions: torch.Tensor   # (R, L) long
    lengths: torch.Tensor   # (R,) long, number of actions before END
    scores: torch.Tensor    # (R,) float


class _FunctionStepper:
    """A plain ``step(prev)`` as a ``Stepper`` of one trial per row: it steps the rows it is
    given, so it cannot repeat them for more trials."""
    scriptable = False

    def __init__(self, step: StepFn, rows: int):
        self.step, self.rows = step, rows

    def start(self, trials: int) -> List[torch.Tensor]:
        if trials != 1:
            raise ValueError(f"trials={trials} needs a Stepper (start(trials), advance(state, prev)): "
                             "a plain step function steps exactly the rows it is given, one trial each")
        return []

    def advance(self, state: List[torch.Tensor], prev: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self.step(prev), state


def _trials(trials) -> int:
    try:
        trials = operator.index(trials)
    except TypeError:
        raise ValueError(f"trials must be an integer, got {trials!r}") from None
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    return trials


def sample_plans(step: Stepper | StepFn, n_actions: int, max_len: torch.Tensor, *, trials: int = 1,
                 use_prior: bool = True, clip_logp: float | None = -3.15, gamma: float = 0.99,
                 proposal: Proposal = "guided", termination: Termination = "early",
                 generator: torch.Generator | None = None) -> Plans:
    """Sample ``trials`` plans for each row; ``max_len`` (n,) is each row's maximum number
    of actions. Returns n * trials plans, row r's trials consecutive (rows r * trials to
    (r + 1) * trials - 1), as ``best_of(plans, n)`` expects.

    ``step`` is a ``Stepper`` with ``rows == n`` (a scriptable one gets the token loop
    compiled by TorchScript), or a plain function ``step(prev (n,)) -> (M, n, A+1)`` over
    the n rows, which allows ``trials=1`` only.
    """
    trials = _trials(trials)
    n = max_len.shape[0]
    stepper = step if hasattr(step, "advance") else _FunctionStepper(step, n)
    if stepper.rows != n:
        raise ValueError(f"the stepper has {stepper.rows} rows but max_len has {n}: give one max_len per "
                         f"state, not per trial (the planner repeats each row for trials={trials} itself)")
    state = stepper.start(trials)
    max_len = max_len.repeat_interleave(trials)
    rows = max_len.shape[0]
    device = max_len.device
    end = n_actions
    horizon = int(max_len.max()) if rows else 0
    positions = horizon + 1                      # up to horizon actions, then END
    # The length rules depend only on (position, row): one additive mask for all positions,
    # 0 where a token is permitted and -inf where it is not, folded into the noise.
    position = torch.arange(positions, device=device).view(-1, 1, 1)
    at_limit = position == max_len.view(1, -1, 1)
    is_end_col = torch.arange(n_actions + 1, device=device) == end
    if termination == "plan_end":
        permitted = torch.where(at_limit, is_end_col, ~is_end_col)
    else:
        permitted = at_limit.logical_not() | is_end_col
    block = torch.zeros(permitted.shape, device=device).masked_fill_(~permitted, -math.inf)
    # Gumbel noise for the Gumbel-max trick, drawn once for every position (from uniforms:
    # exponential_ is several times slower on the CPU). The clamp keeps it finite.
    noise = torch.rand(positions, rows, n_actions + 1, device=device, generator=generator)
    noise_blocked = noise.clamp_(min=1e-10).log_().neg_().log_().neg_().add_(block)
    guided = proposal == "guided"
    clip = guided and clip_logp is not None
    # END does not expand a plan, so only action tokens are clipped.
    threshold = torch.full((n_actions + 1,), float(clip_logp) if clip else -math.inf, device=device)
    threshold[end] = -math.inf
    demoted = block - _DEMOTE
    loop = _scripted_token_loop(stepper.advance) if stepper.scriptable else _token_loop(stepper.advance)
    tokens, z, last = loop(state, noise_blocked, demoted, threshold, use_prior, guided, clip, end,
                           _DONE_CHECK_EVERY)
    return _assemble(tokens[:last + 1], z[:last + 1], end, horizon, gamma)


def shoot(step: Stepper | StepFn, n_actions: int, max_len: torch.Tensor, *, trials: int, **options) -> Plans:
    """Random shooting: the best of ``trials`` sampled plans for each row of ``max_len`` (n,).
    ``options`` are those of ``sample_plans``."""
    return best_of(sample_plans(step, n_actions, max_len, trials=trials, **options), max_len.shape[0])


def _choose_token(z: torch.Tensor, logp_idm: torch.Tensor, noise_blocked: torch.Tensor,
                  demoted: torch.Tensor, threshold: torch.Tensor, guided: bool, clip: bool) -> torch.Tensor:
    """The sampling rule at one position: Gumbel-max over the permitted, unclipped tokens."""
    if not guided:
        return noise_blocked.argmax(1)
    if not clip:
        return (z + noise_blocked).argmax(1)
    # A clipped token is demoted below every unclipped one rather than removed, so if a row
    # has nothing unclipped left the idm's favourite permitted token wins.
    return torch.where(logp_idm < threshold, logp_idm + demoted, z + noise_blocked).argmax(1)


def _take_position(i: int, logp: torch.Tensor, tokens: torch.Tensor, zs: torch.Tensor,
                   noise_blocked: torch.Tensor, demoted: torch.Tensor, threshold: torch.Tensor,
                   use_prior: bool, guided: bool, clip: bool) -> torch.Tensor:
    """Position i of the token loop: choose each row's token from logp (M, R, A+1), record
    the token and z, return the tokens."""
    z = logp[0] - logp[1] if use_prior else logp[0]
    token = _choose_token(z, logp[0], noise_blocked[i], demoted[i], threshold, guided, clip)
    tokens[i] = token
    zs[i] = z
    return token


def _all_ended(tokens: torch.Tensor, upto: int, end: int) -> bool:
    return bool((tokens[:upto] == end).any(0).all())


def _token_loop(advance: AdvanceFn):
    """The planner's token loop, bound to a stepper's ``advance``. It returns
    loop(state, noise_blocked, ...) -> (tokens (P, R), z (P, R, A+1), last position).

    A closure rather than a function of ``advance``: TorchScript cannot take a function as
    an argument, but it compiles one the loop closes over (``_scripted_token_loop``), so
    the same loop runs compiled for a scriptable stepper and eagerly for any other."""

    def loop(state: List[torch.Tensor], noise_blocked: torch.Tensor, demoted: torch.Tensor,
             threshold: torch.Tensor, use_prior: bool, guided: bool, clip: bool, end: int,
             check_every: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        positions, rows, vocab = noise_blocked.shape
        tokens = torch.empty(positions, rows, dtype=torch.long, device=noise_blocked.device)
        zs = torch.empty(positions, rows, vocab, device=noise_blocked.device)
        prev = torch.full((rows,), end, dtype=torch.long, device=noise_blocked.device)   # plan start
        for i in range(positions):
            logp, state = advance(state, prev)
            prev = _take_position(i, logp, tokens, zs, noise_blocked, demoted, threshold,
                                  use_prior, guided, clip)
            if (i + 1) % check_every == 0 and _all_ended(tokens, i + 1, end):
                return tokens, zs, i
        return tokens, zs, positions - 1

    return loop


@functools.cache
def _scripted_token_loop(advance: AdvanceFn):
    """The token loop compiled by TorchScript around a scriptable ``advance``, once per
    ``advance`` (about a third faster on the CPU for the LSTM stepper: the cost is per-op
    overhead); the eager loop where TorchScript fails."""
    try:
        with warnings.catch_warnings():
            # Deprecated in favour of torch.compile, which was no faster for this loop here
            # and takes ~20 s to compile cold; the eager fallback keeps working either way.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(_token_loop(advance))
    except Exception as err:  # TorchScript is in maintenance; never let it break planning
        warnings.warn(f"TorchScript could not compile the planner loop ({err}); planning runs eagerly")
        return _token_loop(advance)


def _assemble(tokens: torch.Tensor, zs: torch.Tensor, end: int, horizon: int, gamma: float) -> Plans:
    """Plans from the sampled tokens: each row's plan ends at its first END."""
    positions, rows = tokens.shape
    lengths = (tokens == end).int().argmax(0)     # every row draws END by its max_len
    live = torch.arange(positions, device=tokens.device).unsqueeze(1) <= lengths.unsqueeze(0)
    chosen = zs.gather(2, tokens.unsqueeze(2)).squeeze(2)
    scores = torch.where(live, chosen, 0.0).sum(0) + lengths.to(chosen.dtype) * math.log(gamma)
    actions = torch.full((rows, horizon), -1, dtype=torch.long, device=tokens.device)
    n = min(positions, horizon)
    actions[:, :n] = torch.where(live[:n] & (tokens[:n] != end), tokens[:n], -1).t()
    return Plans(actions=actions, lengths=lengths.long(), scores=scores)


def best_of(plans: Plans, n_groups: int) -> Plans:
    """Argmax over trials: rows are laid out as (n_groups, trials), trials varying fastest."""
    rows = plans.scores.shape[0]
    if n_groups < 1 or rows % n_groups:
        raise ValueError(f"best_of: {rows} plans cannot be {n_groups} groups of equal trials")
    trials = rows // n_groups
    scores = plans.scores.view(n_groups, trials)
    best = scores.argmax(1) + torch.arange(n_groups, device=scores.device) * trials
    return Plans(actions=plans.actions[best], lengths=plans.lengths[best], scores=plans.scores[best])
