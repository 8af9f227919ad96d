"""The random-shooting planner (pixelplan.planners.shooting) against brute-force enumeration.

The "model" is a fixed table of log-probabilities indexed by (table id of the row, token
position, previous token): every plan's score can then be computed by hand, and every
possible plan can be enumerated for small vocabularies and horizons.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pixelplan.planners.shooting import Plans, best_of, sample_plans, shoot


class TableModel:
    """Deterministic stand-in for the stacked (idm, prior) token steppers.

    ``logp[m, table, pos, prev]`` is a log-distribution over the A actions and END; rows use
    the table ``row_table[row]``. ``prev == n_actions`` is the start of the plan (or END).
    """

    def __init__(self, n_actions: int, horizon: int, n_models: int, n_tables: int = 1, seed: int = 0,
                 scale: float = 1.5):
        g = torch.Generator().manual_seed(seed)
        self.n_actions = n_actions
        self.end = n_actions
        shape = (n_models, n_tables, horizon + 1, n_actions + 1, n_actions + 1)
        self.logits = torch.randn(shape, generator=g, dtype=torch.float64) * scale

    @property
    def logp(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, -1)

    def z(self, use_prior: bool) -> torch.Tensor:
        """(table, pos, prev, token) token scores in float64."""
        lp = self.logp
        return lp[0] - lp[1] if use_prior else lp[0]

    def step_fn(self, row_table: torch.Tensor):
        table = self.logp.float()
        calls = []

        def step(prev: torch.Tensor) -> torch.Tensor:
            assert prev.shape == row_table.shape and prev.dtype == torch.long
            assert ((prev >= 0) & (prev <= self.n_actions)).all()
            i = len(calls)
            calls.append(prev.clone())
            return table[:, row_table, i, prev]          # (M, R, A+1)

        step.calls = calls
        return step

    def stepper(self, row_table: torch.Tensor) -> "TableStepper":
        return TableStepper(self.logp.float(), row_table)


class TableStepper:
    """The table model as a planner ``Stepper``: one row per entry of ``row_table``, which
    the planner repeats for its trials through ``start``."""
    scriptable = False

    def __init__(self, table: torch.Tensor, row_table: torch.Tensor):
        self.table, self.row_table, self.rows = table, row_table, len(row_table)
        self.started = []

    def start(self, trials: int) -> list[torch.Tensor]:
        self.started.append(trials)
        return [self.row_table.repeat_interleave(trials), torch.zeros((), dtype=torch.long)]

    def advance(self, state, prev):
        row_table, i = state
        return self.table[:, row_table, int(i), prev], [row_table, i + 1]


def brute_score(z: torch.Tensor, seq, end: int, gamma: float) -> float:
    """Sum of z over the tokens of ``seq`` then END, plus len(seq) * log(gamma)."""
    prev, total = end, 0.0
    for i, a in enumerate(seq):
        total += float(z[i, prev, a])
        prev = a
    total += float(z[len(seq), prev, end])
    return total + len(seq) * math.log(gamma)


def every_plan(n_actions: int, max_len: int, exact: bool = False):
    lengths = [max_len] if exact else range(max_len + 1)
    for k in lengths:
        yield from itertools.product(range(n_actions), repeat=k)


def brute_best(z, n_actions, max_len, gamma, exact=False):
    scored = sorted(((brute_score(z, seq, n_actions, gamma), seq)
                     for seq in every_plan(n_actions, max_len, exact)), reverse=True)
    (best_score, best), (second, _) = scored[0], scored[1] if len(scored) > 1 else (-math.inf, None)
    return best, best_score, best_score - second


def plan_rows(plans: Plans):
    """Per row: the action sequence, checking the -1 padding after the end on the way."""
    out = []
    for r in range(plans.actions.shape[0]):
        k = int(plans.lengths[r])
        row = plans.actions[r].tolist()
        assert all(a == -1 for a in row[k:]), f"row {r}: actions after the end must be -1, got {row}"
        assert all(a >= 0 for a in row[:k]), f"row {r}: a -1 inside the plan: {row} (length {k})"
        out.append(tuple(row[:k]))
    return out


def token_path(seq, end):
    """(position, previous token, token) for every token of a plan, END included."""
    prev = end
    for i, tok in enumerate(list(seq) + [end]):
        yield i, prev, tok
        prev = tok


def permitted_tokens(i: int, max_len: int, n_actions: int, termination: str) -> list[int]:
    if i == max_len:
        return [n_actions]
    return list(range(n_actions)) if termination == "plan_end" else list(range(n_actions + 1))


CASES = [  # n_actions, max_len, use_prior, termination
    (2, 4, True, "early"),
    (3, 3, True, "early"),
    (2, 4, False, "early"),
    (3, 3, False, "early"),
    (2, 3, True, "plan_end"),
    (3, 3, False, "plan_end"),
]


# ------------------------------------------------------------------ (a) scores
@pytest.mark.parametrize("n_actions,max_len,use_prior,termination", CASES)
def test_every_sampled_plan_has_its_brute_force_score(n_actions, max_len, use_prior, termination):
    model = TableModel(n_actions, max_len, 2 if use_prior else 1, n_tables=3, seed=n_actions * 10 + max_len)
    rows = 600
    row_table = torch.arange(rows) % 3
    limits = torch.arange(rows) // 3 % (max_len + 1)       # every limit 0..max_len, every table
    gamma = 0.8
    plans = sample_plans(model.step_fn(row_table), n_actions, limits, use_prior=use_prior, clip_logp=None,
                         gamma=gamma, termination=termination, generator=torch.Generator().manual_seed(1))
    assert plans.actions.shape == (rows, max_len) and plans.actions.dtype == torch.long
    assert plans.lengths.shape == (rows,) and plans.scores.shape == (rows,)
    z = model.z(use_prior)
    seen = set()
    for r, seq in enumerate(plan_rows(plans)):
        assert len(seq) <= int(limits[r])
        assert all(0 <= a < n_actions for a in seq)
        expected = brute_score(z[int(row_table[r])], seq, n_actions, gamma)
        assert float(plans.scores[r]) == pytest.approx(expected, abs=1e-5), (r, seq)
        seen.add((int(limits[r]), len(seq)))
    # Sanity: the sample covers many plan lengths, so the check above saw varied plans.
    assert len(seen) >= (max_len + 1 if termination == "plan_end" else 2 * max_len)


# --------------------------------------------------------------- (b) best_of
def guided_probability(z, seq, n_actions, max_len, termination):
    """Probability that guided sampling (no clip) proposes ``seq`` then END."""
    p = 1.0
    for i, prev, tok in token_path(seq, n_actions):
        allowed = permitted_tokens(i, max_len, n_actions, termination)
        p *= float(torch.softmax(z[i, prev, allowed], 0)[allowed.index(tok)])
    return p


@pytest.mark.parametrize("n_actions,max_len,use_prior,termination", CASES)
def test_best_of_finds_the_brute_force_best_plan(n_actions, max_len, use_prior, termination):
    n_groups, trials, gamma = max_len + 1, 6000, 0.7
    model = TableModel(n_actions, max_len, 2 if use_prior else 1, n_tables=n_groups, seed=100 + max_len)
    groups = torch.arange(n_groups)                           # one table per group
    limits = groups.clone()                                   # group g plans at most (or exactly) g actions
    best = shoot(model.stepper(groups), n_actions, limits, trials=trials, use_prior=use_prior, clip_logp=None,
                 gamma=gamma, termination=termination, generator=torch.Generator().manual_seed(2))
    assert best.actions.shape == (n_groups, max_len)
    z = model.z(use_prior)
    exact = termination == "plan_end"
    for g, seq in enumerate(plan_rows(best)):
        want, want_score, gap = brute_best(z[g], n_actions, g, gamma, exact)
        assert gap > 1e-4, "test tables must have a unique best plan"
        # The search had a fair chance: missing the best plan in every trial is negligible.
        p = guided_probability(z[g], want, n_actions, g, termination)
        assert (1 - p) ** trials < 1e-6
        assert seq == want, f"group {g}: planner chose {seq}, brute force best is {want}"
        assert float(best.scores[g]) == pytest.approx(want_score, abs=1e-5)
        assert int(best.lengths[g]) == len(want)


def test_best_of_picks_the_argmax_row_of_each_group():
    # Rows laid out as (groups, trials) with trials varying fastest.
    actions = torch.arange(12).view(6, 2)
    plans = Plans(actions=actions, lengths=torch.arange(6),
                  scores=torch.tensor([0.0, 2.0, 1.0, -1.0, 5.0, 4.0]))
    best = best_of(plans, 2)
    assert best.scores.tolist() == [2.0, 5.0]
    assert best.lengths.tolist() == [1, 4]
    assert best.actions.tolist() == [[2, 3], [8, 9]]


# ---------------------------------------------------- (b') trials, a parameter
@pytest.mark.parametrize("termination,clip", [("early", -3.15), ("plan_end", None)])
def test_trials_gives_exactly_the_plans_of_the_explicit_repeat(termination, clip):
    # `trials=N` over one row per state must be the old layout exactly: every row repeated
    # N times consecutively (stepper rows and max_len alike), same noise, same plans, same scores.
    n_actions, trials = 3, 7
    model = TableModel(n_actions, 4, 2, n_tables=4, seed=17, scale=2.0)
    row_table = torch.tensor([2, 0, 3, 1, 0])
    limits = torch.tensor([4, 0, 2, 3, 1])
    kw = dict(clip_logp=clip, termination=termination, gamma=0.9)
    stepper = model.stepper(row_table)
    plans = sample_plans(stepper, n_actions, limits, trials=trials, generator=torch.Generator().manual_seed(4), **kw)
    assert stepper.started == [trials]
    explicit = sample_plans(model.step_fn(row_table.repeat_interleave(trials)), n_actions,
                            limits.repeat_interleave(trials), generator=torch.Generator().manual_seed(4), **kw)
    assert plans.actions.shape == (len(limits) * trials, 4)
    assert torch.equal(plans.actions, explicit.actions)
    assert torch.equal(plans.lengths, explicit.lengths)
    assert torch.equal(plans.scores, explicit.scores)
    assert (plans.lengths.view(-1, trials) <= limits.view(-1, 1)).all()
    assert len(set(map(tuple, plans.actions.tolist()))) > 5       # the trials do differ
    best = shoot(model.stepper(row_table), n_actions, limits, trials=trials,
                 generator=torch.Generator().manual_seed(4), **kw)
    want = best_of(explicit, len(limits))
    assert torch.equal(best.actions, want.actions) and torch.equal(best.scores, want.scores)


def test_trials_that_do_not_match_the_rows_are_a_clear_error():
    model = TableModel(2, 3, 2, seed=18)
    row_table, limits = torch.tensor([0, 0]), torch.tensor([3, 2])
    # The old habit: max_len repeated for the trials while the stepper has one row per state.
    with pytest.raises(ValueError, match="2 rows but max_len has 6"):
        sample_plans(model.stepper(row_table), 2, limits.repeat_interleave(3), trials=3)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="trials must be >= 1"):
            sample_plans(model.stepper(row_table), 2, limits, trials=bad)
    with pytest.raises(ValueError, match="trials must be an integer"):
        shoot(model.stepper(row_table), 2, limits, trials=2.0)
    # A plain step function steps the rows it is given: it cannot make more trials.
    with pytest.raises(ValueError, match="needs a Stepper"):
        sample_plans(model.step_fn(row_table), 2, limits, trials=2)


# ------------------------------------------------------------ (c) END rules
def test_per_row_max_len_and_zero_length_rows():
    n_actions, gamma = 3, 0.9
    model = TableModel(n_actions, 4, 2, seed=7)
    limits = torch.tensor([0, 4, 1, 0, 2, 3] * 300)
    plans = sample_plans(model.step_fn(torch.zeros(len(limits), dtype=torch.long)), n_actions, limits,
                         clip_logp=None, gamma=gamma, generator=torch.Generator().manual_seed(3))
    assert plans.actions.shape[1] == 4
    z = model.z(True)[0]
    seqs = plan_rows(plans)
    for m in range(5):
        rows = (limits == m).nonzero().flatten().tolist()
        lengths = {len(seqs[r]) for r in rows}
        assert max(lengths) <= m
        if m == 0:
            assert lengths == {0}
            for r in rows:
                assert float(plans.scores[r]) == pytest.approx(float(z[0, n_actions, n_actions]), abs=1e-6)
                assert (plans.actions[r] == -1).all()
        else:
            assert m in lengths      # the limit is reached, and END is taken there


def test_end_is_forced_at_max_len_even_when_unlikely():
    n_actions = 2
    model = TableModel(n_actions, 5, 2, seed=8)
    model.logits[0, ..., n_actions] = -30.0     # the idm all but rules END out
    limits = torch.tensor([0, 1, 2, 3, 5] * 40)
    plans = sample_plans(model.step_fn(torch.zeros(len(limits), dtype=torch.long)), n_actions, limits,
                         clip_logp=None, generator=torch.Generator().manual_seed(4))
    assert torch.equal(plans.lengths, limits)
    z = model.z(True)[0]
    for r, seq in enumerate(plan_rows(plans)):
        assert float(plans.scores[r]) == pytest.approx(brute_score(z, seq, n_actions, 0.99), abs=1e-4)


# ------------------------------------------------------ (d) plan_end rule
@pytest.mark.parametrize("proposal", ["guided", "sparse"])
def test_plan_end_plans_are_exactly_max_len_long(proposal):
    n_actions = 3
    model = TableModel(n_actions, 4, 2, seed=9)
    model.logits[0, ..., n_actions] = 30.0      # the idm wants END at once, everywhere
    limits = torch.tensor([0, 4, 2, 1, 3] * 60)
    plans = sample_plans(model.step_fn(torch.zeros(len(limits), dtype=torch.long)), n_actions, limits,
                         termination="plan_end", proposal=proposal, clip_logp=-3.15,
                         generator=torch.Generator().manual_seed(5))
    assert torch.equal(plans.lengths, limits)
    seqs = plan_rows(plans)
    assert all(len(s) == int(m) for s, m in zip(seqs, limits))
    z = model.z(True)[0]
    for r, seq in enumerate(seqs):
        assert float(plans.scores[r]) == pytest.approx(brute_score(z, seq, n_actions, 0.99), abs=1e-4)


def test_early_termination_takes_end_when_the_idm_wants_it():
    # Contrast with the plan_end test: the same table under "early" ends at once.
    n_actions = 3
    model = TableModel(n_actions, 4, 2, seed=9)
    model.logits[0, ..., n_actions] = 30.0
    limits = torch.tensor([0, 4, 2, 1, 3] * 60)
    plans = sample_plans(model.step_fn(torch.zeros(len(limits), dtype=torch.long)), n_actions, limits,
                         generator=torch.Generator().manual_seed(5))
    assert (plans.lengths == 0).all()


# ------------------------------------------------------------- (e) clipping
def clip_violations(plans, model, limits, clip, termination, row_table):
    """(tokens below the clip taken while a permitted one was above, fallback tokens that
    were not the idm's favourite, count of positions where every permitted token was clipped)."""
    lp_idm = model.logp[0]
    below_taken, bad_fallback, all_clipped = 0, 0, 0
    for r, seq in enumerate(plan_rows(plans)):
        t = int(row_table[r])
        for i, prev, tok in token_path(seq, model.end):
            allowed = permitted_tokens(i, int(limits[r]), model.n_actions, termination)
            lp = lp_idm[t, i, prev]
            assert tok in allowed
            # END is never clipped (it ends a plan, it does not expand it).
            if any(a == model.end or float(lp[a]) >= clip for a in allowed):
                below_taken += tok != model.end and float(lp[tok]) < clip
            else:
                all_clipped += 1
                favourite = max(allowed, key=lambda a: float(lp[a]))
                bad_fallback += tok != favourite
    return below_taken, bad_fallback, all_clipped


@pytest.mark.parametrize("termination", ["early", "plan_end"])
def test_clipped_tokens_are_never_expanded(termination):
    n_actions, clip = 3, -3.15
    model = TableModel(n_actions, 4, 2, n_tables=4, seed=11, scale=3.0)
    rows = 2000
    row_table = torch.arange(rows) % 4
    limits = torch.arange(rows) // 4 % 5
    kw = dict(termination=termination, generator=torch.Generator().manual_seed(6))
    plans = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=clip, **kw)
    below, bad_fallback, _ = clip_violations(plans, model, limits, clip, termination, row_table)
    assert below == 0
    assert bad_fallback == 0
    # Teeth: without the clip, the same tables do draw tokens below the floor.
    kw["generator"] = torch.Generator().manual_seed(6)
    unclipped = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=None, **kw)
    assert clip_violations(unclipped, model, limits, clip, termination, row_table)[0] > 50


