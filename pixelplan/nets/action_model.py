"""Autoregressive action-sequence model: an LSTM over action tokens, conditioned on a code.

GLAMOR uses two of these: the inverse dynamics model ``idm`` p(a_1..a_k, END | s, g),
conditioned on the mixed state-goal code, and the action ``prior`` p(a_1..a_k, END | s),
conditioned on the state code alone.

Vocabulary: output tokens are the ``n_actions`` actions plus ``END`` (index
``n_actions``). The input at step i is [code ; one-hot of the previous action]; at the
first step the one-hot part is a zero vector. The initial LSTM state (h0, c0) is a linear
map of the code.

Three execution paths share the same parameters:

* ``forward``: teacher forcing over a whole padded sequence with the fused ``nn.LSTM``.
* ``token_nll`` (training): the same likelihoods with the code's projection hoisted out of
  the token loop and the rows bucketed by length, so padding is mostly not computed.
* ``TokenStepper`` (planning): one token at a time for many candidate plans at once; it
  is a stepper of the shooting planner (``pixelplan.planners.shooting.Stepper``: ``rows``,
  ``start(trials)``, ``advance(state, prev)``), which it satisfies without importing it.
  The code's contribution to the LSTM gates is constant along a plan, so it is computed
  once per code and then repeated over the trials; the action's contribution is a row lookup. Several models (idm and
  prior) are stacked and stepped with batched matmuls, so the per-token op count does not
  double with the second model. A test checks both paths agree.

Planning time on a CPU is dominated by per-op overhead and by tanh, which is about three
times slower than sigmoid here. The stepper therefore keeps the cell-candidate ("g") gate
columns pre-scaled by 2, so one sigmoid over all four gates also yields tanh of the g
gate through tanh(u) = 2 sigmoid(2u) - 1.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class ActionSequenceModel(nn.Module):
    def __init__(self, code_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.code_dim, self.n_actions, self.hidden = code_dim, n_actions, hidden
        self.init_state = nn.Linear(code_dim, 2 * hidden)
        self.lstm = nn.LSTM(code_dim + n_actions, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, n_actions + 1)

    @property
    def end_token(self) -> int:
        return self.n_actions

    def forward(self, code: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        """Logits over actions + END for each step of a teacher-forced sequence.

        code: (B, code_dim). prev_actions: (B, L) long, the action fed at each step; any
        value outside 0..n_actions-1 (the start of the plan, or padding) feeds a zero vector.
        Returns (B, L, n_actions + 1).
        """
        batch, length = prev_actions.shape
        valid = (prev_actions >= 0) & (prev_actions < self.n_actions)
        one_hot = F.one_hot(prev_actions.clamp(0, self.n_actions - 1), self.n_actions)
        one_hot = one_hot.to(code.dtype) * valid.unsqueeze(-1).to(code.dtype)
        inputs = torch.cat([code.unsqueeze(1).expand(batch, length, self.code_dim), one_hot], -1)
        h0, c0 = self.init_state(code).chunk(2, dim=-1)
        out, _ = self.lstm(inputs, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self.head(out)


    def token_nll(self, code: torch.Tensor, prev_actions: torch.Tensor, targets: torch.Tensor,
                  lengths: torch.Tensor, buckets: int = 1) -> tuple[torch.Tensor, int]:
        """(sum of -log p(target) over each row's first ``lengths`` tokens, number of tokens).

        The same likelihoods as :meth:`forward` followed by a cross-entropy that ignores the
        padding (to float rounding), computed for less (a GLAMOR update, issue 14):

        * The code's share of the LSTM's input gates is the same at every token of a row, so it
          is projected once per row instead of once per token, and the previous action's share
          is a row lookup; the LSTM runs on these precomputed gates (an identity input map,
          which is exact).
        * Rows are sorted by length and cut into ``buckets`` groups of equal size, each run only
          as long as its longest row: a batch of hindsight gaps uniform in 1..K pays for about
          a third of its padding with 6 buckets, instead of all of it.

        ``prev_actions`` (B, L) as in :meth:`forward`; ``targets`` (B, L) long, read only where
        ``t < lengths``; ``lengths`` (B,) in 1..L.
        """
        hidden, n_actions = self.hidden, self.n_actions
        lstm = self.lstm
        w_ih = lstm.weight_ih_l0
        gates_code = F.linear(code, w_ih[:, :self.code_dim], lstm.bias_ih_l0 + lstm.bias_hh_l0)   # (B, 4H)
        # One row per input token; the last (no previous action) is zero.
        token_rows = torch.cat([w_ih[:, self.code_dim:].t(), w_ih.new_zeros(1, 4 * hidden)])
        prev = torch.where((prev_actions >= 0) & (prev_actions < n_actions), prev_actions, n_actions)
        h0, c0 = self.init_state(code).chunk(2, dim=-1)
        identity = torch.eye(4 * hidden, dtype=code.dtype, device=code.device)
        lengths_host = lengths.detach().cpu()
        order = torch.argsort(lengths_host, stable=True)
        total, count = code.new_zeros(()), 0
        for rows_host in order.chunk(max(1, min(int(buckets), len(order)))):
            longest = int(lengths_host[rows_host].max())
            rows = rows_host.to(code.device)
            gates_in = gates_code[rows].unsqueeze(1) + token_rows[prev[rows, :longest]]
            out, _, _ = torch.lstm(gates_in, (h0[rows].unsqueeze(0).contiguous(), c0[rows].unsqueeze(0).contiguous()),
                                   [identity, lstm.weight_hh_l0], False, 1, 0.0, self.training, False, True)
            valid = torch.arange(longest, device=code.device).unsqueeze(0) < lengths[rows].unsqueeze(1)
            logits = self.head(out[valid])
            total = total + F.cross_entropy(logits, targets[rows, :longest][valid], reduction="sum")
            count += int(valid.sum())
        return total, count


def lstm_stack_step(gates: torch.Tensor, token_input: torch.Tensor, c: torch.Tensor,
                    weight: torch.Tensor, bias: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of M stacked LSTMs and their heads: (log-probabilities, next gates, c).

    ``gates`` (M, R, 4H) holds h_prev W_hh plus the code's constant contribution and the
    biases; ``token_input`` (M, R, 4H) is the previous token's contribution. ``weight`` is
    [W_hh | W_head] (M, H, 4H + V) and ``bias`` [code and LSTM biases | head bias]
    (M, R, 4H + V): one batched matmul gives both this step's logits and the recurrent part
    of the next step's gates. The g-gate columns are pre-scaled by 2 (module docstring).
    TorchScript compiles this function, through ``TokenStepper.advance``, into the planner's
    token loop.
    """
    hidden = c.shape[-1]
    s = torch.sigmoid(gates + token_input)
    i = s[:, :, :hidden]
    f = s[:, :, hidden:2 * hidden]
    o = s[:, :, 3 * hidden:]
    # c' = f c + i tanh(u_g) = f c + i (2 sigmoid(2 u_g) - 1)
    c = torch.addcmul(f * c, i, s[:, :, 2 * hidden:3 * hidden], value=2.0) - i
    y = torch.baddbmm(bias, o * torch.tanh(c), weight)
    return torch.log_softmax(y[:, :, 4 * hidden:], dim=-1), y[:, :, :4 * hidden], c


def _scale_g_columns(t: torch.Tensor, hidden: int) -> torch.Tensor:
    t = t.clone()
    t[..., 2 * hidden:3 * hidden] *= 2
    return t


class TokenStepper:
    """Steps one or more ``ActionSequenceModel`` s token by token, in lockstep.

    ``codes[m]`` is the code for model m, one row per state (and goal); every model gets
    the same number of rows (``rows``). The stepper is functional, as the shooting
    planner's ``Stepper`` interface asks: ``start(trials)`` gives the initial state for
    ``rows * trials`` plans, each code repeated ``trials`` times consecutively, and
    ``advance(state, prev)`` feeds the previous token of every plan (``n_actions`` = the
    start of the plan: a zero one-hot) and returns (log-probabilities of shape
    (n_models, rows * trials, n_actions + 1), the next state). ``advance`` is a static
    function that TorchScript compiles (``scriptable``), so the planner compiles its token
    loop around it.
    """

    scriptable = True

    def __init__(self, models: list[ActionSequenceModel], codes: list[torch.Tensor]):
        n_actions = models[0].n_actions
        hidden = models[0].hidden
        if any(m.n_actions != n_actions or m.hidden != hidden for m in models):
            raise ValueError("models stepped together must share n_actions and hidden size")
        if len(codes) != len(models) or any(len(code) != len(codes[0]) for code in codes):
            raise ValueError(f"one code per model, all with the same number of rows: {len(models)} models, "
                             f"codes with {[len(code) for code in codes]} rows")
        biases, hs, cs, weights, token_rows = [], [], [], [], []
        for model, code in zip(models, codes):
            lstm = model.lstm
            w_ih = lstm.weight_ih_l0                       # (4H, code_dim + A)
            w_code, w_action = w_ih[:, :model.code_dim], w_ih[:, model.code_dim:]
            gates_const = F.linear(code, w_code, lstm.bias_ih_l0 + lstm.bias_hh_l0)
            biases.append(torch.cat([_scale_g_columns(gates_const, hidden),
                                     model.head.bias.expand(len(code), n_actions + 1)], -1))
            h0, c0 = model.init_state(code).chunk(2, dim=-1)
            hs.append(h0)
            cs.append(c0)
            weights.append(torch.cat([_scale_g_columns(lstm.weight_hh_l0.t(), hidden),
                                      model.head.weight.t()], -1))            # (H, 4H + A+1)
            # One row per input token; the last row (plan start) is the zero one-hot.
            token_rows.append(_scale_g_columns(
                torch.cat([w_action.t(), w_action.new_zeros(1, 4 * hidden)]), hidden))
        self.weight = torch.stack(weights)                 # (M, H, 4H + A+1)
        self.token_rows = torch.stack(token_rows)          # (M, A+1, 4H)
        # Per-code work is done once per distinct code; ``start`` repeats it over the trials.
        self.bias = torch.stack(biases)                    # (M, rows, 4H + A+1)
        self.gates = torch.baddbmm(self.bias, torch.stack(hs), self.weight)[:, :, :4 * hidden]   # (M, rows, 4H)
        self.c = torch.stack(cs)                           # (M, rows, H)
        self.rows = len(codes[0])
        self.hidden = hidden
        self.n_actions = n_actions

    def start(self, trials: int = 1) -> List[torch.Tensor]:
        """The state for ``rows * trials`` plans: [gates, c, weight, bias, token_rows]."""
        return [self.gates.repeat_interleave(trials, 1), self.c.repeat_interleave(trials, 1),
                self.weight, self.bias.repeat_interleave(trials, 1), self.token_rows]

    @staticmethod
    def advance(state: List[torch.Tensor], prev: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """One token for every plan: (log-probabilities (M, R, A+1), the next state)."""
        gates, c, weight, bias, token_rows = state[0], state[1], state[2], state[3], state[4]
        logp, gates, c = lstm_stack_step(gates, token_rows.index_select(1, prev), c, weight, bias)
        return logp, [gates, c, weight, bias, token_rows]
