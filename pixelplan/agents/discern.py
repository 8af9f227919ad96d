"""DISCERN (Warde-Farley et al. 2019): a learned goal discriminator supplies the reward of a
goal-conditioned Q-learner. A best-effort reproduction: no official code exists (the GLAMOR
authors say the same of theirs), so every choice below is ours unless it says "paper".

The three parts:

* **Discriminator** (paper): an embedding xi(x) of single frames, L2-normalised. Given where
  an episode ended, s_T, it must pick the goal g the agent was pursuing out of g and
  ``decoys`` frames from the goal buffer: softmax over ``beta * xi(s_T) . xi(.)``, trained
  by cross entropy. It learns what the agent controls, because only that tells goals apart.
  One draw of decoys serves the whole batch (ours, for speed: the paper's per-example
  decoys cost B x decoys frame encodings per update).
* **Reward** (paper): ``r = max(0, xi(s_T) . xi(g))``, given at the last step only. See
  ``reward``.
* **Goal buffer** (paper: a buffer of past observations with a diversity-seeking
  replacement): ``goal_buffer_size`` frames, filled with the final frames of collected
  episodes. Once full, a new frame replaces a random entry if its mean squared pixel
  distance to the rest of the buffer is larger than that entry's (our reading of the
  paper's diversity heuristic). Training episodes pursue goals drawn from this buffer
  (``goal_source="buffer"``), or the env's training goals until it holds any frame, or
  always (``"env"``). The discriminator draws its decoys from it.

The Q-network Q(s, g, h, a) uses GLAMOR's encoders and sizes (like GCSL), with the time
remaining h encoded as ``(sin 2 pi h / T, cos 2 pi h / T)`` (GLAMOR paper 4.2). Learning is
off-policy from the shared hindsight replay, so its data flow is the one every agent here
uses:

* A replay sample (s_t, a_t, s_{t+1}, s_{t+k}) with k >= 1 becomes a finite-horizon transition
  with h = k steps left: the episode "ends" at s_{t+k}. Its goal is the frame it reached,
  s_{t+k}, with probability ``relabel_prob`` (hindsight relabelling; the reward is then
  xi(s_{t+k}) . xi(s_{t+k}) = 1), and otherwise a goal-buffer frame, rewarded by the
  discriminator.
* Target: r(s_{t+k}, g) when k = 1, else ``discount * Q_target(s_{t+1}, g, k - 1, a*)`` with
  a* the online network's argmax (double Q-learning); Huber loss. The target network is a
  copy of the online one, refreshed every ``target_update`` updates.

Departures from the paper, for the shared budget and machinery of this library:
one-step double Q-learning instead of the paper's Q(lambda) over IMPALA-style distributed
actors; a single learner and replay; the discriminator learns from the last
``pairs_capacity`` (final frame, pursued goal) pairs rather than from each episode once;
GLAMOR's epsilon-greedy schedule and optimiser settings (shared, config.py); and no
observation-space reward shaping or auxiliary losses. Evaluation is greedy in Q and runs to T.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pixelplan.agents.base import (AgentBase, Decision, EnvSpec, Learner, batch_rows, check_batch, frames_to_channels,
                                   linear_epsilon)
from pixelplan.config import Config
from pixelplan.data.replay import HindsightBatch
from pixelplan.data.samplers import HindsightSampler
from pixelplan.nets.encoders import make_encoder, set_precision
from pixelplan.nets.goal_policy import GoalTimeNet


def discern_reward(achieved: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """``max(0, achieved . goal)`` row by row, for L2-normalised embeddings (B, D)."""
    return (achieved * goal).sum(-1).clamp_min(0.0)


class GoalEmbedding(nn.Module):
    """xi: a single frame -> a unit vector (the discriminator's space)."""

    def __init__(self, encoder: str, channels: int, frame_hw: tuple[int, int], hidden: int, size: int):
        super().__init__()
        self.encoder = make_encoder(encoder, channels, frame_hw, hidden)
        self.out = nn.Linear(hidden, size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.out(torch.relu(self.encoder(frames))), dim=-1)


class DiscernAgent(AgentBase):
    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, seed: int):
        spec.require_discrete("DISCERN")
        spec.require_goals("DISCERN")
        self.shared, self.cfg, self.spec, self.device = cfg.shared, cfg.discern, spec, device
        self.batch_size = self.shared.batch_size
        self.max_k = self.shared.max_k or spec.max_episode_steps
        # Batches carry s_{t+1} (with_next) for the one-step TD target.
        self.sampler = HindsightSampler(self.batch_size, self.max_k, with_next=True)
        torch.manual_seed(seed)
        colours = spec.frame_shape[2] if len(spec.frame_shape) == 3 else 1
        hw = tuple(spec.frame_shape[:2])
        self.q = GoalTimeNet.for_frames(self.shared.encoder, spec.frame_shape, spec.frame_stack,
                                        self.shared.state_size, self.shared.mix_hidden, spec.n_actions,
                                        spec.max_episode_steps).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.embed = GoalEmbedding(self.shared.encoder, colours, hw, self.shared.state_size,
                                   self.cfg.embed_size).to(device)
        self.precision = set_precision(self.q, self.shared.precision, device)
        set_precision(self.q_target, self.shared.precision, device)
        set_precision(self.embed, self.shared.precision, device)
        self.learner = Learner.from_shared([*self.q.parameters(), *self.embed.parameters()], self.shared)
        self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.goal_buffer = np.zeros((c.goal_buffer_size, *spec.frame_shape), np.uint8)
        self.goal_count = 0
        self.pair_final = np.zeros((c.pairs_capacity, *spec.frame_shape), np.uint8)
        self.pair_goal = np.zeros_like(self.pair_final)
        self.pair_count = 0
        self._pursued: dict[int, np.ndarray] = {}   # env row -> goal of its current training episode

    # ------------------------------------------------------------------ acting
    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None:
        """A training episode pursues a goal chosen now and kept to its end: a goal-buffer frame
        (``goal_source = "buffer"``, once there is one) or the driver's goal."""
        if not explore:
            return
        for i, row in enumerate(batch_rows(rows, len(goals))):
            use_buffer = self.cfg.goal_source == "buffer" and self.goal_count > 0
            chosen = self.goal_buffer[self.rng.integers(self.goal_count)] if use_buffer else goals[i]
            self._pursued[int(row)] = chosen.copy()

    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool,
            env_steps: int, rows: np.ndarray | None = None) -> Decision:
        """Greedy in Q(s, g, T - t); epsilon-greedy towards goal-buffer goals when exploring."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        check_batch("goal", goal, self.spec.frame_shape)
        t = np.atleast_1d(np.asarray(t))
        n = len(t)
        if explore:
            goal = np.stack([self._pursued.get(int(r), goal[i]) for i, r in enumerate(batch_rows(rows, n))])
            random_actions = self.rng.integers(self.spec.n_actions, size=n)
            if self.shared.collect == "random":
                return Decision.go(random_actions)
        greedy = self.q_values(state, goal, np.maximum(self.spec.max_episode_steps - t, 1)).argmax(-1).cpu().numpy()
        if not explore:
            return Decision.go(greedy)
        return Decision.go(np.where(self.rng.random(n) < self.epsilon(env_steps), random_actions, greedy))

    def epsilon(self, env_steps: int) -> float:
        return linear_epsilon(self.shared, env_steps)

    def log_values(self, env_steps: int) -> dict[str, float]:
        return {"epsilon": self.epsilon(env_steps)}

    @torch.no_grad()
    def q_values(self, state: np.ndarray, goal: np.ndarray, remaining: np.ndarray) -> torch.Tensor:
        self.q.eval()
        return self._q(self.q, self._frames(state), self._frames(goal), torch.as_tensor(remaining, device=self.device))

    def _frames(self, frames: np.ndarray) -> torch.Tensor:
        return frames_to_channels(torch.as_tensor(frames, device=self.device), len(self.spec.frame_shape))

    @staticmethod
    def _q(net: GoalTimeNet, state: torch.Tensor, goal: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        return net(state, net.encode_goal(goal), remaining)

    # ------------------------------------------------- goal buffer, discriminator
    def end_episodes(self, rows: np.ndarray, final_frames: np.ndarray, goals: np.ndarray | None,
                     explore: bool) -> None:
        """Where each training episode ended, and the goal it pursued: a discriminator pair, and
        the final frame joins the goal buffer (evaluation episodes teach nothing)."""
        if not explore:
            return
        for row, final, goal in zip(batch_rows(rows, len(final_frames)), final_frames, goals):
            pursued = self._pursued.pop(int(row), goal)
            slot = self.pair_count % self.cfg.pairs_capacity
            self.pair_final[slot], self.pair_goal[slot] = final, pursued
            self.pair_count += 1
            self._add_goal(final)

    def _add_goal(self, frame: np.ndarray) -> None:
        size = self.cfg.goal_buffer_size
        if self.goal_count < size:
            self.goal_buffer[self.goal_count] = frame
            self.goal_count += 1
            return
        j = int(self.rng.integers(size))
        buffer = self.goal_buffer.reshape(size, -1).astype(np.float32)
        others = np.delete(buffer, j, axis=0)
        spread = lambda x: float(((others - x) ** 2).mean())  # noqa: E731
        if spread(frame.reshape(-1).astype(np.float32)) > spread(buffer[j]):
            self.goal_buffer[j] = frame

    @torch.no_grad()
    def reward(self, achieved: np.ndarray, goal: np.ndarray) -> torch.Tensor:
        """DISCERN's reward for ending on frames ``achieved`` when pursuing ``goal`` frames."""
        self.embed.eval()
        return discern_reward(self.embed(self._frames(achieved)), self.embed(self._frames(goal)))

    def discriminator_loss(self, final: np.ndarray, pursued: np.ndarray, decoys: np.ndarray) -> torch.Tensor:
        """Cross entropy of picking ``pursued[i]`` among it and the ``decoys`` (D, ...) given ``final[i]``.

        The decoys are shared by the batch: B + B + D frames to embed instead of B x (D + 2).
        """
        e_final = self.embed(self._frames(final))
        e_pursued = self.embed(self._frames(pursued))
        e_decoys = self.embed(self._frames(decoys))
        logits = self.cfg.beta * torch.cat([(e_final * e_pursued).sum(-1, keepdim=True), e_final @ e_decoys.T], 1)
        return F.cross_entropy(logits, torch.zeros(len(final), dtype=torch.long, device=self.device))

    # ---------------------------------------------------------------- learning
    def td_loss(self, batch: HindsightBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Huber loss of Q(s_t, g, k, a_t) against the finite-horizon double-Q target."""
        keep = batch.k > 0
        k = batch.k[keep]
        achieved = batch.goal[keep]
        goal = achieved.copy()
        if self.goal_count:
            swap = self.rng.random(len(k)) >= self.cfg.relabel_prob
            goal[swap] = self.goal_buffer[self.rng.integers(self.goal_count, size=int(swap.sum()))]
        target, r = self.td_targets(batch.next_state[keep], goal, achieved, k)
        self.q.train()
        action = torch.as_tensor(batch.actions[keep, 0], device=self.device)
        q = self._q(self.q, self._frames(batch.state[keep]), self._frames(goal),
                    torch.as_tensor(k, device=self.device)).gather(1, action[:, None])[:, 0]
        loss = F.smooth_l1_loss(q, target)
        return loss, {"td_loss": loss.item(), "q": q.mean().item(), "reward": r.mean().item()}

    @torch.no_grad()
    def td_targets(self, next_state: np.ndarray, goal: np.ndarray, achieved: np.ndarray,
                   k: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, rewards) of transitions with k >= 1 steps left before ending on ``achieved``.

        k = 1: the reward of ending on ``achieved`` while pursuing ``goal``. k > 1: the discounted
        target-network value of ``next_state`` with k - 1 steps left, at the online argmax.
        """
        k_t = torch.as_tensor(k, device=self.device)
        r = self.reward(achieved, goal)
        nxt, goal_t, left = self._frames(next_state), self._frames(goal), (k_t - 1).clamp_min(1)
        self.q.eval()
        best = self._q(self.q, nxt, goal_t, left).argmax(-1, keepdim=True)
        boot = self._q(self.q_target, nxt, goal_t, left).gather(1, best)[:, 0]
        return torch.where(k_t == 1, r, self.cfg.discount * boot), r

    def update(self, batch: HindsightBatch) -> dict[str, float]:
        if batch.next_state is None:
            raise ValueError("DISCERN needs batches with next_state (ReplayBuffer.sample(..., with_next=True))")
        metrics: dict[str, float] = {}
        loss = torch.zeros((), device=self.device)
        if (batch.k > 0).any():
            td, metrics = self.td_loss(batch)
            loss = loss + td
        if self.pair_count and self.goal_count:
            n_pairs = min(self.pair_count, self.cfg.pairs_capacity)
            idx = self.rng.integers(n_pairs, size=self.batch_size)
            decoys = self.goal_buffer[self.rng.integers(self.goal_count, size=self.cfg.decoys)]
            self.embed.train()
            disc = self.discriminator_loss(self.pair_final[idx], self.pair_goal[idx], decoys)
            loss = loss + disc
            metrics["disc_loss"] = disc.item()
        if loss.requires_grad:
            metrics["grad_norm"] = self.learner.step(loss)
        if self.learner.count() % self.cfg.target_update == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return metrics

    @property
    def updates(self) -> int:
        return self.learner.updates

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "embed": self.embed.state_dict(), **self.learner.state_dict(),
                "rng": self.rng.bit_generator.state,
                "goal_buffer": self.goal_buffer[:self.goal_count].copy(),
                "pair_final": self.pair_final[:self.pair_count].copy(),
                "pair_goal": self.pair_goal[:self.pair_count].copy(), "pair_count": self.pair_count,
                "pursued": dict(self._pursued)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.embed.load_state_dict(state["embed"])
        self.learner.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        goals = np.asarray(state["goal_buffer"])
        if goals.shape[1:] != self.goal_buffer.shape[1:] or len(goals) > len(self.goal_buffer):
            raise ValueError(f"goal buffer of shape {goals.shape} does not fit this agent's {self.goal_buffer.shape}")
        self.goal_count = len(goals)
        self.goal_buffer[:self.goal_count] = goals
        self.pair_count = int(state["pair_count"])
        kept = len(state["pair_final"])
        self.pair_final[:kept], self.pair_goal[:kept] = state["pair_final"], state["pair_goal"]
        self._pursued = dict(state["pursued"])
