"""One typed configuration, one place for defaults, named presets.

``Config`` is the whole run: the environment, the agent's hyperparameters (one section
per agent), the budget and the bookkeeping. Every leaf can be overridden on the command
line (``pixelplan train --shared.lr 1e-3``); the resolved config is saved to the run
directory as ``config.json``.

Sections: the run settings at the top level (env, budget, data, bookkeeping); ``shared``,
what GLAMOR, GCSL and DISCERN share (the GLAMOR paper fixes the encoder and training
hyperparameters between GLAMOR and its baselines, so that a comparison changes one thing,
the algorithm): encoder and sizes, optimiser, batch, K, collection and its epsilon schedule;
then one section per agent with only what is that agent's own (``glamor``, ``gcsl``,
``discern``). Defaults are the GLAMOR paper's Figure 5 values (the big suites). Resuming
compares the run settings, ``shared`` and the trained agent's own section, nothing else, so
``--glamor.trials`` does not stop a GCSL run from resuming. Runs saved before ``shared``
existed (its values then lived in ``glamor``) load and resume unchanged.

Presets compose: one base, then overlays (``--preset paper debug``); without a base,
``auto`` is the base. Presets depend on the agent as well as the env: PlaNet's are its own
(below). Bases for GLAMOR, GCSL, DISCERN and random:

* ``paper``: Figure 5 as is, for DM Control and Atari.
* ``gridworld``: the built-in grid world; tuned to learn in a few minutes on a laptop CPU
  (see docs/glamor.md for each value and why).
* ``debug`` (an overlay): a tiny budget and tiny nets, to run every code path in seconds;
  ``--preset debug`` alone shrinks the ``auto`` base (the grid preset, for grid worlds).

PlaNet (``--agent planet``): ``paper`` is its appendix A (one env, S = 5 seed episodes, C =
100 updates per episode, 1000 episodes, CEM at J = 1000, I = 10; reward tasks, so ``dmc:*``
envs get ``task reward``); ``auto`` is ``paper`` for PlaNet on every env; the ``cpu`` overlay
shrinks it to what this project's 2-core CPU trains in hours (docs/planet.md says exactly
what and what it costs); ``debug`` shrinks it to seconds. Budgets and schedules are in agent
steps; on ``dmc:*`` the preset converts PlaNet's episodes with the task's T = 1000 // repeat.

``--preset auto`` (the default) picks ``paper`` for the paper's suites (``dmc:*`` and
``atari:*``, whose budgets are hundreds of thousands of steps) and ``gridworld`` for every
other env: the grid worlds and the envs users adapt or register (``module:factory`` names
included), which are small until shown otherwise. A user env that needs the paper's budget
asks for ``--preset paper``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from pixelplan import suites
from pixelplan.suites import dmc_reward_episode_steps

PRESETS = ("auto", "paper", "gridworld", "debug", "cpu")
#: env-name prefixes of the paper's benchmark suites, which ``--preset auto`` gives the paper preset
PAPER_SUITES = ("dmc:", "atari:")


@dataclass
class SharedConfig:
    """What GLAMOR, GCSL and DISCERN share; defaults are the GLAMOR paper's Figure 5.

    The paper fixes the encoder and the training hyperparameters between GLAMOR and its
    baselines so that a comparison changes one thing, the algorithm; here each of the three
    agents reads these values from this one section."""

    # --- model (paper 4.2) ---
    encoder: Literal["auto", "impala", "small"] = "auto"
    """frame encoder: auto = IMPALA for frames of 64 px and up, a small conv net below"""
    state_size: int = 512
    """size of the state code, the goal code and the mixed state-goal code"""
    mix_hidden: int = 256
    """hidden width of the MLP that mixes state and goal codes"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """arithmetic of the IMPALA encoders' convolutions: bf16 (autocast; normalisation, the
    encoders' output and everything after them stay fp32), or fp32; auto = bf16 where the
    device computes it natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs with bf16), else
    fp32. The small grid-world encoder always runs in fp32 (docs/glamor.md, "Speed")"""

    # --- optimiser and batches (Figure 5) ---
    lr: float = 5e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    """max global gradient norm"""
    batch_size: int = 200
    max_k: int | None = None
    """K, the longest hindsight gap sampled for training; None = the env's episode length T"""

    # --- collection (3.5, A.3) ---
    collect: Literal["planner", "random"] = "planner"
    """planner = the agent's own epsilon-greedy behaviour (GLAMOR: open-loop plans); random =
    uniform actions (A.4.1 ablation)"""
    eps_start: float = 1.0
    eps_final: float = 0.1
    eps_steps: int = 300_000
    """env steps over which epsilon falls linearly from eps_start to eps_final"""


#: the fields of SharedConfig; before it existed they lived in the ``glamor`` section
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(SharedConfig))


