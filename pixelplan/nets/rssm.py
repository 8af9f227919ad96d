"""PlaNet's world model (Hafner et al. 2019, section 3 and appendix A): the recurrent state-space
model (RSSM), its image encoder and decoder, the reward model, and the loss of equation 3.

Written from the paper; where it is silent the choice is said here (and in docs/planet.md when
the agent lands, issue 15). Names follow ARCHITECTURE.md: the deterministic state is ``h``
(``deter`` units), the stochastic state ``z_stoch`` (``stoch`` dims).

* Images: 64x64x3 uint8, reduced to 5 bits with uniform dequantisation noise and centred to
  [-0.5, 0.5) (:func:`preprocess`, after Kingma & Dhariwal 2018).
* Encoder and decoder: the convolutional networks of Ha & Schmidhuber (2018): four 4x4
  stride-2 convolutions of 32, 64, 128, 256 channels with ReLU (64x64 -> 2x2x256 = 1024), and
  a linear map to 1024 followed by four transposed convolutions of 5, 5, 6, 6 kernels, stride
  2, 128, 64, 32, 3 channels (1x1 -> 64x64). The decoder's output is the mean of a unit-variance
  Gaussian over pixels.
* Transition (the RSSM): ``x = relu(W [z_stoch, a])``, ``h' = GRU(x, h)`` with 200 units,
  then the prior ``p(z_stoch' | h')`` and, given the image's embedding ``e``, the posterior
  ``q(z_stoch' | h', e)``: diagonal Gaussians over 30 dims, each from one hidden layer of 200
  with ReLU, standard deviation ``softplus(.) + 0.1`` (a floor the paper does not give: the
  value of its official code).
* Reward: two fully connected layers of 200 with ReLU, then a linear output, the mean of a
  unit-variance Gaussian (appendix A: "all other functions as two fully connected layers").
* Loss (equation 3, one reparameterised sample): reconstruction and reward log-likelihoods,
  minus the KL between posterior and prior, **summed over the latent dims and clipped below at
  the free nats (3) per time step, before averaging** over the batch and time, unscaled. (A
  known trap: clipping the KL after averaging grants far more than 3 nats per step.)
* A window of a sequence sampler starts anywhere in an episode: its first state is inferred
  from a zero state and a zero action, as the paper's chunks are.

The paper's other transition models (figure 4), ``RSSM(kind=...)``:

* ``"deterministic"`` (the paper's GRU): the same network with every latent its mean and unit
  standard deviation, so a transition is a deterministic function of the state and the action.
  The posterior still reads the image (that is how observations enter the state); the KL
  between unit-variance Gaussians is half the squared distance of the means, the consistency
  term that trains the transition to predict what the posterior infers (with the free nats).
* ``"stochastic"`` (the paper's SSM): no recurrence: ``h' = relu(W2 relu(W [z_stoch, a]))`` is
  a hidden layer of this step only, and the decoder and reward model read ``z_stoch`` alone,
  so all memory lives in the 30 stochastic dims.

Latent overshooting (equation 7, ``WorldModel(overshooting=D)``): besides the one-step KL, the
priors predicted ``d = 2..D`` steps ahead from each posterior are pulled towards the posterior
at their step, with weight ``beta`` (the same for every ``d > 1``, as in the paper), the
posterior's gradient stopped for ``d > 1`` (the paper's practice), each KL clipped at the free
nats per step like the one-step term, and the sum over ``d`` divided by ``D``. ``D <= 1`` is
the standard bound (equation 3), the paper's final agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

#: bits kept per colour channel (appendix A)
BITS = 5
#: the floor of the latent standard deviations
MIN_STD = 0.1
LOG_2PI = 1.8378770664093453   # log(2 pi)
#: the transition models of the paper's figure 4
Kind = Literal["rssm", "deterministic", "stochastic"]
KINDS = ("rssm", "deterministic", "stochastic")


def preprocess(frames: torch.Tensor, bits: int = BITS, noise: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (..., H, W, 3) frames -> float (..., 3, H, W) in [-0.5, 0.5): ``bits`` bits per
    channel, plus uniform noise over one quantisation step when ``noise`` (dequantisation)."""
    x = torch.floor(frames.float() / 2 ** (8 - bits)) / 2 ** bits
    if noise:
        x = x + torch.rand(x.shape, generator=generator, device=x.device) / 2 ** bits
    return (x - 0.5).movedim(-1, -3)


