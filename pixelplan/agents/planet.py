"""PlaNet: the Deep Planning Network (Hafner, Lillicrap, Fischer, Villegas, Ha, Lee, Davidson; 2019).

PlaNet learns a latent dynamics model of a reward task from pixels and acts by planning in its
latent space, with no policy or value network:

* **Model** (``nets/rssm.py``): the recurrent state-space model (a 200-unit GRU path and a
  30-dim diagonal-Gaussian path), the convolutional encoder and decoder of Ha & Schmidhuber and
  a reward model, trained on chunks of replayed episodes with the bound of equation 3: image
  and reward log-likelihoods minus the KL between posterior and prior, with 3 free nats per
  time step (latent overshooting, equation 7, as an option). Adam, lr 1e-3, eps 1e-4, gradient
  norm clipped at 1000, batches of 50 chunks of 50 frames (appendix A).
* **Sampler**: :class:`~pixelplan.data.samplers.SequenceSampler`, windows uniform over every
  stored window of ``chunk_length`` frames.
* **Acting** (Algorithm 2): the belief over the current latent state is filtered step by step
  (prior from the previous belief and action, posterior given the new frame); CEM then searches
  action sequences of H = 12 steps, scoring each candidate by the summed predicted reward of a
  latent rollout from the belief (J = 1000 candidates, I = 10 iterations, refit to the K = 100
  best); the first action of the final mean is executed and the agent replans at every step.
  Collecting adds Normal(0, 0.3) noise to it (clipped to the action bounds); evaluating does not.
* **Data collection** (Algorithm 1): S = 5 seed episodes of uniform random actions, then one
  episode after every C = 100 updates. The driver runs this schedule from the run settings
  ``seed_episodes`` and ``updates_per_episode``; the agent acts randomly while it has made no
  update, which is exactly the seed episodes.
* **Variants** (figures 4 and 5): ``model = deterministic | stochastic``, ``collect = random``
  and ``planner = random_shooting`` (the best of ``candidates`` sequences, no refinement).
* **Diagnostics**: at every evaluation, open-loop predictions of replayed chunks (5 frames
  filtered, the rest predicted from the actions alone) next to the truth and the error, as a
  GIF in ``videos/``, and their mean squared error in the evaluation record.

Where this implementation departs from the paper or its official code, or chooses where they
are silent (docs/planet.md lists them all):

* CEM refits the standard deviation as the elites' standard deviation (the official code's
  choice); Algorithm 2 writes a mean absolute deviation over K - 1.
* At acting, a frame is reduced to 5 bits and placed at the centre of its bin, the mean of
  the dequantisation noise the model was trained with (the paper does not say).
* The encoder's and decoder's convolutions run in bf16 where the device computes it natively
  (``precision``); the RSSM, the reward model and every loss term stay fp32.
* A chunk that starts inside an episode is filtered from a zero state and a zero action, as
  the official code's chunks are; an episode's first step at acting is filtered the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pixelplan.agents.base import AgentBase, Decision, EnvSpec, Learner, batch_rows, check_batch
from pixelplan.config import Config
from pixelplan.data.samplers import SequenceBatch, SequenceSampler
from pixelplan.nets.encoders import resolve_precision
from pixelplan.nets.rssm import BITS, RSSMSizes, State, WorldModel, preprocess
from pixelplan.planners.cem import cem

#: the frames PlaNet's encoder and decoder are built for (appendix A)
FRAME_SHAPE = (64, 64, 3)


class PlanetAgent(AgentBase):
    """PlaNet (see the module doc)."""

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, seed: int):
        _check_spec(spec)
        self.cfg, self.spec, self.device = cfg.planet, spec, device
        p = self.cfg
        self.action_dim = int(np.prod(spec.action_shape))
        low, high = spec.action_bounds()
        self.low = torch.as_tensor(low.reshape(-1), device=device)
        self.high = torch.as_tensor(high.reshape(-1), device=device)
        torch.manual_seed(seed)
        self.precision = resolve_precision(p.precision, device)
        self.model = WorldModel(self.action_dim, RSSMSizes(p.deter, p.stoch, p.hidden), p.free_nats, kind=p.model,
                                overshooting=p.overshooting, overshooting_beta=p.overshooting_beta,
                                low_precision=self.precision == "bf16", cnn_depth=p.cnn_depth).to(device)
        if self.precision == "bf16":     # the frames arrive channels-last: keep the convs in that layout
            self.model.encoder.to(memory_format=torch.channels_last)
            self.model.decoder.to(memory_format=torch.channels_last)
        self.learner = Learner(self.model.parameters(), lr=p.lr, weight_decay=0.0, grad_clip=p.grad_clip,
                               eps=p.adam_eps)
        self.sampler = SequenceSampler(p.batch_size, p.chunk_length)
        self.rng = np.random.default_rng(seed)               # seed-episode actions
        self.train_generator = torch.Generator(device=device)
        self.train_generator.manual_seed(seed)               # dequantisation noise, latent samples in training
        self.act_generator = torch.Generator(device=device)
        self.act_generator.manual_seed(seed + 1)             # CEM samples, exploration noise, latent samples acting
        self._belief: dict[int, State] = {}                   # env row -> its latent belief, (1, ...) tensors
        self._last_action: dict[int, torch.Tensor] = {}       # env row -> the action it last executed, (1, A)

    # ------------------------------------------------------------------ training
    def update(self, batch: SequenceBatch) -> dict[str, float]:
        """One gradient step of equation 3 on a batch of chunks."""
        self.model.train()
        frames = torch.as_tensor(batch.frames, device=self.device)
        actions = torch.as_tensor(batch.actions, device=self.device).reshape(*batch.actions.shape[:2], -1)
        rewards = torch.as_tensor(batch.rewards, device=self.device)
        loss, metrics = self.model.loss(frames, actions, rewards, generator=self.train_generator)
        metrics["grad_norm"] = self.learner.step(loss)
        self.learner.count()
        return metrics

    # ------------------------------------------------------------------ acting
    def begin_episodes(self, rows: np.ndarray, goals: np.ndarray | None, explore: bool) -> None:
        """These rows start from the zero state and a zero action (the first filter step)."""
        fresh = self.model.rssm.initial(1, self.device)
        for row in np.asarray(rows).reshape(-1):
            self._belief[int(row)] = fresh
            self._last_action[int(row)] = torch.zeros(1, self.action_dim, device=self.device)

    def end_episodes(self, rows: np.ndarray, final_frames: np.ndarray, goals: np.ndarray | None,
                     explore: bool) -> None:
        for row in np.asarray(rows).reshape(-1):
            self._belief.pop(int(row), None)
            self._last_action.pop(int(row), None)

    @torch.no_grad()
    def act(self, state: np.ndarray, goal: np.ndarray | None, t: np.ndarray, explore: bool, env_steps: int,
            rows: np.ndarray | None = None) -> Decision:
        """Filter each row's belief with its new frame, then plan (or, before the first update and
        under ``collect="random"``, draw uniform random actions)."""
        check_batch("state", state, (1, *FRAME_SHAPE))
        rows = batch_rows(rows, len(state))
        missing = [int(r) for r in rows if int(r) not in self._belief]
        if missing:
            raise ValueError(f"rows {missing} have no episode under way: call begin_episodes(rows, ...) first")
        self.model.eval()
        belief = self._filter(state, rows)
        if explore and (self.learner.updates == 0 or self.cfg.collect == "random"):
            u = torch.as_tensor(self.rng.random((len(rows), self.action_dim)), dtype=torch.float32, device=self.device)
            actions = self.low + u * (self.high - self.low)
        else:
            actions = self.plan(belief)
            if explore and self.cfg.explore_noise > 0:
                noise = torch.randn(actions.shape, generator=self.act_generator, device=self.device)
                actions = torch.maximum(torch.minimum(actions + self.cfg.explore_noise * noise, self.high), self.low)
        for j, row in enumerate(rows):
            self._last_action[int(row)] = actions[j:j + 1]
        return Decision.go(actions.cpu().numpy().astype(np.float32).reshape(len(rows), *self.spec.action_shape))

    def _filter(self, state: np.ndarray, rows: np.ndarray) -> State:
        """q(s_t | o_<=t, a_<t) for each row: one prior step from its belief and last action,
        then the posterior given the frame (reduced to 5 bits, at the centre of its bin)."""
        frames = torch.as_tensor(state[:, 0], device=self.device)
        images = preprocess(frames, noise=False) + 2.0 ** -(BITS + 1)
        before = State(*(torch.cat(parts) for parts in zip(*(self._belief[int(r)] for r in rows))))
        last = torch.cat([self._last_action[int(r)] for r in rows])
        rssm = self.model.rssm
        belief = rssm.posterior(rssm.prior_step(before, last, self.act_generator), self.model.embed(images),
                                self.act_generator)
        for j, row in enumerate(rows):
            self._belief[int(row)] = State(*(x[j:j + 1] for x in belief))
        return belief

    def plan(self, belief: State) -> torch.Tensor:
        """CEM (or random shooting) over latent rollouts from ``belief`` (B, ...): (B, A) actions."""
        p, rssm, reward = self.cfg, self.model.rssm, self.model.reward
        batch, j = len(belief.h), p.candidates
        start = State(*(x.repeat_interleave(j, 0) for x in belief))   # every candidate rolls from its row's belief

        def score(actions: torch.Tensor) -> torch.Tensor:             # (B, J, H, A) -> (B, J)
            imagined = rssm.imagine(start, actions.reshape(batch * j, p.horizon, self.action_dim), self.act_generator)
            return reward(rssm.features(imagined)).sum(-1).reshape(batch, j)

        shooting = p.planner == "random_shooting"
        result = cem(score, batch=batch, horizon=p.horizon, action_dim=self.action_dim, candidates=j,
                     iterations=1 if shooting else p.iterations, elites=1 if shooting else p.elites,
                     low=self.low, high=self.high, generator=self.act_generator, device=self.device)
        return (result.best_actions if shooting else result.mean)[:, 0]

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def diagnostics(self, store, out, env_steps: int) -> dict[str, float]:
        """Open-loop predictions of ``openloop_videos`` replayed chunks, as a GIF
        (``videos/openloop_<step>.gif``: truth | prediction | error, the first ``openloop_context``
        frames filtered), and their mean squared error per pixel in [0, 1] after the context.
        Drawn from a stream of their own, seeded by the step, so training is untouched."""
        p = self.cfg
        if p.openloop_videos == 0 or store is None or store.num_frames == 0:
            return {}
        longest = int(store.episode_slots()[:, 1].max())
        length = min(p.chunk_length, longest)
        if length <= p.openloop_context:
            return {}
        batch = SequenceSampler(p.openloop_videos, length).sample(store, np.random.default_rng([env_steps, 11]))
        generator = torch.Generator(device=self.device)
        generator.manual_seed(env_steps)
        self.model.eval()
        frames = torch.as_tensor(batch.frames, device=self.device)
        actions = torch.as_tensor(batch.actions, device=self.device).reshape(*batch.actions.shape[:2], -1)
        predicted = self.model.open_loop(frames, actions, p.openloop_context, generator).cpu().numpy()
        truth = batch.frames
        error = np.abs(predicted.astype(np.int16) - truth.astype(np.int16)).astype(np.uint8)
        after = slice(p.openloop_context, None)
        mse = float(np.mean(((predicted[:, after] - truth[:, after].astype(np.float32)) / 255.0) ** 2))
        from pixelplan.video import side_by_side, write_gif
        rows = [side_by_side(truth[i], predicted[i], error[i]) for i in range(len(truth))]
        write_gif(out / "videos" / f"openloop_{env_steps:09d}.gif", np.concatenate(rows, 1), fps=8)
        return {"openloop_mse": mse}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), **self.learner.state_dict(), "rng": self.rng.bit_generator.state,
                "train_generator": self.train_generator.get_state(), "act_generator": self.act_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self.train_generator.set_state(state["train_generator"])
        self.act_generator.set_state(state["act_generator"])
        self._belief.clear()            # checkpoints are cut between rounds: no episode under way
        self._last_action.clear()


def _check_spec(spec: EnvSpec) -> None:
    """One-line errors for the envs PlaNet cannot take."""
    if spec.discrete:
        raise ValueError(f"PlaNet plans continuous actions, but this env's actions are {spec.describe_actions()}; "
                         "use a continuous version (DM Control: --env-options actions continuous)")
    if not spec.has_reward:
        raise ValueError("PlaNet maximises the env's reward, but this env has none; use a reward task "
                         "(DM Control: --env-options task reward)")
    if tuple(spec.frame_shape) != FRAME_SHAPE:
        raise ValueError(f"PlaNet's encoder and decoder take 64x64 RGB frames, this env gives "
                         f"{'x'.join(map(str, spec.frame_shape))}; use --env-options height 64 width 64 grayscale "
                         "false (DM Control's reward tasks default to it)")
    if spec.frame_stack != 1:
        raise ValueError(f"PlaNet reads one frame per step (its RSSM remembers the past), got frame_stack "
                         f"{spec.frame_stack}; use --frame-stack 1 (its presets do)")