def test_end_is_never_clipped_so_a_fully_clipped_row_ends():
    n_actions, clip = 3, -0.5
    model = TableModel(n_actions, 4, 2, n_tables=4, seed=12, scale=3.0)
    model.logits[0] *= 0.05        # every idm log-prob about -log 4, below the clip
    rows = 400
    row_table = torch.arange(rows) % 4
    limits = 1 + torch.arange(rows) // 4 % 4
    plans = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=clip, termination="early",
                         generator=torch.Generator().manual_seed(7))
    assert (plans.lengths == 0).all()
    free = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=None, termination="early",
                        generator=torch.Generator().manual_seed(7))
    assert (free.lengths > 0).sum() > rows // 2


@pytest.mark.parametrize("termination", ["plan_end"])
def test_when_every_permitted_token_is_clipped_the_idm_favourite_is_taken(termination):
    n_actions, clip = 3, -0.5
    model = TableModel(n_actions, 4, 2, n_tables=4, seed=12, scale=3.0)
    # A nearly flat idm (every log-prob about -log 4 < clip) and a sharp prior, so the
    # z-favourite is rarely the idm-favourite.
    model.logits[0] *= 0.05
    rows = 800
    row_table = torch.arange(rows) % 4
    limits = torch.arange(rows) // 4 % 5
    plans = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=clip, termination=termination,
                         generator=torch.Generator().manual_seed(7))
    below, bad_fallback, all_clipped = clip_violations(plans, model, limits, clip, termination, row_table)
    assert all_clipped > rows          # the fallback case is what this test exercises
    assert bad_fallback == 0
    # Scores are still z sums, whatever the clip did to the proposals.
    z = model.z(True)
    for r, seq in enumerate(plan_rows(plans)):
        assert float(plans.scores[r]) == pytest.approx(
            brute_score(z[int(row_table[r])], seq, n_actions, 0.99), abs=1e-4)
    # Teeth: unclipped sampling from softmax(z) leaves the idm favourite often.
    free = sample_plans(model.step_fn(row_table), n_actions, limits, clip_logp=None, termination=termination,
                        generator=torch.Generator().manual_seed(7))
    assert clip_violations(free, model, limits, clip, termination, row_table)[1] > 100