@dataclass
class GlamorConfig:
    """GLAMOR's own hyperparameters (the shared ones are in ``SharedConfig``); defaults are
    the paper's Figure 5."""

    lstm_hidden: int = 64
    """hidden size of the idm and prior LSTMs (one layer each)"""
    lstm_buckets: int = 6
    """training runs the LSTMs over the batch's rows sorted by length in this many buckets,
    each only as long as its longest row (the same log-likelihoods as one padded batch, without
    paying for most of the padding); 1 = one padded batch, as the paper's code does"""

    self_goal_prob: float = 0.0
    """fraction of each training batch relabelled as 'the start is its own goal' (k = 0,
    target END alone), so that END's likelihood ratio at a plan's start is learned at every
    state, not only at episodes' final frames; 0 = the paper's sampling (docs/glamor.md)"""

    # --- loss (eq. 9) ---
    alpha: float = 1.0
    """weight of the prior's NLL in the loss (eq. 9)"""

    plan_ema: float = 0.0
    """plan with an exponential moving average of the weights, updated after every update
    with this decay (e.g. 0.99); 0 = plan with the trained weights, as the paper does"""

    # --- planner (3.4, A.3) ---
    trials: int = 50
    """planner trials when collecting data"""
    eval_trials: int | None = None
    """planner trials at evaluation (MPC); None = same as trials"""
    clip_logp: float | None = -3.15
    """clip-p-actions: tokens with log p_idm below this are not expanded; None = off"""
    gamma: float = 0.99
    """length penalty: a plan's score gets (number of actions) x log(gamma)"""
    use_prior: bool = True
    """score tokens by log p_idm - log p_prior (True) or log p_idm alone (figure 6 ablation)"""
    proposal: Literal["guided", "sparse"] = "guided"
    """guided = sample from softmax(z); sparse = uniform proposals, same scoring (4.7.3)"""
    termination: Literal["early", "plan_end"] = "early"
    """early = evaluation ends when the best plan says END now; plan_end = plans must use
    all remaining steps and the episode runs to T (4.7.2)"""


@dataclass
class GcslConfig:
    """What GCSL has that GLAMOR has not; the rest is shared (see the module doc)."""

    eval_action: Literal["sample", "greedy"] = "sample"
    """how to act at evaluation: sample from the policy (the GLAMOR paper's description of
    GCSL, A.1) or take its most likely action"""


@dataclass
class DiscernConfig:
    """What DISCERN has that GLAMOR has not; the rest is shared (see the module doc)."""

    embed_size: int = 32
    """size of the discriminator's L2-normalised goal embedding"""
    decoys: int = 31
    """decoy goals per discriminator example, drawn from the goal buffer"""
    beta: float = 10.0
    """inverse temperature of the discriminator's softmax over goal + decoys"""
    goal_buffer_size: int = 1024
    """frames kept in the goal buffer (achieved final states, diversity-replaced)"""
    goal_source: Literal["buffer", "env"] = "buffer"
    """training-episode goals: from DISCERN's own goal buffer, or the env's training goals"""
    relabel_prob: float = 0.5
    """probability that a Q-learning sample keeps its hindsight goal (the frame it reached)
    rather than a goal drawn from the goal buffer"""
    discount: float = 0.99
    """per-step discount of the Q-learning target"""
    target_update: int = 250
    """updates between copies of the online Q-network into the target network"""
    pairs_capacity: int = 4096
    """(achieved final frame, pursued goal) pairs kept to train the discriminator"""


