"""The agent contract: what every agent offers the drivers, and the parts agents share.

An agent sees arrays and an :class:`~pixelplan.spec.EnvSpec`, never an environment
object. The drivers (``pixelplan.runs``) use exactly what :class:`Agent` names, nothing found
by ``hasattr``; :class:`AgentBase` gives the defaults an agent that needs no more inherits.
The calls, in the order a driver makes them (docs/agents.md):

* ``begin_episodes(rows, goals, explore)``: the episodes of env rows ``rows`` start now, with
  these goal frames (None on reward tasks). Per-episode state (a training plan, a pursued goal)
  is keyed by these row ids, never by a position in a batch or by ``t == 0``.
* ``act(state, goal, t, explore, env_steps, rows) -> Decision``: one action per row, and a
  ``stop`` flag per row. ``stop`` is "end this episode now" (GLAMOR's END at evaluation), its
  own signal, never an action value; a stopped row's action is not sent to the env.
* ``end_episodes(rows, final_frames, goals, explore)``: those rows' episodes ended, here.
* ``sampler`` and ``update(batch)``: a learning agent (``learns``) names the sampler its batches
  come from (:mod:`pixelplan.data.samplers`); the driver draws ``sampler.sample(store, rng)``
  and hands it to ``update``, at a replay ratio counted in the sampler's
  ``samples_per_batch``. The driver reads no agent hyperparameter.
* ``log_values(env_steps)``: figures the agent adds to each training log line.
* ``diagnostics(store, out, env_steps)``: at each evaluation, files the agent writes into the
  run directory ``out`` (PlaNet's open-loop video predictions) and figures it adds to the
  evaluation record. It must not draw from a random stream that training uses (resuming a
  run must train exactly as an uninterrupted one).
* ``state_dict()`` / ``load_state_dict()``: weights, optimiser, RNG and counters, for
  checkpoints and exact resume.

``Learner`` is the optimiser step every learning agent shares (GLAMOR, GCSL, DISCERN, PlaNet).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from pixelplan.spec import EnvSpec

__all__ = ["Agent", "AgentBase", "Decision", "EnvSpec", "Learner", "ObsSpec", "batch_rows", "check_batch",
           "frames_to_channels", "linear_epsilon", "resolve_device"]

#: the name agents were built with before EnvSpec generalised it (same fields, same order)
ObsSpec = EnvSpec


class Decision(NamedTuple):
    """What an agent decided for a batch of rows.

    actions: (B,) int64 for ``Discrete`` actions, (B, *action_shape) float32 for ``Box``.
    stop:    (B,) bool: the agent declares the row's episode done; its action is ignored.
    """

    actions: np.ndarray
    stop: np.ndarray

    @classmethod
    def go(cls, actions: np.ndarray) -> "Decision":
        """Actions, no row stopping."""
        actions = np.asarray(actions)
        return cls(actions, np.zeros(len(actions), dtype=bool))


@runtime_checkable
class Agent(Protocol):
    """Everything the drivers use (see the module doc)."""

    spec: EnvSpec
    #: False: the driver keeps no store and makes no updates (the random agent)
    learns: bool
    #: draws the agent's training batches from an episode store; None when it does not learn
    sampler: Any
    #: planner trials at evaluation, where the agent plans (reported in summaries), else None
    eval_trials: int | None

    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None: ...

    def act(self, state: np.ndarray, goal: np.ndarray | None, t: np.ndarray, explore: bool, env_steps: int,
            rows: np.ndarray | None = None) -> Decision: ...

    def end_episodes(self, rows: np.ndarray, final_frames: np.ndarray, goals: np.ndarray | None,
                     explore: bool) -> None: ...

    def update(self, batch) -> dict[str, float]: ...

    def log_values(self, env_steps: int) -> dict[str, float]: ...

    def diagnostics(self, store, out, env_steps: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AgentBase:
    """Defaults for the parts of :class:`Agent` an agent need not customise: it learns, keeps no
    per-episode state, and plans nothing at evaluation."""

    learns = True
    sampler = None
    eval_trials: int | None = None

    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None:
        pass

    def end_episodes(self, rows: np.ndarray, final_frames: np.ndarray, goals: np.ndarray | None,
                     explore: bool) -> None:
        pass

    def log_values(self, env_steps: int) -> dict[str, float]:
        """Figures the agent adds to each training log line (e.g. its collection epsilon)."""
        return {}

    def diagnostics(self, store, out, env_steps: int) -> dict[str, float]:
        """Files written into the run directory ``out`` at an evaluation, and figures for its
        record (none by default)."""
        return {}


def batch_rows(rows: np.ndarray | None, n: int) -> np.ndarray:
    """The env row ids of a batch of ``n`` (default: 0..n-1), checked to be one per row."""
    if rows is None:
        return np.arange(n)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) != n:
        raise ValueError(f"rows must give one env row id per batch row, got {len(rows)} ids for {n} rows")
    return rows


class Learner:
    """What every learning agent repeats, in one place: an AdamW optimiser over its
    parameters, one gradient step with global-norm clipping, and the update counter.

    ``step(loss)`` runs zero_grad, backward, the clip and the optimiser step, and returns the
    gradient norm before clipping; ``count()`` counts an update (an agent may count one that
    took no gradient step, as DISCERN does before it has any loss). Its ``state_dict`` keys
    (``optimizer``, ``updates``) are the ones agents' checkpoints have always used, so an agent
    merges them into its own and older checkpoints still load.
    """

    def __init__(self, params, lr: float, weight_decay: float, grad_clip: float, eps: float = 1e-8):
        self.params = list(params)
        # AdamW with weight_decay 0 is Adam (PlaNet's optimiser, with its eps 1e-4)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, eps=eps)
        self.grad_clip = grad_clip
        self.updates = 0

    @classmethod
    def from_shared(cls, params, shared) -> "Learner":
        """The optimiser settings of a ``SharedConfig``."""
        return cls(params, lr=shared.lr, weight_decay=shared.weight_decay, grad_clip=shared.grad_clip)

    def step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        self.optimizer.step()
        return norm

    def count(self) -> int:
        self.updates += 1
        return self.updates

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def linear_epsilon(cfg, env_steps: int) -> float:
    """Collection epsilon at ``env_steps``: linear from ``cfg.eps_start`` to ``cfg.eps_final``
    over ``cfg.eps_steps`` env steps, then constant (GLAMOR's schedule, shared by the baselines)."""
    frac = 1.0 if cfg.eps_steps == 0 else min(1.0, env_steps / cfg.eps_steps)
    return cfg.eps_start + frac * (cfg.eps_final - cfg.eps_start)


def frames_to_channels(frames: torch.Tensor, n_frame_dims: int) -> torch.Tensor:
    """(B, [stack,] H, W[, C]) -> (B, channels, H, W), channels = stack x C."""
    if n_frame_dims == 3:  # colour frames: move C next to the stack axis
        if frames.dim() == 5:
            b, s, h, w, c = frames.shape
            return frames.permute(0, 1, 4, 2, 3).reshape(b, s * c, h, w)
        return frames.permute(0, 3, 1, 2)
    return frames if frames.dim() == 4 else frames.unsqueeze(1)


def check_batch(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    """Clear error for a batch of frames of the wrong shape or dtype."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape[1:] != expected:
        got = (f"{type(array).__name__} with dtype {getattr(array, 'dtype', '?')} and shape "
               f"{getattr(array, 'shape', '?')}")
        raise ValueError(f"{name} must be a uint8 array of shape (batch, {', '.join(map(str, expected))}), "
                         f"got {got}. Pass frames exactly as the environment returns them "
                         f"(the goal is a single frame; the state is the stack of the last frames).")