# --------------------------------------------- (f) proposals: guided vs sparse
def first_token_frequencies(plans: Plans, n_actions: int) -> torch.Tensor:
    first = torch.where(plans.lengths > 0, plans.actions[:, 0], n_actions)
    return torch.bincount(first, minlength=n_actions + 1).double() / len(first)


def test_guided_proposal_draws_from_softmax_z():
    n_actions, rows = 3, 20000
    model = TableModel(n_actions, 3, 2, seed=13, scale=2.0)
    limits = torch.full((rows,), 3)
    plans = sample_plans(model.step_fn(torch.zeros(rows, dtype=torch.long)), n_actions, limits,
                         clip_logp=None, generator=torch.Generator().manual_seed(8))
    want = torch.softmax(model.z(True)[0, 0, n_actions], 0)
    assert torch.allclose(first_token_frequencies(plans, n_actions), want, atol=0.02)


@pytest.mark.parametrize("termination", ["early", "plan_end"])
def test_sparse_proposal_ignores_z_but_scores_with_it(termination):
    n_actions, rows, max_len = 3, 20000, 3
    model = TableModel(n_actions, max_len, 2, seed=14, scale=2.0)
    model.logits[0, ..., 0] = 20.0      # z all but forces action 0 under guided proposals
    limits = torch.full((rows,), max_len)
    kw = dict(clip_logp=-3.15, termination=termination, generator=torch.Generator().manual_seed(9))
    plans = sample_plans(model.step_fn(torch.zeros(rows, dtype=torch.long)), n_actions, limits,
                         proposal="sparse", **kw)
    freq = first_token_frequencies(plans, n_actions)
    n_choices = n_actions if termination == "plan_end" else n_actions + 1
    want = torch.full((n_actions + 1,), 1.0 / n_choices, dtype=torch.float64)
    if termination == "plan_end":
        want[n_actions] = 0.0
    assert torch.allclose(freq, want, atol=0.015)
    # Every later token is uniform too: e.g. the second action, among plans that have one.
    second = plans.actions[:, 1][plans.lengths >= 2]
    counts = torch.bincount(second, minlength=n_actions).double() / len(second)
    assert torch.allclose(counts, torch.full((n_actions,), 1 / n_actions, dtype=torch.float64), atol=0.02)
    z = model.z(True)[0]
    for r, seq in enumerate(plan_rows(plans)[:500]):
        assert float(plans.scores[r]) == pytest.approx(brute_score(z, seq, n_actions, 0.99), abs=1e-4)
    # Teeth: the guided proposal on the same table is nothing like uniform.
    kw["generator"] = torch.Generator().manual_seed(9)
    guided = sample_plans(model.step_fn(torch.zeros(rows, dtype=torch.long)), n_actions, limits, **kw)
    assert first_token_frequencies(guided, n_actions)[0] > 0.99