@dataclass
class PlanetConfig:
    """PlaNet's hyperparameters (Hafner et al. 2019, appendix A); defaults are the paper's.
    PlaNet shares nothing with ``shared``: its model, optimiser and batches are its own."""

    # --- model (section 3, appendix A) ---
    model: Literal["rssm", "deterministic", "stochastic"] = "rssm"
    """transition model: rssm (GRU and Gaussian paths, the paper's agent), deterministic (the
    GRU alone) or stochastic (the SSM alone): the paper's figure 4"""
    deter: int = 200
    """units of the deterministic path (GRU)"""
    stoch: int = 30
    """dims of the diagonal-Gaussian stochastic state"""
    hidden: int = 200
    """width of the fully connected layers (two per function)"""
    cnn_depth: int = 32
    """base width of the conv encoder and decoder (Ha & Schmidhuber's 32: 32, 64, 128, 256
    channels); the debug preset shrinks it"""
    free_nats: float = 3.0
    """the KL per time step (summed over latent dims) is clipped below at this value"""
    overshooting: int = 0
    """latent overshooting distance D (equation 7); 0 or 1 = off, the paper's final agent"""
    overshooting_beta: float = 1.0
    """weight of the overshooting KL terms, the same for every distance d > 1"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """arithmetic of the encoder's and decoder's convolutions (the RSSM and the losses stay
    fp32): auto = bf16 where the device computes it natively, else fp32"""

    # --- training (appendix A) ---
    lr: float = 1e-3
    adam_eps: float = 1e-4
    grad_clip: float = 1000.0
    """max global gradient norm"""
    batch_size: int = 50
    """sequence chunks per batch (B)"""
    chunk_length: int = 50
    """frames per chunk (L)"""

    # --- planning (appendix B) ---
    planner: Literal["cem", "random_shooting"] = "cem"
    """cem (the paper's agent) or random_shooting: the best of ``candidates`` sequences, no
    refinement (figure 5)"""
    horizon: int = 12
    iterations: int = 10
    candidates: int = 1000
    elites: int = 100

    # --- collection ---
    collect: Literal["planner", "random"] = "planner"
    """planner = CEM plus exploration noise; random = uniform random actions (figure 5)"""
    explore_noise: float = 0.3
    """std of the Gaussian noise added to the planned action when collecting"""

    # --- diagnostics ---
    openloop_videos: int = 4
    """open-loop predictions written at each evaluation (rows of the GIF); 0 = none"""
    openloop_context: int = 5
    """frames the model filters before predicting open loop"""


@dataclass
class MboldConfig:
    """MBOLD's hyperparameters (Tian et al. 2021, appendix A; docs/mbold.md), and the switches
    that make its baselines. Defaults are the paper's; MBOLD shares nothing with ``shared``."""

    # --- which method: the paper's baselines are these switches ---
    distance: Literal["q", "pixel", "vae", "temporal"] = "q"
    """the planning score: q = MBOLD's learned dynamical distance; pixel = Visual Foresight's
    pixel l2; vae = l2 between beta-VAE latents; temporal = a regression of the steps between frames"""
    negatives: Literal["arm_knn", "uniform", "none"] = "arm_knn"
    """negative goals for the Q-function: arm_knn = frames of other trajectories with near arm
    joints (MBOLD); uniform = any stored frame; none = the no-negatives ablation"""
    planner: Literal["cem", "actor", "q_shooting"] = "cem"
    """cem = CEM over the video model (MBOLD and the model-based baselines); actor = the
    Q-function's actor, no model; q_shooting = the best of shooting_actions random actions
    under Q (the paper's 'Q-function only', C.3)"""

    # --- video model (section 4; nets/video.py) ---
    video_width: int = 16
    """channels of the video model's first conv (then 2x, 2x)"""
    video_hidden: int = 32
    """channels of its conv-LSTM"""
    context: int = 2
    """context frames the video model is given (the run's frame_stack must be at least this)"""
    window: int = 15
    """frames per training window: context, then the rest predicted"""
    video_batch: int = 16
    video_lr: float = 1e-3
    image_loss: Literal["l1", "l2"] = "l1"
    """l1 (the released configuration) or l2 (equation 1)"""
    video_from: str | None = None
    """reuse the trained video model of this MBOLD run directory, frozen (its baselines can
    share one); None = train one"""

    # --- distance (A.1, table 2) ---
    batch_size: int = 64
    lr: float = 3e-4
    gamma: float = 0.8
    polyak: float = 0.995
    goal_p: float = 0.3
    """p of the geometric law of the relabelled goal's offset"""
    negative_frac: float = 0.5
    """fraction of each Q batch given negative goals"""
    knn_states: int = 200_000
    """frames in the negatives' nearest-neighbour index (all of them when fewer)"""
    knn_neighbours: int = 10
    """a negative is drawn from this many nearest frames of other trajectories"""
    reward_step: float = 1.0
    reward_goal: float = 10.0
    target_noise: float = 0.1
    target_noise_clip: float = 0.2
    policy_delay: int = 2
    """critic updates per actor update (TD3's)"""
    cql: bool = True
    cql_slack: float = 30.0
    """the Lagrange slack tau (the door's preset sets 10)"""
    cql_actions: int = 10
    cql_alpha_lr: float = 1e-3
    distance_from: str | None = None
    """reuse the trained Q-function (critics, actor, their targets) of this MBOLD run directory,
    frozen, e.g. to evaluate MBOLD's own Q as "Q-function only"; None = train one"""
    distance_updates: int | None = None
    """stop training the distance after this many updates (the paper: 93,750); None = every update"""
    vae_latent: int = 8
    vae_kl: float = 1e-3
    temporal_max: int = 10
    """temporal regression's label is min(steps, temporal_max) (C.2)"""

    # --- planning (A.2, table 3) ---
    horizon: int = 13
    iterations: int = 3
    candidates: int = 200
    elites: int = 10
    execute: int = 6
    """actions of each plan executed before replanning"""
    init_std: list[float] | None = None
    """CEM's initial std per action dimension; None = the dataset's collection std (random.noise_std)"""
    noise_beta: float = 0.5
    """the correlated sampling's beta (Nagabandi et al.'s filter)"""
    shooting_actions: int = 100
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """arithmetic of the video model at training and planning (the distances stay fp32)"""

    # --- diagnostics ---
    openloop_videos: int = 4
    """open-loop predictions written at each evaluation (rows of the GIF); 0 = none"""


@dataclass
class RandomConfig:
    """The random agent (the floor row of every table)."""

    policy: Literal["uniform", "correlated"] = "uniform"
    """uniform = independent uniform actions within the bounds; correlated = MBOLD's
    data-collection policy, u_t = beta n_t + (1 - beta) u_(t-1), n_t ~ Normal(0, noise_std^2),
    clipped to the bounds (continuous actions only; pixelplan/envs/noise.py). The tabletop
    envs' presets choose correlated with their dataset's std"""
    noise_std: list[float] | None = None
    """per action dimension; None = 0.5 x half the action range (the tabletop presets set the
    paper's table 4)"""
    noise_beta: float = 0.5


@dataclass
class Config:
    """A training run."""

    env: str = "gridworld"
    """environment name for pixelplan.envs.make (e.g. gridworld, gridworld-fourrooms)"""
    env_options: dict[str, str] = field(default_factory=dict)
    """keyword arguments for the env, e.g. --env-options size 9 start random"""
    agent: str = "glamor"
    """which agent to train: glamor, gcsl, discern, planet, mbold or random"""
    label: str | None = None
    """this run's name in results tables, e.g. glamor-randomcollect for an ablation;
    None = the agent's name"""
    preset: str = "auto"
    """the preset these defaults came from (informational; choose it with --preset)"""
    steps: int = 500_000
    """env steps to train for"""
    seed: int = 0
    out: str | None = None
    """run directory; default runs/<env>-<agent>-seed<seed>. Re-running on it resumes."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    """torch CPU threads; None = torch's default"""

    # --- data ---
    frame_stack: int = 4
    """frames per state (the goal is a single frame)"""
    replay_capacity: int = 1_000_000
    """replay size in frames (each frame stored once)"""
    n_envs: int = 8
    """episodes collected side by side (batched planning)"""
    env_workers: int | None = None
    """processes that step the envs (collection and evaluation); None = one per CPU core
    (at most n_envs); 0 = step them in the training process (best for cheap envs)"""
    replay_ratio: float = 4.0
    """training samples drawn per env step, counted from min_steps_learn on: one batch of
    batch_size every batch_size / replay_ratio env steps"""
    min_steps_learn: int = 50_000
    """env steps collected before training starts"""
    seed_episodes: int = 0
    """episodes collected before training starts (as well as min_steps_learn): PlaNet's S"""
    updates_per_episode: int | None = None
    """train between rounds instead of during them: after each round that ends with training
    started, this many updates per episode of the round (PlaNet's C); None = train during the
    round at replay_ratio"""

    # --- evaluation and bookkeeping ---
    eval_every: int = 50_000
    """env steps between evaluations (and at the end)"""
    eval_episodes: int | None = None
    """episodes per evaluation; None = one per evaluation goal (10 on reward tasks)"""
    eval_video: bool = False
    """write a GIF of the first evaluation episode at each evaluation (videos/)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (and at the end)"""
    log_every: int = 5_000
    """env steps between training-metric log lines"""
    keep_previous_checkpoint: bool = True
    """keep the checkpoint before last as checkpoint.prev.pt, a fallback should the newest be
    unreadable (costs a second checkpoint's disk space)"""
    progress: bool = True
    """show a progress bar"""

    # --- offline training (pixelplan train --dataset FILE) ---
    dataset: str | None = None
    """train offline from this dataset file (pixelplan collect); None = online, collecting as it learns"""
    dataset_hash: str | None = None
    """the dataset's content hash, recorded when an offline run starts (a changed file is refused)"""
    dataset_memory: Literal["auto", "ram", "disk"] = "auto"
    """offline: where the episodes are held while training: ram = read whole into memory (refused
    when it does not fit), disk = read from the file as batches need them, one episode at a time
    (slower; a small cache), auto = ram when it fits, else disk. Both draw the same samples."""
    updates: int = 20_000
    """offline budget: gradient updates"""
    eval_every_updates: int = 2_000
    """offline: updates between evaluations (and at the end)"""
    checkpoint_every_updates: int = 2_000
    """offline: updates between checkpoints (and at the end)"""
    log_every_updates: int = 500
    """offline: updates between training-metric log lines"""

    shared: SharedConfig = field(default_factory=SharedConfig)
    glamor: GlamorConfig = field(default_factory=GlamorConfig)
    gcsl: GcslConfig = field(default_factory=GcslConfig)
    discern: DiscernConfig = field(default_factory=DiscernConfig)
    planet: PlanetConfig = field(default_factory=PlanetConfig)
    mbold: MboldConfig = field(default_factory=MboldConfig)
    random: RandomConfig = field(default_factory=RandomConfig)


BASE_PRESETS = ("auto", "paper", "gridworld")
OVERLAY_PRESETS = ("debug", "cpu")


def preset(names: str | Sequence[str] = "auto", env: str = "gridworld", agent: str = "glamor") -> Config:
    """The default Config of one preset or of several composed, left to right.

    At most one base (``auto``, ``paper``, ``gridworld``) comes first; overlays (``debug``)
    follow and change only what they name. Without a base, ``auto`` is the base, so
    ``preset("debug")`` is the grid preset shrunk, and ``preset(["paper", "debug"])`` is the
    paper's hyperparameters shrunk to a debug budget.
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise ValueError(f"unknown preset {unknown[0] if unknown else '(none)'!r}; choose one of "
                         f"{', '.join(PRESETS)} (one base, then overlays: e.g. --preset paper debug)")
    bases = [n for n in names if n in BASE_PRESETS]
    if len(bases) > 1 or (bases and names[0] not in BASE_PRESETS):
        raise ValueError(f"presets {' '.join(names)}: give at most one base preset ({', '.join(BASE_PRESETS)}), "
                         f"first, then overlays ({', '.join(OVERLAY_PRESETS)})")
    base = names[0] if bases else "auto"
    if agent == "mbold":
        return _mbold_preset(base, names, env)
    planet = agent == "planet"
    if base == "auto":
        base = "paper" if planet or env.startswith(PAPER_SUITES) else "gridworld"
    if planet and base == "gridworld":
        raise ValueError("PlaNet has no gridworld preset (it plans continuous actions on reward tasks); "
                         "use --preset paper, optionally with the cpu or debug overlay")
    if "cpu" in names and not planet:
        raise ValueError(f"the cpu preset is PlaNet's and MBOLD's; {agent} has none: use --preset "
                         f"{base} or --preset {base} debug")
    cfg = (_planet_paper if planet else _BASES[base])(env)
    cfg.agent = agent
    overlays = [n for n in names if n in OVERLAY_PRESETS]
    for name in sorted(overlays, key=("cpu", "debug").index):     # cpu after debug would undo debug's budget
        cfg = (_PLANET_OVERLAYS if planet else _OVERLAYS)[name](cfg)
    cfg.preset = "+".join([base] + overlays)
    noise = suites.collection_noise(env)
    if noise is not None:
        # the suite's random data come from a correlated-noise policy (MBOLD's tabletop): the
        # random agent acts as the dataset's policy did, so its row is the dataset's floor
        cfg.random = RandomConfig(policy="correlated", noise_std=noise["std"], noise_beta=noise["beta"])
    return cfg


def _paper(env: str) -> Config:
    return Config(env=env)


def _gridworld(env: str) -> Config:
    return Config(
        env=env, steps=40_000, replay_capacity=50_000, n_envs=16, env_workers=0,
        replay_ratio=16.0, min_steps_learn=1_000, eval_every=5_000, checkpoint_every=10_000,
        log_every=1_000,
        shared=SharedConfig(state_size=128, mix_hidden=128, batch_size=256, lr=5e-4, eps_steps=80_000),
        glamor=GlamorConfig(gamma=0.3, plan_ema=0.99, self_goal_prob=0.1),
    )


def _debug(cfg: Config) -> Config:
    """Every code path in seconds: a tiny budget, tiny nets, frequent evaluations."""
    return dataclasses.replace(
        cfg, steps=600, replay_ratio=8.0, n_envs=4, min_steps_learn=200, eval_every=300,
        checkpoint_every=300, log_every=100, eval_episodes=8, replay_capacity=2_000,
        shared=dataclasses.replace(cfg.shared, state_size=32, mix_hidden=32, batch_size=16, eps_steps=500),
        glamor=dataclasses.replace(cfg.glamor, lstm_hidden=16, trials=8),
        discern=DiscernConfig(embed_size=8, decoys=7, goal_buffer_size=64, target_update=20,
                              pairs_capacity=256),
    )


#: T assumed for the schedules of PlaNet's presets on an env that is not ``dmc:*``
PLANET_DEFAULT_T = 250


def _planet_paper(env: str) -> Config:
    """Appendix A: S = 5 seed episodes, then C = 100 updates per collected episode, for 1000
    episodes (table 1); one env; single frames (the RSSM remembers); every episode kept."""
    t = dmc_reward_episode_steps(env) or PLANET_DEFAULT_T
    return Config(
        env=env, agent="planet", env_options={"task": "reward"} if env.startswith("dmc:") else {},
        steps=1000 * t, frame_stack=1, replay_capacity=1000 * (t + 1), n_envs=1, env_workers=0,
        min_steps_learn=0, seed_episodes=5, updates_per_episode=100,
        eval_every=50 * t, eval_episodes=10, eval_video=True, checkpoint_every=10 * t, log_every=t)


def _planet_cpu(cfg: Config) -> Config:
    """What this project's 2-core CPU trains in about 3 hours on cartpole (docs/planet.md): 100 episodes,
    20 updates of 16 chunks per episode (PlaNet: 100 of 50), CEM with 300 candidates, 5
    iterations and 30 elites (PlaNet: 1000, 10, 100)."""
    t = dmc_reward_episode_steps(cfg.env) or PLANET_DEFAULT_T
    return dataclasses.replace(
        cfg, steps=100 * t, replay_capacity=100 * (t + 1), updates_per_episode=20, eval_every=10 * t,
        checkpoint_every=5 * t,
        planet=dataclasses.replace(cfg.planet, batch_size=16, candidates=300, iterations=5, elites=30))


def _planet_debug(cfg: Config) -> Config:
    """Every PlaNet code path in seconds: tiny model sizes (the conv nets keep their layers),
    short chunks, a small CEM, two envs side by side."""
    return dataclasses.replace(
        cfg, steps=600, replay_capacity=2_000, n_envs=2, seed_episodes=1, updates_per_episode=2,
        eval_every=300, eval_episodes=2, checkpoint_every=300, log_every=100,
        planet=dataclasses.replace(cfg.planet, deter=16, stoch=4, hidden=16, cnn_depth=4, batch_size=4, chunk_length=8,
                                   horizon=4, iterations=2, candidates=16, elites=4, openloop_videos=2))


def _mbold_preset(base: str, names: list[str], env: str) -> Config:
    """MBOLD's presets: ``paper`` (= ``auto``) is appendix A; ``cpu`` shrinks the budget to what
    this project's CPU trains in about an hour; ``debug`` runs every path in seconds."""
    if base == "gridworld":
        raise ValueError("MBOLD has no gridworld preset (it plans continuous actions on MBOLD's tabletop scenes); "
                         "use --preset paper, optionally with the cpu or debug overlay")
    overlays = [n for n in names if n in OVERLAY_PRESETS]
    cfg = Config(env=env, agent="mbold", frame_stack=2, updates=200_000, eval_every_updates=50_000,
                 checkpoint_every_updates=2_000, log_every_updates=500,
                 mbold=MboldConfig(distance_updates=93_750, cql_slack=10.0 if env == "tabletop:door" else 30.0))
    if "cpu" in overlays:
        cfg = dataclasses.replace(cfg, updates=4_000, eval_every_updates=4_000, checkpoint_every_updates=500,
                                  log_every_updates=100, mbold=dataclasses.replace(cfg.mbold, distance_updates=None))
    if "debug" in overlays:
        cfg = dataclasses.replace(
            cfg, updates=6, eval_every_updates=3, checkpoint_every_updates=3, log_every_updates=2, eval_episodes=2,
            mbold=dataclasses.replace(cfg.mbold, distance_updates=None, video_width=4, video_hidden=4, window=5,
                                      video_batch=2, batch_size=8, knn_states=2_000, horizon=3, iterations=2,
                                      candidates=8, elites=2, execute=2, shooting_actions=8, openloop_videos=1))
    cfg.preset = "+".join(["paper"] + [n for n in ("cpu", "debug") if n in overlays])
    noise = suites.collection_noise(env)
    if noise is not None:
        cfg.random = RandomConfig(policy="correlated", noise_std=noise["std"], noise_beta=noise["beta"])
        cfg.mbold.noise_beta = noise["beta"]
    return cfg


_BASES = {"paper": _paper, "gridworld": _gridworld}
_OVERLAYS = {"debug": _debug}
_PLANET_OVERLAYS = {"debug": _planet_debug, "cpu": _planet_cpu}


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


_SECTIONS = {"shared": SharedConfig, "glamor": GlamorConfig, "gcsl": GcslConfig, "discern": DiscernConfig,
             "planet": PlanetConfig, "mbold": MboldConfig, "random": RandomConfig}

#: the config sections each agent reads, besides the run settings (and ``shared``, except PlaNet)
AGENT_SECTIONS = {"glamor": ("shared", "glamor"), "gcsl": ("shared", "gcsl"), "discern": ("shared", "discern"),
                  "planet": ("planet",), "mbold": ("mbold", "random"), "random": ("shared", "random")}


def from_dict(data: dict[str, Any]) -> Config:
    """A Config from ``to_dict`` output. Sections an older run did not save get their
    defaults; a run saved before the ``shared`` section existed has its shared values moved
    out of ``glamor``, where they lived then."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if "shared" not in data and isinstance(data.get("glamor"), dict):
        data["shared"] = {k: data["glamor"].pop(k) for k in SHARED_FIELDS if k in data["glamor"]}
    sections = {name: cls(**data.pop(name, {})) for name, cls in _SECTIONS.items()}
    return Config(**data, **sections)


def dumps(cfg: Config) -> str:
    """The text of a ``config.json`` (the run drivers write it atomically, runs/rundir.py)."""
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n"


class ConfigFileError(ValueError):
    """A config file that cannot be read as a pixelplan config."""


def load(path) -> Config:
    try:
        with open(path) as f:
            data = json.load(f)
        return from_dict(data)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc} (truncated or not JSON)") from None
    except (TypeError, AttributeError) as exc:
        raise ConfigFileError(f"config file {path} is not a pixelplan config: {exc}") from None


# Fields that may differ between a checkpoint's config and the config that resumes it:
# they change the budget or the bookkeeping, not what is learned so far. (``preset`` only
# names where the defaults came from; the values themselves are compared.)
# (``dataset_memory`` too: the RAM and disk stores draw the same samples.)
# (``shared.precision`` and ``glamor.lstm_buckets`` say how the same model is computed.)
RESUMABLE_FIELDS = {"steps", "out", "device", "threads", "env_workers", "eval_every", "eval_episodes",
                    "checkpoint_every", "log_every", "progress", "label",
                    "keep_previous_checkpoint", "preset", "dataset", "dataset_memory", "updates",
                    "eval_every_updates", "checkpoint_every_updates", "log_every_updates",
                    "shared.precision", "glamor.lstm_buckets", "planet.precision", "eval_video",
                    "planet.openloop_videos", "planet.openloop_context", "mbold.precision",
                    "mbold.openloop_videos"}


def incompatible_fields(saved: Config, new: Config) -> list[str]:
    """Dotted names of the fields whose values make ``new`` unable to resume ``saved``: the
    run settings, ``shared``, and the section of the agent trained (only those it reads)."""
    a, b = to_dict(saved), to_dict(new)
    read = set(AGENT_SECTIONS.get(saved.agent, tuple(_SECTIONS)))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_FIELDS or (key in _SECTIONS and key not in read and saved.agent == new.agent):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict) and key != "env_options":
            diffs += [f"{key}.{k}: {a[key].get(k)!r} -> {b[key].get(k)!r}"
                      for k in sorted(set(a[key]) | set(b[key]))
                      if a[key].get(k) != b[key].get(k) and f"{key}.{k}" not in RESUMABLE_FIELDS]
        elif a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def validate(cfg: Config) -> None:
    """Raise ValueError naming the first bad value and what would be valid."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"bad config value: {msg}")
    sh, g = cfg.shared, cfg.glamor
    need(cfg.steps > 0, f"steps must be > 0, got {cfg.steps}")
    need(cfg.seed >= 0, f"seed must be >= 0 (numpy seeds are non-negative), got {cfg.seed}")
    need(cfg.threads is None or cfg.threads >= 1,
         f"threads must be >= 1, or left unset for torch's default, got {cfg.threads}")
    need(cfg.frame_stack >= 1, f"frame_stack must be >= 1, got {cfg.frame_stack}")
    need(cfg.n_envs >= 1, f"n_envs must be >= 1, got {cfg.n_envs}")
    need(cfg.env_workers is None or cfg.env_workers >= 0,
         f"env_workers must be >= 0 (0 = in the training process) or None (one per core), got {cfg.env_workers}")
    need(cfg.replay_ratio > 0, f"replay_ratio must be > 0, got {cfg.replay_ratio}")
    need(cfg.min_steps_learn >= 0, f"min_steps_learn must be >= 0, got {cfg.min_steps_learn}")
    need(cfg.eval_every > 0 and cfg.checkpoint_every > 0 and cfg.log_every > 0,
         "eval_every, checkpoint_every and log_every must be > 0")
    need(cfg.updates > 0 and cfg.eval_every_updates > 0 and cfg.checkpoint_every_updates > 0
         and cfg.log_every_updates > 0,
         "updates, eval_every_updates, checkpoint_every_updates and log_every_updates must be > 0")
    need(cfg.dataset_memory in ("auto", "ram", "disk"),
         f"dataset_memory must be auto, ram or disk, got {cfg.dataset_memory!r}")
    need(sh.batch_size >= 1, f"shared.batch_size must be >= 1, got {sh.batch_size}")
    need(sh.lr > 0, f"shared.lr must be > 0, got {sh.lr}")
    need(0 <= sh.eps_final <= 1 and 0 <= sh.eps_start <= 1,
         f"shared.eps_start and eps_final must be in [0, 1], got {sh.eps_start}, {sh.eps_final}")
    need(sh.eps_steps >= 0, f"shared.eps_steps must be >= 0, got {sh.eps_steps}")
    need(sh.max_k is None or sh.max_k >= 1, f"shared.max_k must be >= 1 or None, got {sh.max_k}")
    need(g.trials >= 1, f"glamor.trials must be >= 1, got {g.trials}")
    need(g.lstm_buckets >= 1, f"glamor.lstm_buckets must be >= 1, got {g.lstm_buckets}")
    need(sh.precision in ("auto", "fp32", "bf16"), f"shared.precision must be auto, fp32 or bf16, got {sh.precision!r}")
    need(g.eval_trials is None or g.eval_trials >= 1, f"glamor.eval_trials must be >= 1, got {g.eval_trials}")
    need(0 < g.gamma <= 1, f"glamor.gamma must be in (0, 1], got {g.gamma}")
    need(g.alpha >= 0, f"glamor.alpha must be >= 0, got {g.alpha}")
    need(0 <= g.self_goal_prob < 1, f"glamor.self_goal_prob must be in [0, 1), got {g.self_goal_prob}")
    need(0 <= g.plan_ema < 1, f"glamor.plan_ema is a decay and must be in [0, 1) (0 = off), got {g.plan_ema}")
    need(g.clip_logp is None or g.clip_logp <= 0,
         f"glamor.clip_logp is a log-probability floor and must be <= 0, got {g.clip_logp}")
    need(cfg.seed_episodes >= 0, f"seed_episodes must be >= 0, got {cfg.seed_episodes}")
    need(cfg.updates_per_episode is None or cfg.updates_per_episode >= 0,
         f"updates_per_episode must be >= 0, or None to train during rounds at replay_ratio, "
         f"got {cfg.updates_per_episode}")
    _validate_planet(cfg.planet, need)
    _validate_mbold(cfg, need)
    r = cfg.random
    need(r.policy in ("uniform", "correlated"), f"random.policy must be uniform or correlated, got {r.policy!r}")
    need(0 < r.noise_beta <= 1, f"random.noise-beta must be in (0, 1], got {r.noise_beta}")
    need(r.noise_std is None or (len(r.noise_std) > 0 and all(v >= 0 for v in r.noise_std)),
         f"random.noise-std must be one value >= 0 per action dimension, got {r.noise_std}")
    d = cfg.discern
    need(d.embed_size >= 1, f"discern.embed_size must be >= 1, got {d.embed_size}")
    need(d.decoys >= 1, f"discern.decoys must be >= 1, got {d.decoys}")
    need(d.beta > 0, f"discern.beta must be > 0, got {d.beta}")
    need(d.goal_buffer_size >= 2, f"discern.goal_buffer_size must be >= 2, got {d.goal_buffer_size}")
    need(0 <= d.relabel_prob <= 1, f"discern.relabel_prob must be in [0, 1], got {d.relabel_prob}")
    need(0 < d.discount <= 1, f"discern.discount must be in (0, 1], got {d.discount}")
    need(d.target_update >= 1, f"discern.target_update must be >= 1, got {d.target_update}")
    need(d.pairs_capacity >= 1, f"discern.pairs_capacity must be >= 1, got {d.pairs_capacity}")


def _validate_planet(p: PlanetConfig, need) -> None:
    need(p.model in ("rssm", "deterministic", "stochastic"),
         f"planet.model must be rssm, deterministic or stochastic, got {p.model!r}")
    for name in ("deter", "stoch", "hidden", "cnn_depth", "batch_size", "horizon", "iterations", "candidates", "elites"):
        need(getattr(p, name) >= 1, f"planet.{name} must be >= 1, got {getattr(p, name)}")
    need(p.elites <= p.candidates, f"planet.elites ({p.elites}) must not exceed planet.candidates ({p.candidates})")
    need(p.chunk_length >= 2, f"planet.chunk_length must be >= 2 frames, got {p.chunk_length}")
    need(p.free_nats >= 0, f"planet.free_nats must be >= 0, got {p.free_nats}")
    need(p.overshooting >= 0, f"planet.overshooting must be >= 0 (0 = off), got {p.overshooting}")
    need(p.overshooting_beta >= 0, f"planet.overshooting_beta must be >= 0, got {p.overshooting_beta}")
    need(p.lr > 0 and p.adam_eps > 0 and p.grad_clip > 0,
         f"planet.lr, adam_eps and grad_clip must be > 0, got {p.lr}, {p.adam_eps}, {p.grad_clip}")
    need(p.explore_noise >= 0, f"planet.explore_noise must be >= 0, got {p.explore_noise}")
    need(p.planner in ("cem", "random_shooting"), f"planet.planner must be cem or random_shooting, got {p.planner!r}")
    need(p.collect in ("planner", "random"), f"planet.collect must be planner or random, got {p.collect!r}")
    need(p.precision in ("auto", "fp32", "bf16"), f"planet.precision must be auto, fp32 or bf16, got {p.precision!r}")
    need(p.openloop_videos >= 0 and p.openloop_context >= 1,
         f"planet.openloop_videos must be >= 0 and openloop_context >= 1, got {p.openloop_videos}, "
         f"{p.openloop_context}")


def _validate_mbold(cfg: Config, need) -> None:
    m = cfg.mbold
    for name, allowed in (("distance", ("q", "pixel", "vae", "temporal")), ("negatives", ("arm_knn", "uniform", "none")),
                          ("planner", ("cem", "actor", "q_shooting")), ("image_loss", ("l1", "l2")),
                          ("precision", ("auto", "fp32", "bf16"))):
        need(getattr(m, name) in allowed, f"mbold.{name} must be one of {', '.join(allowed)}, got {getattr(m, name)!r}")
    for name in ("video_width", "video_hidden", "context", "video_batch", "batch_size", "knn_states", "knn_neighbours",
                 "cql_actions", "policy_delay", "vae_latent", "temporal_max", "horizon", "iterations", "candidates",
                 "elites", "execute", "shooting_actions"):
        need(getattr(m, name) >= 1, f"mbold.{name} must be >= 1, got {getattr(m, name)}")
    need(m.window > m.context, f"mbold.window ({m.window} frames) must exceed mbold.context ({m.context})")
    need(m.elites <= m.candidates, f"mbold.elites ({m.elites}) must not exceed mbold.candidates ({m.candidates})")
    need(m.execute <= m.horizon, f"mbold.execute ({m.execute}) must not exceed mbold.horizon ({m.horizon})")
    need(0 < m.gamma < 1, f"mbold.gamma must be in (0, 1), got {m.gamma}")
    need(0 <= m.polyak < 1, f"mbold.polyak must be in [0, 1), got {m.polyak}")
    need(0 < m.goal_p <= 1, f"mbold.goal_p must be in (0, 1], got {m.goal_p}")
    need(0 <= m.negative_frac <= 1, f"mbold.negative_frac must be in [0, 1], got {m.negative_frac}")
    need(m.lr > 0 and m.video_lr > 0 and m.cql_alpha_lr > 0, "mbold.lr, video_lr and cql_alpha_lr must be > 0")
    need(m.target_noise >= 0 and m.target_noise_clip >= 0, "mbold.target_noise and target_noise_clip must be >= 0")
    need(0 < m.noise_beta <= 1, f"mbold.noise_beta must be in (0, 1], got {m.noise_beta}")
    need(m.init_std is None or (len(m.init_std) > 0 and all(v > 0 for v in m.init_std)),
         f"mbold.init_std must be one value > 0 per action dimension, got {m.init_std}")
    need(m.distance_updates is None or m.distance_updates >= 0,
         f"mbold.distance_updates must be >= 0 or None, got {m.distance_updates}")
    if cfg.agent == "mbold":
        need(cfg.frame_stack >= m.context, f"frame_stack ({cfg.frame_stack}) must be at least mbold.context "
                                           f"({m.context}): the video model's context comes from the state's frames")
