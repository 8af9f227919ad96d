"""GLAMOR: Goal-conditioned Latent Action MOdels for RL (Paster, McIlraith, Ba; 2021).

GLAMOR learns two autoregressive models of action sequences from hindsight-relabelled
replay, and plans with their ratio:

* ``idm``, the inverse dynamics model p(a_1..a_k, END | s_1, s_{k+1} = g), and
* ``prior``, the action prior p(a_1..a_k, END | s_1),

both LSTMs over a shared state encoder (the goal has its own encoder; the heads share
nothing else). Training is maximum likelihood (eq. 9): token-mean NLL of the idm plus
``alpha`` x the same for the prior. Acting is random shooting (``planners/shooting.py``)
on z = log p_idm - log p_prior with clip-p-actions, END and a gamma^k length penalty.

Collection (3.5): one plan per episode from the first state, run open loop; each plan step
is replaced by a uniform random action with probability epsilon (the plan still
advances); after the plan ends, uniform random actions until T. Epsilon falls linearly
from ``eps_start`` to ``eps_final`` over ``eps_steps`` env steps, counted from step 0.
Evaluation is MPC: replan every step with at most T - t actions, and end the episode
when the best plan is "END now" (``termination="early"``).

Ablations (one config switch each; commands in docs/baselines.md): ``collect="random"``
(A.4.1), ``use_prior=False`` (figure 6), ``eval_trials`` (A.4.2), ``proposal="sparse"``
(4.7.3) and ``termination="plan_end"`` (4.7.2).

Where this implementation departs from the paper or the authors' release, or chooses where
they are silent (also in docs/glamor.md):

* Notation: k counts actions, so (s_1, a_1..a_k, s_{k+1}); k is uniform in 1..K, clipped to
  the steps left in the episode, and a start on an episode's final frame gives k = 0
  (goal = state, target END alone). The release samples the same way.
* The loss masks padding with an ignore index instead of a PAD output class; the
  likelihood is the same.
* Self-goal samples (``self_goal_prob``, 0 in the paper preset, 0.1 in the grid preset): a
  fraction of each batch is relabelled as "the start is its own goal" (k = 0, target END
  alone). In the paper's sampling END at a plan's start is seen only at an episode's final
  frames, so from a state that never ends an episode both p_idm(END | s, g) and
  p_prior(END | s) are near zero and "END now" scores the log-ratio of two near-zero numbers:
  noise around 0, which beats every plan that pays log(1/gamma) per action. With END seen
  at every state, p_prior(END | s) is at least about ``self_goal_prob`` and p_idm(END | s, g)
  learns to be ~1 for g = s and ~0 otherwise, so "END now" wins only at the goal. For plans of
  k >= 1 actions the ratio only gains the constant -log(1 - self_goal_prob), so their ranking
  is unchanged. Evidence: docs/glamor.md ("END now before anything is learned").
* The clip applies to action tokens, not to END (END ends a plan, it does not expand it);
  see planners/shooting.py for why this matters under hindsight relabelling.
* While epsilon is 1 the planner's output would be discarded, so no plan is computed.
* The grid world uses its own preset (config.py, docs/glamor.md), with a small conv
  encoder for its 27x27 frames instead of the IMPALA net.
* K defaults to the env's T (``max_k=None``): 100 on DM Control and 50 on Atari, the
  paper's values. On Atari a lost life ends the episode: in collection the replay episode
  is shorter and gaps are clipped to it; in evaluation the goal is judged on that state.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import swa_utils

from pixelplan.agents.base import (AgentBase, Decision, EnvSpec, Learner, batch_rows, check_batch, frames_to_channels,
                                   linear_epsilon)
from pixelplan.config import Config, GlamorConfig, SharedConfig
from pixelplan.data.replay import PAD, HindsightBatch
from pixelplan.data.samplers import HindsightSampler
from pixelplan.nets.action_model import ActionSequenceModel, TokenStepper
from pixelplan.nets.encoders import make_encoder, set_precision
from pixelplan.planners.shooting import Plans, shoot

_IGNORE = -100  # cross_entropy's ignore index for positions after END
_GOAL_CACHE_SIZE = 4096
#: batches whose longest sequence is at most this many tokens train the LSTMs as one padded
#: batch: bucketing saves nothing there (grid world, K = 12: 110 ms a padded update against 114
#: bucketed, benchmarks measured on this 2-core CPU), and the padded path is the paper's
BUCKET_MIN_TOKENS = 32


class GlamorModel(nn.Module):
    """Encoders, the state-goal mixer, and the two action-sequence heads."""

    def __init__(self, shared: SharedConfig, cfg: GlamorConfig, spec: EnvSpec):
        super().__init__()
        self.spec = spec
        frame_hw = tuple(spec.frame_shape[:2])
        colours = spec.frame_shape[2] if len(spec.frame_shape) == 3 else 1
        d = shared.state_size
        self.state_encoder = make_encoder(shared.encoder, spec.frame_stack * colours, frame_hw, d)
        self.goal_encoder = make_encoder(shared.encoder, colours, frame_hw, d)
        self.mix = nn.Sequential(nn.Linear(2 * d, shared.mix_hidden), nn.LayerNorm(shared.mix_hidden),
                                 nn.ReLU(), nn.Linear(shared.mix_hidden, d), nn.ReLU())
        self.idm = ActionSequenceModel(d, spec.n_actions, cfg.lstm_hidden)
        self.prior = ActionSequenceModel(d, spec.n_actions, cfg.lstm_hidden)

    def codes(self, state: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(idm code, prior code) for uint8 state stacks and goal frames."""
        return self.mix_codes(state, self.encode_goal(goal))

    def encode_goal(self, goal: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.goal_encoder(frames_to_channels(goal, len(self.spec.frame_shape))))

    def mix_codes(self, state: torch.Tensor, goal_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(idm code, prior code) from uint8 state stacks and encoded goals."""
        s = torch.relu(self.state_encoder(frames_to_channels(state, len(self.spec.frame_shape))))
        return self.mix(torch.cat([s, goal_features], -1)), s


class GlamorAgent(AgentBase):
    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, seed: int):
        spec.require_discrete("GLAMOR")
        spec.require_goals("GLAMOR")
        self.shared, self.cfg, self.spec, self.device = cfg.shared, cfg.glamor, spec, device
        self.batch_size = self.shared.batch_size
        self.max_k = self.shared.max_k or spec.max_episode_steps
        self.sampler = HindsightSampler(self.batch_size, self.max_k)
        torch.manual_seed(seed)
        self.model = GlamorModel(self.shared, self.cfg, spec).to(device)
        self.precision = set_precision(self.model, self.shared.precision, device)   # before the EMA copies it
        self.learner = Learner.from_shared(self.model.parameters(), self.shared)
        # The weights the planner uses: the trained ones, or their moving average.
        self.ema = (swa_utils.AveragedModel(self.model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(
            self.cfg.plan_ema)) if self.cfg.plan_ema > 0 else None)
        self.rng = np.random.default_rng(seed)
        # Its own stream, so that switching self-goal samples on or off leaves collection's
        # random actions as they were.
        self.sample_rng = np.random.default_rng([seed, 7])
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        # Planner trials at evaluation: the agent's own setting, which `pixelplan eval --trials`
        # overrides without writing into the config.
        self.eval_trials = self.cfg.eval_trials or self.cfg.trials
        self._open_loop: dict[int, np.ndarray] = {}   # env row -> its current training plan
        self._to_plan: set[int] = set()               # env rows whose training episode needs a plan
        # Goal-encoder features by goal frame, valid while the weights do not change: under
        # MPC the goal stays fixed for a whole episode, so it is encoded once, not every step.
        self._goal_cache: dict[bytes, torch.Tensor] = {}
        self._goal_cache_updates = 0

    # ------------------------------------------------------------------ acting
    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None:
        """A training episode gets one open-loop plan, made at its first step (section 3.6)."""
        if explore:
            for row in np.asarray(rows).reshape(-1):
                self._open_loop.pop(int(row), None)
                self._to_plan.add(int(row))

    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool,
            env_steps: int, rows: np.ndarray | None = None) -> Decision:
        """Actions for a batch of rows; ``stop`` where an evaluation plan says END now."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        check_batch("goal", goal, self.spec.frame_shape)
        t = np.asarray(t)
        rows = batch_rows(rows, len(t))
        if explore:
            return Decision.go(self._collect(state, goal, t, env_steps, rows))
        T = self.spec.max_episode_steps
        trials = self.eval_trials
        plans = self.plan(state, goal, np.maximum(T - t, 0), trials)
        first = plans.actions[:, 0].cpu().numpy() if plans.actions.shape[1] else np.full(len(t), -1)
        if self.cfg.termination == "early":
            stop = plans.lengths.cpu().numpy() == 0
            return Decision(np.where(stop, 0, first), stop)
        # plan_end: plans use all remaining steps; at t = T there is nothing left to do.
        return Decision.go(np.where(first < 0, self.rng.integers(self.spec.n_actions, size=len(t)), first))

    def epsilon(self, env_steps: int) -> float:
        return linear_epsilon(self.shared, env_steps)

    def log_values(self, env_steps: int) -> dict[str, float]:
        return {"epsilon": self.epsilon(env_steps)}

    def _collect(self, state, goal, t, env_steps, rows) -> np.ndarray:
        n = len(t)
        random_actions = self.rng.integers(self.spec.n_actions, size=n)
        if self.shared.collect == "random":
            return random_actions
        eps = self.epsilon(env_steps)
        starting = np.array([i for i, row in enumerate(rows) if int(row) in self._to_plan], dtype=np.int64)
        if len(starting):
            if eps >= 1.0:
                for i in starting:
                    self._open_loop[int(rows[i])] = np.zeros(0, dtype=np.int64)
            else:
                T = self.spec.max_episode_steps
                plans = self.plan(state[starting], goal[starting], np.full(len(starting), T),
                                  self.cfg.trials)
                acts, lens = plans.actions.cpu().numpy(), plans.lengths.cpu().numpy()
                for j, i in enumerate(starting):
                    self._open_loop[int(rows[i])] = acts[j, :lens[j]]
            self._to_plan.difference_update(int(rows[i]) for i in starting)
        actions = random_actions.copy()
        take_plan = self.rng.random(n) >= eps
        for i in range(n):
            plan = self._open_loop.get(int(rows[i]))
            if plan is not None and t[i] < len(plan) and take_plan[i]:
                actions[i] = plan[t[i]]
        return actions

    @property
    def planning_model(self) -> GlamorModel:
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def plan(self, state: np.ndarray, goal: np.ndarray, max_len: np.ndarray, trials: int,
             proposal: str | None = None, termination: str | None = None) -> Plans:
        """The best of ``trials`` sampled plans for each row."""
        model = self.planning_model.eval()
        dev = self.device
        idm_code, prior_code = model.mix_codes(torch.as_tensor(state, device=dev), self._goal_features(goal))
        models, codes = [model.idm], [idm_code]
        if self.cfg.use_prior:
            models.append(model.prior)
            codes.append(prior_code)
        limits = torch.as_tensor(np.asarray(max_len), dtype=torch.long, device=dev)
        return shoot(TokenStepper(models, codes), self.spec.n_actions, limits, trials=trials,
                     use_prior=self.cfg.use_prior, clip_logp=self.cfg.clip_logp, gamma=self.cfg.gamma,
                     proposal=proposal or self.cfg.proposal,
                     termination=termination or self.cfg.termination,
                     generator=self.generator)

    def _goal_features(self, goal: np.ndarray) -> torch.Tensor:
        if self._goal_cache_updates != self.updates or len(self._goal_cache) > _GOAL_CACHE_SIZE:
            self._goal_cache.clear()
            self._goal_cache_updates = self.updates
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in goal]
        missing = [i for i, key in enumerate(keys) if key not in self._goal_cache]
        if missing:
            features = self.planning_model.encode_goal(torch.as_tensor(goal[missing], device=self.device))
            for i, f in zip(missing, features):
                self._goal_cache[keys[i]] = f
        return torch.stack([self._goal_cache[key] for key in keys])

    # ---------------------------------------------------------------- learning
    def self_goal_samples(self, batch: HindsightBatch) -> HindsightBatch:
        """With probability ``self_goal_prob`` per row, make the start its own goal: k = 0,
        goal = the start frame, target END alone (see the module doc for why)."""
        own = self.sample_rng.random(len(batch.k)) < self.cfg.self_goal_prob
        if not own.any():
            return batch
        goal, k, actions = batch.goal.copy(), batch.k.copy(), batch.actions.copy()
        goal[own] = batch.state[own, -1]
        k[own] = 0
        actions[own] = PAD
        return batch._replace(goal=goal, k=k, actions=actions)

    def loss(self, batch: HindsightBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 9: token-mean NLL of the idm + alpha x token-mean NLL of the prior."""
        if self.cfg.self_goal_prob > 0:
            batch = self.self_goal_samples(batch)
        dev = self.device
        k = torch.as_tensor(batch.k, device=dev)
        length = int(batch.k.max()) + 1                # tokens: k actions then END
        actions = torch.as_tensor(batch.actions[:, :length - 1], device=dev)
        # Targets by position: a_1..a_k, END at k, nothing after (whatever the padding holds).
        position = torch.arange(length, device=dev).unsqueeze(0)
        targets = torch.full((len(k), length), _IGNORE, dtype=torch.long, device=dev)
        targets[:, :length - 1] = torch.where(position[:, :-1] < k.unsqueeze(1), actions, _IGNORE)
        targets.scatter_(1, k.unsqueeze(1), self.spec.n_actions)
        actions = torch.where(position[:, :-1] < k.unsqueeze(1), actions, PAD)
        # Teacher forcing: the input at step i is the action at i - 1 (start: none).
        prev = torch.cat([torch.full_like(k, -1).unsqueeze(1), actions], 1)
        idm_code, prior_code = self.model.codes(torch.as_tensor(batch.state, device=dev),
                                                torch.as_tensor(batch.goal, device=dev))
        if self.cfg.lstm_buckets > 1 and length > BUCKET_MIN_TOKENS:   # the same likelihoods, less padding
            lengths = k + 1
            nll_idm, nll_prior = (total / count for total, count in (
                head.token_nll(code, prev, targets, lengths, self.cfg.lstm_buckets)
                for head, code in ((self.model.idm, idm_code), (self.model.prior, prior_code))))
        else:                           # one padded batch (the paper's code)
            nll_idm = F.cross_entropy(self.model.idm(idm_code, prev).flatten(0, 1), targets.flatten(),
                                      ignore_index=_IGNORE)
            nll_prior = F.cross_entropy(self.model.prior(prior_code, prev).flatten(0, 1),
                                        targets.flatten(), ignore_index=_IGNORE)
        loss = nll_idm + self.cfg.alpha * nll_prior
        return loss, {"loss": loss.item(), "nll_idm": nll_idm.item(), "nll_prior": nll_prior.item()}

    def update(self, batch: HindsightBatch) -> dict[str, float]:
        self.model.train()
        loss, metrics = self.loss(batch)
        metrics["grad_norm"] = self.learner.step(loss)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.learner.count()
        return metrics

    @property
    def updates(self) -> int:
        return self.learner.updates

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), **self.learner.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": self.rng.bit_generator.state, "sample_rng": self.sample_rng.bit_generator.state,
                "generator": self.generator.get_state(), "open_loop": dict(self._open_loop),
                "to_plan": sorted(self._to_plan)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.learner.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        if "sample_rng" in state:   # checkpoints from before self-goal samples have none
            self.sample_rng.bit_generator.state = state["sample_rng"]
        self.generator.set_state(state["generator"])
        self._open_loop = dict(state["open_loop"])
        self._to_plan = set(state.get("to_plan", ()))   # checkpoints are cut between rounds: none pending
        self._goal_cache.clear()