def postprocess(images: torch.Tensor, bits: int = BITS) -> torch.Tensor:
    """The inverse for viewing: float (..., 3, H, W) around [-0.5, 0.5) -> uint8 (..., H, W, 3),
    each value the bottom of its ``bits``-bit bin."""
    levels = torch.floor((images.movedim(-3, -1) + 0.5).clamp(0, 1 - 2 ** -bits) * 2 ** bits)
    return (levels * 2 ** (8 - bits)).to(torch.uint8)


class ConvEncoder(nn.Module):
    """64x64x3 image -> 32 x ``depth`` features (1024 at Ha & Schmidhuber's depth of 32)."""

    out_dim = 1024

    def __init__(self, channels: int = 3, depth: int = 32):
        super().__init__()
        self.out_dim = 32 * depth
        layers, c = [], channels
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, depth * mult, 4, stride=2), nn.ReLU()]
            c = depth * mult
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (..., 3, 64, 64) float -> (..., 1024)."""
        lead = images.shape[:-3]
        out = self.net(images.reshape(-1, *images.shape[-3:]))
        return out.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Model state features -> the mean of a unit-variance Gaussian over a 64x64x3 image."""

    def __init__(self, feature_dim: int, channels: int = 3, depth: int = 32):
        super().__init__()
        self.fc = nn.Linear(feature_dim, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(2 * depth, depth, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(depth, channels, 6, stride=2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        x = self.fc(features.reshape(-1, features.shape[-1]))
        out = self.net(x.reshape(len(x), -1, 1, 1))
        return out.reshape(*lead, *out.shape[1:])


class State(NamedTuple):
    """A model state: deterministic ``h`` (..., deter), stochastic ``z_stoch`` (..., stoch), and
    the Gaussian ``z_stoch`` was drawn from (``mean``, ``std``)."""

    h: torch.Tensor
    z_stoch: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def features(self) -> torch.Tensor:
        """What the decoder and the reward model read: [h, z_stoch]."""
        return torch.cat([self.h, self.z_stoch], -1)


@dataclass(frozen=True)
class RSSMSizes:
    deter: int = 200
    stoch: int = 30
    hidden: int = 200
    embed: int = ConvEncoder.out_dim


def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, raw = params.chunk(2, -1)
    return mean, F.softplus(raw) + MIN_STD


class RSSM(nn.Module):
    """The recurrent state-space model: a GRU path ``h`` and a Gaussian path ``z_stoch``
    (``kind="rssm"``), or one of the paper's two ablations (see the module doc)."""

    def __init__(self, action_dim: int, sizes: RSSMSizes = RSSMSizes(), kind: Kind = "rssm"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown transition model {kind!r}; choose one of {', '.join(KINDS)}")
        self.sizes, self.action_dim, self.kind = sizes, int(action_dim), kind
        s = sizes
        self.inp = nn.Linear(s.stoch + self.action_dim, s.hidden)
        if kind == "stochastic":      # no memory but z_stoch: h is this step's hidden layer
            self.cell = nn.Linear(s.hidden, s.deter)
        else:
            self.cell = nn.GRUCell(s.hidden, s.deter)
        self.prior_net = nn.Sequential(nn.Linear(s.deter, s.hidden), nn.ReLU(), nn.Linear(s.hidden, 2 * s.stoch))
        self.post_net = nn.Sequential(nn.Linear(s.deter + s.embed, s.hidden), nn.ReLU(),
                                      nn.Linear(s.hidden, 2 * s.stoch))

    @property
    def feature_dim(self) -> int:
        return self.sizes.stoch if self.kind == "stochastic" else self.sizes.deter + self.sizes.stoch

    def features(self, state: State) -> torch.Tensor:
        """What the decoder and the reward model read: [h, z_stoch], or z_stoch alone (SSM)."""
        return state.z_stoch if self.kind == "stochastic" else state.features()

    def _latent(self, params: torch.Tensor, generator: torch.Generator | None):
        mean, std = _gaussian(params)
        if self.kind == "deterministic":
            return mean, torch.ones_like(std), mean
        return mean, std, mean + std * _noise(mean, generator)

    def initial(self, batch: int, device=None) -> State:
        """The zero state a window (or an episode) starts from."""
        s = self.sizes
        zeros = lambda n: torch.zeros(batch, n, device=device)  # noqa: E731
        return State(zeros(s.deter), zeros(s.stoch), zeros(s.stoch), torch.ones(batch, s.stoch, device=device))

    def prior_step(self, state: State, action: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """p(z_stoch' | h'), h' = GRU(relu(W [z_stoch, a]), h): one step without an image."""
        x = F.relu(self.inp(torch.cat([state.z_stoch, action], -1)))
        h = F.relu(self.cell(x)) if self.kind == "stochastic" else self.cell(x, state.h)
        mean, std, z = self._latent(self.prior_net(h), generator)
        return State(h, z, mean, std)

    def posterior(self, prior: State, embed: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """q(z_stoch | h, e): the same ``h`` as the prior, the image's embedding added."""
        mean, std, z = self._latent(self.post_net(torch.cat([prior.h, embed], -1)), generator)
        return State(prior.h, z, mean, std)

    def observe(self, embeds: torch.Tensor, actions: torch.Tensor, start: State | None = None,
                generator: torch.Generator | None = None) -> tuple[State, State]:
        """Filter a window: ``embeds`` (B, L, embed) of its L frames, ``actions`` (B, L - 1, A),
        ``actions[:, t]`` taken at frame t. Returns (priors, posteriors), each a State of
        (B, L, ...) tensors; step 0's prior is a step from ``start`` (default: zeros) with a
        zero action."""
        batch, length = embeds.shape[:2]
        state = self.initial(batch, embeds.device) if start is None else start
        zero = embeds.new_zeros(batch, self.action_dim)
        priors, posts = [], []
        for t in range(length):
            prior = self.prior_step(state, zero if t == 0 else actions[:, t - 1], generator)
            state = self.posterior(prior, embeds[:, t], generator)
            priors.append(prior)
            posts.append(state)
        return _stack(priors), _stack(posts)

    def imagine(self, start: State, actions: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """Roll the prior forward from ``start`` (N, ...) through ``actions`` (N, H, A): the
        states after each action, a State of (N, H, ...) tensors (what a planner scores)."""
        states, state = [], start
        for t in range(actions.shape[1]):
            state = self.prior_step(state, actions[:, t], generator)
            states.append(state)
        return _stack(states)


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _stack(states: list[State]) -> State:
    return State(*(torch.stack(parts, 1) for parts in zip(*states)))


class RewardModel(nn.Module):
    """Features -> the mean of a unit-variance Gaussian over the reward."""

    def __init__(self, feature_dim: int, hidden: int = 200):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def gaussian_kl(post: State, prior: State) -> torch.Tensor:
    """KL(q || p) of the diagonal Gaussians, summed over the latent dims: (...,)."""
    var_q, var_p = post.std ** 2, prior.std ** 2
    kl = torch.log(prior.std / post.std) + (var_q + (post.mean - prior.mean) ** 2) / (2 * var_p) - 0.5
    return kl.sum(-1)


def free_nats_kl(post: State, prior: State, free_nats: float) -> torch.Tensor:
    """The KL term of equation 3 as PlaNet clips it: per time step, summed over the latent
    dims, clipped below at ``free_nats``, then averaged over the batch and time."""
    return torch.clamp(gaussian_kl(post, prior), min=free_nats).mean()


def unit_gaussian_nll(mean: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """-log N(target; mean, 1), summed over the last ``event_dims`` dims: (...,)."""
    nll = 0.5 * (target - mean) ** 2 + 0.5 * LOG_2PI
    return nll.flatten(-event_dims).sum(-1) if event_dims else nll


class WorldModel(nn.Module):
    """Encoder, RSSM, decoder and reward model, and the loss of equation 3 (or 7) on windows.

    ``low_precision``: run the encoder's and the decoder's convolutions in bf16 (autocast); the
    RSSM, the reward model, every loss term and the decoder's output stay fp32. The caller
    decides where bf16 is native (``pixelplan.nets.encoders.resolve_precision``).
    ``cnn_depth``: the conv nets' base width (32, the paper's; tests use less)."""

    def __init__(self, action_dim: int, sizes: RSSMSizes = RSSMSizes(), free_nats: float = 3.0,
                 kind: Kind = "rssm", overshooting: int = 0, overshooting_beta: float = 1.0,
                 low_precision: bool = False, cnn_depth: int = 32):
        super().__init__()
        self.encoder = ConvEncoder(depth=cnn_depth)
        self.rssm = RSSM(action_dim, RSSMSizes(sizes.deter, sizes.stoch, sizes.hidden, self.encoder.out_dim), kind)
        self.decoder = ConvDecoder(self.rssm.feature_dim, depth=cnn_depth)
        self.reward = RewardModel(self.rssm.feature_dim, sizes.hidden)
        self.free_nats = float(free_nats)
        self.overshooting, self.overshooting_beta = int(overshooting), float(overshooting_beta)
        self.low_precision = bool(low_precision)

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.low_precision)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (..., 3, 64, 64) -> fp32 embeddings (..., 1024)."""
        with self._autocast(images.device):
            return self.encoder(images).float()

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features (..., F) -> fp32 image means (..., 3, 64, 64)."""
        with self._autocast(features.device):
            return self.decoder(features).float()

    def loss(self, frames: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Equation 3 on windows: ``frames`` uint8 (B, L, 64, 64, 3), ``actions`` (B, L - 1, A)
        with ``actions[:, t]`` taken at frame t, ``rewards`` (B, L - 1) returned for them. Frame
        t + 1's state predicts ``rewards[:, t]``. Terms: reconstruction NLL summed over pixels
        and reward NLL, each averaged over their steps, plus the free-nats KL (and latent
        overshooting's terms when ``overshooting`` > 1)."""
        images = preprocess(frames, generator=generator)
        actions = actions.float()
        priors, posts = self.rssm.observe(self.embed(images), actions, generator=generator)
        features = self.rssm.features(posts)
        recon = unit_gaussian_nll(self.decode(features), images, 3).mean()
        reward = unit_gaussian_nll(self.reward(features[:, 1:]), rewards.float(), 0).mean()
        kl = free_nats_kl(posts, priors, self.free_nats)
        metrics = {}
        if self.overshooting > 1:
            far = self.overshooting_kl(posts, actions, generator)
            metrics["kl_overshooting"] = far.item()
            kl = (kl + self.overshooting_beta * far) / self.overshooting
        loss = recon + reward + kl
        return loss, {"loss": loss.item(), "recon_nll": recon.item(), "reward_nll": reward.item(), "kl": kl.item(),
                      "kl_unclipped": gaussian_kl(posts, priors).mean().item(), **metrics}

    def overshooting_kl(self, posts: State, actions: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent overshooting's terms for d = 2..D: sum over d of the mean over (batch, t) of
        max(KL(sg(q_t) || p(s_t | s_{t-d})), free nats), the d-step priors rolled from the
        posteriors d steps back through the window's actions."""
        length = posts.h.shape[1]
        state = State(*(x[:, :-1] for x in posts))                  # starts t = 0..L-2
        total = posts.h.new_zeros(())
        for d in range(1, min(self.overshooting, length - 1) + 1):
            n = length - d                                          # starts whose target t + d is in the window
            state = State(*(x[:, :n] for x in state))
            flat = State(*(x.reshape(-1, x.shape[-1]) for x in state))
            step = actions[:, d - 1:d - 1 + n].reshape(-1, actions.shape[-1])
            state = State(*(x.reshape(len(posts.h), n, -1) for x in self.rssm.prior_step(flat, step, generator)))
            if d >= 2:
                target = State(*(x[:, d:d + n].detach() for x in posts))
                total = total + free_nats_kl(target, state, self.free_nats)
        return total

    @torch.no_grad()
    def open_loop(self, frames: torch.Tensor, actions: torch.Tensor, context: int = 5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Open-loop video prediction: filter the first ``context`` frames of ``frames`` uint8
        (B, L, 64, 64, 3), then roll the prior through the remaining actions (B, L - 1, A) and
        decode. Returns uint8 (B, L, 64, 64, 3): the posterior's reconstructions for the
        context frames, the model's predictions after them (5-bit bins, for viewing)."""
        images = preprocess(frames, noise=False)
        actions = actions.float()
        context = max(1, min(context, frames.shape[1]))
        _, posts = self.rssm.observe(self.embed(images[:, :context]), actions[:, :context - 1], generator=generator)
        parts = [self.decode(self.rssm.features(posts))]
        if context < frames.shape[1]:
            last = State(*(x[:, -1] for x in posts))
            imagined = self.rssm.imagine(last, actions[:, context - 1:], generator=generator)
            parts.append(self.decode(self.rssm.features(imagined)))
        return postprocess(torch.cat(parts, 1))
