"""MBOLD: model-based offline planning with dynamical distances (Tian, Nair, Ebert, Dasari,
Eysenbach, Finn, Levine; ICLR 2021), with the paper's baselines as switches.

From a fixed dataset of random trajectories and no reward, MBOLD learns two things and plans
with them toward a goal image:

* **Dynamics** (``nets/video.py``): an action-conditioned video prediction model, 2 context
  frames, trained on windows of 15 frames to predict the other 13 (equation 1; the released
  configuration's l1 image loss, Adam 1e-3).
* **Distance** (``nets/distance.py``, A.1, table 2): a goal-conditioned Q-function on images,
  trained with reward 1 per step and 10 (and termination) when the next frame *is* the goal,
  gamma 0.8, TD3's twin critics with target policy smoothing (noise 0.1 clipped at 0.2) and
  Polyak 0.995, Adam 3e-4, batches of 64. Goals are relabelled from the same trajectory's
  future with a geometric offset (p = 0.3) for half of each batch, and for the other half are
  "negatives": frames of *other* trajectories whose arm joints are near the state's (a kNN
  index over 200,000 frames' joints, faiss), never rewarded. CQL with a Lagrange multiplier
  (lr 1e-3, slack 30, 10 on the door; 10 uniformly random actions) keeps out-of-data actions'
  values down.
* **Sampler**: :class:`~pixelplan.data.samplers.MboldSampler`, the video windows and the
  distance's goal pairs of one update drawn together.
* **Acting** (A.2, table 3): CEM over action sequences of 13 steps, 3 iterations of 200
  correlated-noise samples (the filter of Nagabandi et al., started at the dataset's
  collection std), refit to the 10 best; a candidate's score is Q(final predicted frame,
  actor(final predicted frame, goal), goal); the best sequence found is executed for 6 steps,
  then the agent replans.

**Baselines** on the same dataset, models and protocol (figures 3, 5, 7 and table 1):

* ``distance = pixel``: Visual Foresight, the same video model and CEM with the negative pixel
  l2 between the final predicted frame and the goal as the score;
* ``distance = vae``: the negative l2 between the two frames' posterior means under a beta-VAE
  (latent 8, KL weight 1e-3, B.1);
* ``distance = temporal``: minus a regression of the steps between two frames of one trajectory
  (uniform later frame, label clipped at 10, C.2);
* ``negatives = none``: MBOLD without negative mining;
* ``planner = actor``: the Q-function's actor acting directly, no model; ``planner =
  q_shooting``: the best of 100 uniform random actions under Q, what the paper reports as
  "Q-function only" (C.3).

Where this implementation departs from the paper or its released code, or chooses where they
are silent (docs/mbold.md lists each with its reason):

* The video model is our own small conv-LSTM in SAVP's spirit; its rollout stays in latent
  space after the context (nets/video.py), so there is no scheduled sampling.
* One update is one step of each model that is trained (the paper trains the video model for
  200k steps and the distance for 94k separately; ``distance_updates`` stops the distance
  early); ``video_from`` reuses another run's trained video model, frozen, so that the
  baselines of one dataset can share one, and ``distance_from`` another run's Q-function, so
  that "Q-function only" can be MBOLD's own Q (the paper does not say whether its Q-only row
  retrained one).
* At a plan's start the context is the state's two frames and the action executed between them
  (zeros at an episode's first step, where the stack repeats the first frame).
* The CQL gap is logsumexp over the random actions' Q (with the uniform density's importance
  weight, as CQL's code has it) minus the data action's Q, per critic, weight 1.
* The twin critics' minimum scores plans; the target networks' batch-norm statistics are
  Polyak-averaged with their weights and used in eval mode.
* Negatives are exactly half of each batch, the rows chosen at random; a negative is drawn
  uniformly from the 10 nearest indexed frames of other trajectories (the paper does not give k).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pixelplan.agents.base import AgentBase, Decision, EnvSpec, batch_rows, check_batch
from pixelplan.config import Config
from pixelplan.data.samplers import GoalPairBatch, GoalPairSampler, MboldBatch, MboldSampler, SequenceSampler
from pixelplan.nets.distance import Actor, Critic, FrameVAE, TemporalDistance
from pixelplan.nets.encoders import resolve_precision
from pixelplan.nets.video import VideoModel
from pixelplan.planners.cem import cem

#: the most candidate frames one model call predicts at acting (bounds the planner's memory)
PLAN_CHUNK = 1024


class MboldAgent(AgentBase):
    """MBOLD and its baselines (see the module doc)."""

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, seed: int):
        # The dataset first: `--agent mbold` alone, on the default (discrete) env, should say
        # what MBOLD needs rather than what the default env lacks.
        if cfg.dataset is None:
            raise ValueError("MBOLD learns offline from a dataset of random trajectories: pixelplan train --agent mbold "
                             "--dataset FILE (write one with pixelplan collect --env tabletop:push1 --episodes N --out FILE)")
        _check_spec(spec)
        self.cfg, self.spec, self.device = cfg.mbold, spec, device
        m = self.cfg
        self.action_dim = int(np.prod(spec.action_shape))
        low, high = spec.action_bounds()
        self.low = torch.as_tensor(low.reshape(-1), device=device)
        self.high = torch.as_tensor(high.reshape(-1), device=device)
        self.frame_shape = tuple(spec.frame_shape)
        torch.manual_seed(seed)
        self.precision = resolve_precision(m.precision, device)
        self.uses_video = m.planner == "cem"
        # the frames a plan's prediction spans, context included: what CEM scores the last of
        # (pixelplan distances predicts windows of this length)
        self.prediction_window = m.context + m.horizon
        self.trains_video = self.uses_video and m.video_from is None
        self.uses_q = m.distance == "q" or m.planner in ("actor", "q_shooting")
        if m.distance_from is not None and not self.uses_q:
            raise ValueError(f"mbold.distance_from reuses a Q-function, but this configuration (distance "
                             f"{m.distance}, planner {m.planner}) uses none: drop --mbold.distance-from, or use "
                             f"--mbold.distance q or --mbold.planner q_shooting / actor")
        self.trains_q = self.uses_q and m.distance_from is None
        self.nets: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.uses_video:
            self.video = VideoModel(self.action_dim, spec.frame_shape[2], m.video_width, m.video_hidden).to(device)
            self.nets["video"] = self.video
            if self.trains_video:
                self.optimizers["video"] = torch.optim.Adam(self.video.parameters(), lr=m.video_lr)
            else:
                _load_frozen({"video": self.video}, m.video_from, "video_from", "its video model")
        if self.uses_q:
            self.critics = torch.nn.ModuleList([Critic(self.frame_shape, self.action_dim) for _ in range(2)]).to(device)
            self.actor = Actor(self.frame_shape, self.action_dim).to(device)
            self.target_critics = copy.deepcopy(self.critics).requires_grad_(False).eval()
            self.target_actor = copy.deepcopy(self.actor).requires_grad_(False).eval()
            self.log_alpha = torch.zeros((), device=device, requires_grad=True)
            self.nets.update(critics=self.critics, actor=self.actor, target_critics=self.target_critics,
                             target_actor=self.target_actor)
            if self.trains_q:
                self.optimizers.update(critics=torch.optim.Adam(self.critics.parameters(), lr=m.lr),
                                       actor=torch.optim.Adam(self.actor.parameters(), lr=m.lr),
                                       alpha=torch.optim.Adam([self.log_alpha], lr=m.cql_alpha_lr))
            else:
                _load_frozen({k: self.nets[k] for k in ("critics", "actor", "target_critics", "target_actor")},
                             m.distance_from, "distance_from", "its Q-function")
                self.log_alpha.requires_grad_(False)
        if m.distance == "vae":
            self.vae = FrameVAE(self.frame_shape, m.vae_latent).to(device)
            self.nets["vae"] = self.vae
            self.optimizers["vae"] = torch.optim.Adam(self.vae.parameters(), lr=m.lr)
        if m.distance == "temporal":
            self.temporal = TemporalDistance(self.frame_shape).to(device)
            self.nets["temporal"] = self.temporal
            self.optimizers["temporal"] = torch.optim.Adam(self.temporal.parameters(), lr=m.lr)
        self.sampler = self._sampler(spec, seed)
        self.updates = 0
        self.eval_trials = m.candidates if self.uses_video else None
        self.init_std = torch.as_tensor(_init_std(cfg, spec), dtype=torch.float32, device=device)
        self.rng = np.random.default_rng(seed)
        self.train_generator = torch.Generator(device=device)
        self.train_generator.manual_seed(seed)
        self.act_generator = torch.Generator(device=device)
        self.act_generator.manual_seed(seed + 1)
        # per env row: the rest of the current plan, and the actions executed last
        self._plans: dict[int, list[np.ndarray]] = {}
        self._executed: dict[int, list[np.ndarray]] = {}
        # each plan's mean elite score per CEM iteration since the last diagnostics (cost curves)
        self._cost_curves: list[np.ndarray] = []

    def _sampler(self, spec: EnvSpec, seed: int) -> MboldSampler:
        m = self.cfg
        windows = SequenceSampler(m.video_batch, m.window) if self.trains_video else None
        pairs = None
        if self.trains_q:
            pairs = GoalPairSampler(m.batch_size, law="geometric", p=m.goal_p)
        elif m.distance == "temporal":      # C.2: the goal uniform over the trajectory's later frames
            pairs = GoalPairSampler(m.batch_size, law="uniform", max_offset=spec.max_episode_steps)
        elif m.distance == "vae":           # single frames: the pairs' states
            pairs = GoalPairSampler(m.batch_size, law="geometric", p=m.goal_p)
        # windows and pairs both None: nothing to train (Visual Foresight on a reused video model,
        # or Q-only on a reused Q-function); a run then only evaluates, with the models of the run
        # that trained them
        negatives = m.negatives if self.trains_q else "none"
        return MboldSampler(windows, pairs, negatives=negatives, negative_frac=m.negative_frac,
                            actuated=spec.actuated_features, n_index=m.knn_states, neighbours=m.knn_neighbours,
                            index_seed=seed)

    # ------------------------------------------------------------------ tensors
    def _frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (..., H, W, C) -> float (..., C, H, W) in [0, 1] on the device."""
        # np.require copies read-only arrays (test tasks' frames are frozen), which torch warns on
        x = torch.as_tensor(np.require(frames, requirements=("C", "W")), device=self.device)
        return x.movedim(-1, -3).float().div_(255.0)

    def _unit_actions(self, actions) -> torch.Tensor:
        """Env actions -> [-1, 1] (what the actor outputs and the critics read)."""
        a = torch.as_tensor(np.asarray(actions, np.float32), device=self.device).reshape(-1, self.action_dim)
        return ((a - self.low) / (self.high - self.low).clamp_min(1e-8) * 2 - 1).clamp(-1, 1)

    def _env_actions(self, unit: torch.Tensor) -> torch.Tensor:
        return self.low + (unit.clamp(-1, 1) + 1) / 2 * (self.high - self.low)

    # ---------------------------------------------------------------- learning
    def update(self, batch: MboldBatch) -> dict[str, float]:
        """One step of every model this configuration trains."""
        out: dict[str, float] = {}
        if batch.windows is not None:
            out.update(self._video_step(batch.windows))
        m = self.cfg
        if batch.pairs is not None and (m.distance_updates is None or self.updates < m.distance_updates):
            if self.trains_q:
                out.update(self._q_step(batch.pairs))
            if m.distance == "vae":
                out.update(self._vae_step(batch.pairs))
            if m.distance == "temporal":
                out.update(self._temporal_step(batch.pairs))
        self.updates += 1
        return out

    def video_loss(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Equation 1 on windows (B, L, C, H, W): the image loss of every predicted frame
        (frames 1..L-1; after the context, predicted from the actions alone)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            pred = self.video.rollout(frames[:, :self.cfg.context], actions, keep="train")
        err = pred.float() - frames[:, 1:]
        return err.abs().mean() if self.cfg.image_loss == "l1" else err.pow(2).mean()

    def _video_step(self, windows) -> dict[str, float]:
        self.video.train()
        frames = self._frames(windows.frames)
        actions = self._unit_actions(windows.actions).view(*windows.actions.shape[:2], self.action_dim)
        loss = self.video_loss(frames, actions)
        opt = self.optimizers["video"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"video_loss": float(loss.detach())}

    def rewards(self, pairs: GoalPairBatch) -> tuple[np.ndarray, np.ndarray]:
        """(reward, reached) per row: reached where the next frame is the goal (a positive at
        offset 1); reward ``reward_goal`` there, else ``reward_step`` (negatives: never reached)."""
        reached = (~pairs.negative) & (pairs.offset == 1)
        return np.where(reached, self.cfg.reward_goal, self.cfg.reward_step).astype(np.float32), reached

    def q_targets(self, next_pair: torch.Tensor, reward: torch.Tensor, reached: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - reached) min_j Q'_j(s', clip(pi'(s', g) + clip(noise), -1, 1), g),
        with ``noise`` standard normal (scaled and clipped here: TD3's target smoothing)."""
        m = self.cfg
        with torch.no_grad():
            eps = (noise * m.target_noise).clamp(-m.target_noise_clip, m.target_noise_clip)
            a2 = (self.target_actor(next_pair) + eps).clamp(-1, 1)
            q_next = torch.minimum(*(c(next_pair, a2) for c in self.target_critics))
            return reward + m.gamma * (1 - reached.float()) * q_next

    def cql_gaps(self, pair: torch.Tensor, action: torch.Tensor, random_actions: torch.Tensor) -> list[torch.Tensor]:
        """Per critic: mean over rows of logsumexp_i (Q(s, u_i, g) - log density(u_i)) minus the
        mean Q of the data's actions; ``random_actions`` (B, N, A) uniform on [-1, 1]^A."""
        b, n, a = random_actions.shape
        log_density = -a * math.log(2.0)
        gaps = []
        for critic in self.critics:
            feats = critic.encoder(pair)
            q_data = critic.head(torch.cat([feats, action], 1)).squeeze(1)
            rep = feats.unsqueeze(1).expand(b, n, feats.shape[1]).reshape(b * n, -1)
            q_rand = critic.head(torch.cat([rep, random_actions.reshape(b * n, a)], 1)).view(b, n)
            gaps.append(torch.logsumexp(q_rand - log_density, 1).mean() - q_data.mean())
        return gaps

    def _q_step(self, pairs: GoalPairBatch) -> dict[str, float]:
        m = self.cfg
        self.critics.train()
        self.actor.train()
        state = self._frames(pairs.state[:, -1])
        next_state = self._frames(pairs.next_state[:, -1])
        goal = self._frames(pairs.goal)
        pair, next_pair = torch.cat([state, goal], 1), torch.cat([next_state, goal], 1)
        action = self._unit_actions(pairs.action)
        reward_np, reached_np = self.rewards(pairs)
        reward = torch.as_tensor(reward_np, device=self.device)
        reached = torch.as_tensor(reached_np, device=self.device)
        noise = torch.randn(action.shape, generator=self.train_generator, device=self.device)
        y = self.q_targets(next_pair, reward, reached, noise)
        qs = [c(pair, action) for c in self.critics]
        td = sum(F.mse_loss(q, y) for q in qs)
        loss, out = td, {"q_td": float(td.detach()), "q_mean": float(qs[0].detach().mean())}
        if m.cql:
            rand = torch.rand((len(action), m.cql_actions, self.action_dim), generator=self.train_generator,
                              device=self.device) * 2 - 1
            gaps = self.cql_gaps(pair, action, rand)
            alpha = self.log_alpha.exp().clamp(0.0, 1e6)
            loss = loss + alpha.detach() * sum(g - m.cql_slack for g in gaps)
            alpha_loss = -alpha * sum(g.detach() - m.cql_slack for g in gaps) / len(gaps)
            self.optimizers["alpha"].zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.optimizers["alpha"].step()
            out.update(cql_gap=float(sum(gaps).detach()) / len(gaps), cql_alpha=float(alpha.detach()))
        self.optimizers["critics"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["critics"].step()
        if self.updates % m.policy_delay == 0:
            actor_loss = -self.critics[0](pair, self.actor(pair)).mean()
            self.optimizers["actor"].zero_grad(set_to_none=True)
            actor_loss.backward()
            self.optimizers["actor"].step()
            out["actor_loss"] = float(actor_loss.detach())
        _polyak(self.target_critics, self.critics, m.polyak)
        _polyak(self.target_actor, self.actor, m.polyak)
        return out

    def _vae_step(self, pairs: GoalPairBatch) -> dict[str, float]:
        self.vae.train()
        frame = self._frames(pairs.state[:, -1])
        recon, mean, log_std = self.vae(frame, self.train_generator)
        rec = F.binary_cross_entropy(recon, frame, reduction="none").sum((1, 2, 3)).mean()
        kl = 0.5 * (mean.pow(2) + (2 * log_std).exp() - 1 - 2 * log_std).sum(1).mean()
        loss = rec + self.cfg.vae_kl * kl
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"vae_recon": float(rec.detach()), "vae_kl": float(kl.detach())}

    def _temporal_step(self, pairs: GoalPairBatch) -> dict[str, float]:
        self.temporal.train()
        pair = torch.cat([self._frames(pairs.state[:, -1]), self._frames(pairs.goal)], 1)
        label = torch.as_tensor(np.minimum(pairs.offset, self.cfg.temporal_max), dtype=torch.float32,
                                device=self.device)
        loss = F.mse_loss(self.temporal(pair), label)
        opt = self.optimizers["temporal"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"temporal_loss": float(loss.detach())}

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, frames: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """How close each frame (N, C, H, W) is to its goal (N, C, H, W) under the configured
        distance: higher is closer (the planner maximises it)."""
        d = self.cfg.distance
        if d == "q":
            pair = torch.cat([frames, goal], 1)
            action = self.actor.eval()(pair)
            self.critics.eval()
            return torch.minimum(*(c(pair, action) for c in self.critics))
        if d == "pixel":
            return -(frames - goal).pow(2).flatten(1).sum(1)
        if d == "vae":
            self.vae.eval()
            return -(self.vae.stats(frames)[0] - self.vae.stats(goal)[0]).norm(dim=1)
        self.temporal.eval()
        return -self.temporal(torch.cat([frames, goal], 1))

    def distance(self, frames: np.ndarray, goal: np.ndarray, chunk: int = 256) -> np.ndarray:
        """The configured distance (minus :meth:`score`) from each uint8 frame (N, H, W, C) to
        one goal frame (H, W, C): what figure 6 draws."""
        check_batch("frames", frames, self.spec.frame_shape)
        goal_t = self._frames(np.asarray(goal)[None])
        out = []
        for lo in range(0, len(frames), chunk):
            x = self._frames(frames[lo:lo + chunk])
            out.append(-self.score(x, goal_t.expand(len(x), *goal_t.shape[1:])).cpu().numpy())
        return np.concatenate(out)

    # ------------------------------------------------------------------ acting
    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None:
        for r in np.asarray(rows).reshape(-1).tolist():
            self._plans.pop(r, None)
            self._executed[r] = []

    def act(self, state: np.ndarray, goal: np.ndarray, t: np.ndarray, explore: bool, env_steps: int,
            rows: np.ndarray | None = None) -> Decision:
        """One action per row: the next of the row's current plan, replanning the rows whose
        plan is used up (every ``execute`` steps)."""
        check_batch("state", state, (self.spec.frame_stack, *self.spec.frame_shape))
        check_batch("goal", goal, self.spec.frame_shape)
        n = len(state)
        rows = batch_rows(rows, n)
        need = [i for i, r in enumerate(rows.tolist()) if not self._plans.get(r)]
        if need:
            plans = self.plan(state[need], goal[need], np.stack([self._recent_actions(rows[i]) for i in need]))
            for i, plan in zip(need, plans):
                self._plans[int(rows[i])] = list(plan)
        actions = np.stack([self._plans[int(r)].pop(0) for r in rows]).astype(np.float32)
        for r, a in zip(rows.tolist(), actions):
            self._executed.setdefault(r, []).append(a)
            del self._executed[r][:-max(self.cfg.context - 1, 1)]          # keep what a context needs
        return Decision.go(actions.reshape(n, *self.spec.action_shape))

    def _recent_actions(self, row: int) -> np.ndarray:
        """The ``context - 1`` actions executed between the state's last frames (oldest first;
        zeros before the episode's first action, where the stack repeats the first frame)."""
        need = self.cfg.context - 1
        done = self._executed.get(int(row), [])[-need:] if need else []
        pad = [np.zeros(self.spec.action_shape, np.float32)] * (need - len(done))
        return np.stack(pad + list(done)) if need else np.zeros((0, *self.spec.action_shape), np.float32)

    @torch.no_grad()
    def plan(self, state: np.ndarray, goal: np.ndarray, recent_actions: np.ndarray) -> np.ndarray:
        """(B, execute, *action_shape) env actions for each row: CEM over the video model
        (``planner = cem``; ``recent_actions`` (B, context - 1, *action_shape) are the actions
        between the state's context frames, oldest first), the actor's action, or the best of
        random actions under Q."""
        m = self.cfg
        goal_t = self._frames(goal)
        now = self._frames(state[:, -1])
        if m.planner == "actor":
            unit = self.actor.eval()(torch.cat([now, goal_t], 1))
            return self._env_actions(unit).cpu().numpy().reshape(len(state), 1, *self.spec.action_shape)
        if m.planner == "q_shooting":
            b, k = len(state), m.shooting_actions
            unit = torch.rand((b, k, self.action_dim), generator=self.act_generator, device=self.device) * 2 - 1
            pair = torch.cat([now, goal_t], 1).repeat_interleave(k, 0)
            self.critics.eval()
            q = torch.minimum(*(c(pair, unit.reshape(b * k, -1)) for c in self.critics)).view(b, k)
            best = unit[torch.arange(b), q.argmax(1)]
            return self._env_actions(best).cpu().numpy().reshape(b, 1, *self.spec.action_shape)
        self.video.eval()
        context = self._frames(state[:, -m.context:])                       # (B, c, C, H, W)
        if context.shape[1] < m.context:
            raise ValueError(f"the video model needs {m.context} context frames, the state holds {context.shape[1]}: "
                             f"train with frame_stack >= {m.context}")
        context_actions = self._unit_actions(recent_actions).view(len(state), m.context - 1, self.action_dim)
        candidates = self.eval_trials or m.candidates           # pixelplan eval --trials overrides it

        def score_fn(unit: torch.Tensor) -> torch.Tensor:           # (B, J, H, A) -> (B, J)
            b, j = unit.shape[:2]
            ctx = context.repeat_interleave(j, 0)
            acts = torch.cat([context_actions.repeat_interleave(j, 0), unit.reshape(b * j, m.horizon, -1)], 1)
            goals = goal_t.repeat_interleave(j, 0)
            scores = []
            for lo in range(0, b * j, PLAN_CHUNK):
                hi = min(lo + PLAN_CHUNK, b * j)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                    last = self.video.rollout(ctx[lo:hi], acts[lo:hi], keep="last")
                scores.append(self.score(last.float(), goals[lo:hi]))
            return torch.cat(scores).view(b, j)

        unit_std = (self.init_std * 2 / (self.high - self.low).clamp_min(1e-8)).expand(m.horizon, self.action_dim)
        result = cem(score_fn, batch=len(state), horizon=m.horizon, action_dim=self.action_dim,
                     candidates=candidates, iterations=m.iterations, elites=min(m.elites, candidates),
                     init_std=unit_std,
                     noise="correlated", beta=m.noise_beta, generator=self.act_generator, device=self.device)
        self.last_plan_score = result.best_score.cpu().numpy()
        self._cost_curves.append(result.elite_scores.cpu().numpy())
        best = self._env_actions(result.best_actions[:, :m.execute])
        return best.cpu().numpy().reshape(len(state), -1, *self.spec.action_shape)

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self, store, out, env_steps: int) -> dict[str, float]:
        """At an evaluation: the CEM cost curves of the plans it made (each iteration's mean
        elite score, averaged over plans, in the record as ``cem_elite_score_iter<i>`` and drawn
        in ``cem_cost_<step>.png``), and open-loop predictions of ``openloop_videos`` dataset
        windows (2 context frames, then 13 predicted from the actions) as
        ``videos/openloop_<step>.gif`` (truth | prediction | error) with their mean squared
        error per pixel in [0, 1]. The windows come from a stream of their own, so training is
        untouched."""
        m = self.cfg
        record: dict[str, float] = {}
        if self._cost_curves:
            curves = np.concatenate(self._cost_curves)                       # (plans, iterations)
            self._cost_curves = []
            mean = curves.mean(0)
            record.update({f"cem_elite_score_iter{i + 1}": float(v) for i, v in enumerate(mean)})
            _cost_curve_png(curves, Path(out) / f"cem_cost_{env_steps:09d}.png", self.cfg.distance)
        if not self.uses_video or m.openloop_videos == 0 or store is None or store.num_frames == 0:
            return record
        batch = SequenceSampler(m.openloop_videos, m.window).sample(store, np.random.default_rng([env_steps, 11]))
        predicted = self.predict_windows(batch.frames, batch.actions)
        truth = batch.frames[:, m.context:]
        record["openloop_mse"] = float(np.mean(((predicted.astype(np.float32) - truth) / 255.0) ** 2))
        error = np.abs(predicted.astype(np.int16) - truth.astype(np.int16)).astype(np.uint8)
        from pixelplan.video import side_by_side, write_gif
        rows = [side_by_side(truth[i], predicted[i], error[i]) for i in range(len(truth))]
        write_gif(Path(out) / "videos" / f"openloop_{env_steps:09d}.gif", np.concatenate(rows, 1), fps=6)
        return record

    @torch.no_grad()
    def predict_windows(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """uint8 predictions (B, L - context, H, W, C) of the windows' frames after the context."""
        self.video.eval()
        x = self._frames(frames)
        a = self._unit_actions(actions).view(*actions.shape[:2], self.action_dim)
        pred = self.video.rollout(x[:, :self.cfg.context], a, keep="all")
        return (pred.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {name: net.state_dict() for name, net in self.nets.items()}
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        if self.uses_q:
            state["log_alpha"] = self.log_alpha.detach().clone()
        state.update(updates=self.updates, rng=self.rng.bit_generator.state,
                     train_generator=self.train_generator.get_state(), act_generator=self.act_generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state[name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.uses_q:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
        self.updates = int(state["updates"])
        self.rng.bit_generator.state = state["rng"]
        self.train_generator.set_state(state["train_generator"])
        self.act_generator.set_state(state["act_generator"])
        self._plans.clear()
        self._executed.clear()


# ---------------------------------------------------------------------- shared parts
def _check_spec(spec: EnvSpec) -> None:
    if spec.discrete:
        raise ValueError(f"MBOLD plans continuous actions, but this env's are {spec.describe_actions()}")
    spec.require_goals("MBOLD")
    if len(spec.frame_shape) != 3 or spec.frame_shape[0] % 16 or spec.frame_shape[1] % 16:
        raise ValueError(f"MBOLD's models read colour frames (H, W, C) with H and W multiples of 16, got "
                         f"{spec.frame_shape}")


def _init_std(cfg: Config, spec: EnvSpec) -> np.ndarray:
    """CEM's initial std per action dimension, in env units: ``mbold.init_std``, else the
    dataset's collection std (``random.noise_std``, which the tabletop presets set), else half
    of half the action range."""
    low, high = (b.reshape(-1) for b in spec.action_bounds())
    std = cfg.mbold.init_std if cfg.mbold.init_std is not None else cfg.random.noise_std
    if std is None:
        return 0.25 * (high - low)
    std = np.asarray(std, np.float32).reshape(-1)
    if std.size == 1:
        std = np.repeat(std, low.size)
    if std.size != low.size:
        raise ValueError(f"mbold.init_std needs one value per action dimension ({low.size}), got {std.size}")
    return std


def _polyak(target: torch.nn.Module, online: torch.nn.Module, keep: float) -> None:
    """target <- keep * target + (1 - keep) * online, weights and float buffers (batch-norm
    statistics) alike; integer buffers are copied."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.lerp_(o, 1 - keep)
        for t, o in zip(target.buffers(), online.buffers()):
            if t.dtype.is_floating_point:
                t.lerp_(o, 1 - keep)
            else:
                t.copy_(o)


def _cost_curve_png(curves: np.ndarray, path: Path, distance: str) -> None:
    """Each plan's mean elite score per CEM iteration (thin lines) and their mean (thick)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    its = np.arange(1, curves.shape[1] + 1)
    for row in curves[:50]:
        ax.plot(its, row, color="0.7", lw=0.6)
    ax.plot(its, curves.mean(0), color="C0", lw=2, marker="o", label=f"mean of {len(curves)} plans")
    ax.set_xlabel("CEM iteration")
    ax.set_ylabel(f"mean elite score ({distance})")
    ax.set_xticks(its)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_trained(run_dir: str, names: tuple[str, ...], option: str, what: str) -> dict[str, Any]:
    """The state dicts ``names`` of another MBOLD run's checkpoint (``mbold.video_from`` /
    ``mbold.distance_from``), with a one-line refusal when the run has none of them."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise ValueError(f"mbold.{option} {run_dir}: no checkpoint.pt there; give the directory of an MBOLD run "
                         f"that trained {what}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    payload = payload if isinstance(payload, dict) else {}
    state, saved = payload.get("agent") or {}, payload.get("config") or {}
    if saved.get("agent") != "mbold" or any(n not in state for n in names):
        raise ValueError(f"mbold.{option} {run_dir} is not an MBOLD run that holds {what}")
    return {n: state[n] for n in names}


def _load_frozen(nets: dict[str, torch.nn.Module], run_dir: str, option: str, what: str) -> None:
    """Load ``nets`` from another run (:func:`load_trained`) and freeze them; a run whose models
    have other shapes (another scene's frames or actions, other widths) is refused in one line."""
    states = load_trained(run_dir, tuple(nets), option, what)
    for name, net in nets.items():
        try:
            net.load_state_dict(states[name])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[1:2] or [str(e).strip()]
            raise ValueError(f"mbold.{option} {run_dir}: {what} does not fit this run ({name}: "
                             f"{first[0].strip()}); reuse a run of the same scene and model sizes") from None
        net.requires_grad_(False)
