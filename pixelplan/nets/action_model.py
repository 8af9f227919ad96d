"""Autoregressive action-sequence model: an LSTM over action tokens, conditioned on a code.

GLAMOR uses two of these: the inverse dynamics model ``idm`` p(a_1..a_k, END | s, g),
conditioned on the mixed state-goal code, and the action ``prior`` p(a_1..a_k, END | s),
conditioned on the state code alone.

Vocabulary: output tokens are the ``n_actions`` actions plus ``END`` (index
``n_actions``). The input at step i is [code ; one-hot of the previous action]; at the
first step the one-hot part is a zero vector. The initial LSTM state (h0, c0) is a linear
map of the code.

Two execution paths share the same parameters:

* ``forward`` (training): teacher forcing over a whole padded sequence with the fused
  ``nn.LSTM``.
* ``TokenStepper`` (planning): one token at a time for many candidate plans at once.
  The code's contribution to the LSTM gates is constant along a plan, so it is computed
  once per plan; the action's contribution is a row lookup. Several models (idm and
  prior) are stacked and stepped with batched matmuls, so the per-token op count does not
  double with the second model. A test checks both paths agree.
"""

from __future__ import annotations

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


class TokenStepper:
    """Steps one or more ``ActionSequenceModel`` s token by token, in lockstep.

    ``codes[m]`` is the code for model m, one row per candidate plan (all the same number
    of rows). ``step(prev)`` feeds the previous token of every row (``n_actions`` = the
    start of the plan: a zero one-hot) and returns log-probabilities of shape
    (n_models, rows, n_actions + 1).
    """

    def __init__(self, models: list[ActionSequenceModel], codes: list[torch.Tensor]):
        n_actions = models[0].n_actions
        hidden = models[0].hidden
        if any(m.n_actions != n_actions or m.hidden != hidden for m in models):
            raise ValueError("models stepped together must share n_actions and hidden size")
        gates_const, hs, cs, w_hh, token_rows, w_out, b_out = [], [], [], [], [], [], []
        for model, code in zip(models, codes):
            lstm = model.lstm
            w_ih = lstm.weight_ih_l0                       # (4H, code_dim + A)
            w_code, w_action = w_ih[:, :model.code_dim], w_ih[:, model.code_dim:]
            gates_const.append(F.linear(code, w_code, lstm.bias_ih_l0 + lstm.bias_hh_l0))
            h0, c0 = model.init_state(code).chunk(2, dim=-1)
            hs.append(h0)
            cs.append(c0)
            w_hh.append(lstm.weight_hh_l0.t())             # (H, 4H)
            # One row per input token; the last row (plan start) is the zero one-hot.
            token_rows.append(torch.cat([w_action.t(), w_action.new_zeros(1, 4 * hidden)]))
            w_out.append(model.head.weight.t())            # (H, A+1)
            b_out.append(model.head.bias.unsqueeze(0))
        self.gates_const = torch.stack(gates_const)        # (M, R, 4H)
        self.h = torch.stack(hs)                           # (M, R, H)
        self.c = torch.stack(cs)
        self.w_hh = torch.stack(w_hh)                      # (M, H, 4H)
        self.token_rows = torch.stack(token_rows)          # (M, A+1, 4H)
        self.w_out = torch.stack(w_out)                    # (M, H, A+1)
        self.b_out = torch.stack(b_out)                    # (M, 1, A+1)
        self.hidden = hidden
        self.n_actions = n_actions

    def step(self, prev: torch.Tensor) -> torch.Tensor:
        H = self.hidden
        x = self.gates_const + self.token_rows[:, prev]
        gates = torch.baddbmm(x, self.h, self.w_hh)
        act = torch.sigmoid(gates)
        i, f, o = act[..., :H], act[..., H:2 * H], act[..., 3 * H:]
        g = torch.tanh(gates[..., 2 * H:3 * H])
        self.c = f * self.c + i * g
        self.h = o * torch.tanh(self.c)
        return torch.log_softmax(torch.baddbmm(self.b_out, self.h, self.w_out), dim=-1)