# --------------------------------------------- (g) padding and determinism
def test_padding_and_reproducibility_under_a_fixed_generator():
    n_actions = 3
    model = TableModel(n_actions, 4, 2, seed=15)
    limits = torch.tensor([4, 0, 2, 3, 1] * 40)
    rows = torch.zeros(len(limits), dtype=torch.long)

    def run(seed):
        return sample_plans(model.step_fn(rows), n_actions, limits, clip_logp=None,
                            generator=torch.Generator().manual_seed(seed))

    a, b, c = run(21), run(21), run(22)
    plan_rows(a)                                   # checks the -1 padding after every end
    assert ((a.actions == -1).sum(1) == 4 - a.lengths).all()
    assert torch.equal(a.actions, b.actions) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.scores, b.scores)
    assert not torch.equal(a.actions, c.actions)


def test_no_rows_and_all_zero_limits():
    model = TableModel(2, 1, 2, seed=16)
    empty = sample_plans(model.step_fn(torch.zeros(0, dtype=torch.long)), 2, torch.zeros(0, dtype=torch.long))
    assert empty.actions.shape == (0, 0) and empty.lengths.shape == (0,)
    zero = sample_plans(model.step_fn(torch.zeros(3, dtype=torch.long)), 2, torch.zeros(3, dtype=torch.long),
                        generator=torch.Generator().manual_seed(0))
    assert zero.actions.shape == (3, 0)
    assert zero.lengths.tolist() == [0, 0, 0]
    assert torch.allclose(zero.scores, model.z(True)[0, 0, 2, 2].float().expand(3))


def test_best_of_refuses_plans_that_are_not_equal_groups():
    from pixelplan.planners.shooting import Plans, best_of
    plans = Plans(actions=torch.zeros(5, 2, dtype=torch.long), lengths=torch.zeros(5, dtype=torch.long),
                  scores=torch.zeros(5))
    with pytest.raises(ValueError, match="5 plans cannot be 2 groups"):
        best_of(plans, 2)
