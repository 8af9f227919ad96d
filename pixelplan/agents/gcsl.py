"""GCSL: goal-conditioned supervised learning (Ghosh et al. 2020), as the GLAMOR paper runs it.

A policy pi(a | s, g, h) over single actions, given the state stack s, the goal frame g and
the steps remaining h, trained by maximum likelihood (GLAMOR paper eq. 10) on
hindsight-relabelled replay: a sample (s_t, a_t, s_{t+k}) teaches "from s_t, to be at
s_{t+k} in k steps, take a_t". Acting samples an action from the policy.

It is GLAMOR's closest relative (GLAMOR paper A.1): both imitate their own relabelled data,
but GCSL learns no action prior and no sequence model, and acts reactively (one action per
step) instead of planning. Everything else is GLAMOR's, so that a comparison changes only
the algorithm: the same encoders and sizes (``shared.encoder``, ``state_size``,
``mix_hidden``), the same optimiser settings, batch size, replay ratio, K (``max_k``), the
same epsilon-greedy schedule and the same ``collect`` switch (``random`` is the A.4.1 /
figure 7 ablation). These are read from the ``shared`` config section (config.py).

Choices where the papers are silent (also in docs/baselines.md):

* Time remaining h is encoded as ``(sin 2 pi h / T, cos 2 pi h / T)`` (GLAMOR paper 4.2),
  with T the env's episode length. In training h = k, the hindsight gap; acting at step t,
  h = T - t.
* Epsilon-greedy collection with GLAMOR's schedule: with probability epsilon a uniform random
  action replaces the sampled one. The GLAMOR paper fixes hyperparameters between GLAMOR
  and GCSL; Ghosh et al. explore by sampling alone.
* At evaluation the policy is sampled too (``gcsl.eval_action = "sample"``), as the GLAMOR
  paper describes GCSL acting; ``"greedy"`` takes the most likely action instead.
* A sample that starts on an episode's final frame (k = 0) has no action and is dropped from
  the loss (the loss is the mean over the remaining samples).
* GCSL never ends an episode early: evaluation judges the state at T.
* Box actions (MBOLD's tabletop scenes, where offline GCSL is MBOLD's goal-conditioned
  behaviour-cloning baseline): the policy is a diagonal Gaussian over actions rescaled to
  [-1, 1] (a mean and a log std, clamped to [-5, 1], per dimension), trained by the NLL of
  the first action; acting samples it (``greedy``: its mean), clipped to the bounds, and
  epsilon-greedy collection draws uniform actions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pixelplan.agents.base import AgentBase, Decision, EnvSpec, Learner, check_batch, frames_to_channels, linear_epsilon
from pixelplan.config import Config
from pixelplan.data.replay import HindsightBatch
from pixelplan.data.samplers import HindsightSampler
from pixelplan.nets.encoders import set_precision
from pixelplan.nets.goal_policy import GoalTimeNet


#: the log-std range of the Gaussian policy over Box actions
LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


class GcslAgent(AgentBase):
    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, seed: int):
        spec.require_goals("GCSL")
        self.shared, self.cfg, self.spec, self.device = cfg.shared, cfg.gcsl, spec, device
        self.batch_size = self.shared.batch_size
        self.max_k = self.shared.max_k or spec.max_episode_steps
        self.sampler = HindsightSampler(self.batch_size, self.max_k)
        torch.manual_seed(seed)
        if spec.discrete:
            n_out = spec.n_actions
        else:       # a diagonal Gaussian over actions rescaled to [-1, 1]: a mean and a log std per dimension
            self.action_dim = int(np.prod(spec.action_shape))
            low, high = spec.action_bounds()
            self.low = torch.as_tensor(low.reshape(-1), device=device)
            self.high = torch.as_tensor(high.reshape(-1), device=device)
            n_out = 2 * self.action_dim
        self.policy = GoalTimeNet.for_frames(self.shared.encoder, spec.frame_shape, spec.frame_stack,
                                             self.shared.state_size, self.shared.mix_hidden, n_out,
                                             spec.max_episode_steps).to(device)
        self.precision = set_precision(self.policy, self.shared.precision, device)
        self.learner = Learner.from_shared(self.policy.parameters(), self.shared)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    # ------------------------------------------------------------------ acting
    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool,
            env_steps: int, rows: np.ndarray | None = None) -> Decision:
        """One action per row: sampled from pi(. | s, g, T - t), epsilon-greedy when exploring."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        check_batch("goal", goal, self.spec.frame_shape)
        t = np.atleast_1d(np.asarray(t))
        n = len(t)
        if not self.spec.discrete:
            return self._act_box(state, goal, t, explore, env_steps)
        random_actions = self.rng.integers(self.spec.n_actions, size=n)
        if explore and self.shared.collect == "random":
            return Decision.go(random_actions)
        remaining = np.maximum(self.spec.max_episode_steps - t, 1)
        logits = self.logits(state, goal, remaining)
        if not explore and self.cfg.eval_action == "greedy":
            return Decision.go(logits.argmax(-1).cpu().numpy())
        actions = torch.multinomial(F.softmax(logits, -1), 1, generator=self.generator)[:, 0].cpu().numpy()
        if explore:
            actions = np.where(self.rng.random(n) < self.epsilon(env_steps), random_actions, actions)
        return Decision.go(actions)

    def _act_box(self, state, goal, t, explore, env_steps) -> Decision:
        """Box actions: sampled from the Gaussian (or its mean, ``eval_action = greedy``), clipped
        to the bounds; when exploring, a uniform action with probability epsilon."""
        n = len(t)
        low, high = (b.reshape(1, -1) for b in self.spec.action_bounds())
        uniform = self.rng.uniform(low, high, size=(n, low.shape[1])).astype(np.float32)
        if explore and self.shared.collect == "random":
            return Decision.go(uniform.reshape(n, *self.spec.action_shape))
        mean, log_std = self.gaussian(self.logits(state, goal, np.maximum(self.spec.max_episode_steps - t, 1)))
        if not explore and self.cfg.eval_action == "greedy":
            unit = mean
        else:
            unit = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator, device=self.device)
        actions = self._to_env(unit).cpu().numpy()
        if explore:
            actions = np.where(self.rng.random((n, 1)) < self.epsilon(env_steps), uniform, actions)
        return Decision.go(actions.astype(np.float32).reshape(n, *self.spec.action_shape))

    @staticmethod
    def gaussian(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log std) of the policy's Gaussian over [-1, 1]-scaled actions."""
        mean, log_std = out.chunk(2, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _to_unit(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.low) / (self.high - self.low).clamp_min(1e-8) * 2 - 1

    def _to_env(self, unit: torch.Tensor) -> torch.Tensor:
        return self.low + (unit.clamp(-1, 1) + 1) / 2 * (self.high - self.low)

    @torch.no_grad()
    def logits(self, state: np.ndarray, goal: np.ndarray, remaining: np.ndarray) -> torch.Tensor:
        self.policy.eval()
        return self._forward(state, goal, remaining)

    def epsilon(self, env_steps: int) -> float:
        return linear_epsilon(self.shared, env_steps)

    def log_values(self, env_steps: int) -> dict[str, float]:
        return {"epsilon": self.epsilon(env_steps)}

    def _forward(self, state, goal, remaining) -> torch.Tensor:
        dev, nd = self.device, len(self.spec.frame_shape)
        state = frames_to_channels(torch.as_tensor(state, device=dev), nd)
        goal = frames_to_channels(torch.as_tensor(goal, device=dev), nd)
        return self.policy(state, self.policy.encode_goal(goal), torch.as_tensor(remaining, device=dev))

    # ---------------------------------------------------------------- learning
    def loss(self, batch: HindsightBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 10: NLL of the first action of each hindsight sample, given s, g and h = k."""
        keep = batch.k > 0
        if not keep.any():  # only final frames: nothing to imitate
            zero = sum(p.sum() * 0 for p in self.policy.parameters())
            return zero, {"loss": 0.0, "accuracy": 0.0}
        logits = self._forward(batch.state[keep], batch.goal[keep], batch.k[keep])
        if not self.spec.discrete:      # the Gaussian NLL of the first action, in [-1, 1] units
            target = self._to_unit(torch.as_tensor(batch.actions[keep, 0], device=self.device).reshape(
                len(logits), -1))
            mean, log_std = self.gaussian(logits)
            nll = (0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)
            loss = nll.mean()
            return loss, {"loss": loss.item(), "action_error": (mean.detach() - target).abs().mean().item()}
        target = torch.as_tensor(batch.actions[keep, 0], device=self.device)
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"loss": loss.item(), "accuracy": accuracy.item()}

    def update(self, batch: HindsightBatch) -> dict[str, float]:
        self.policy.train()
        loss, metrics = self.loss(batch)
        metrics["grad_norm"] = self.learner.step(loss)
        self.learner.count()
        return metrics

    @property
    def updates(self) -> int:
        return self.learner.updates

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), **self.learner.state_dict(),
                "rng": self.rng.bit_generator.state, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.learner.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
