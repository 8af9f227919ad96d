"""Facts about the benchmark suites that both the env layer and the presets need (numpy-free,
torch-free, below both): PlaNet's action repeat per DeepMind Control domain and the episode
length of dm_control's tasks. ``envs/dmc.py`` builds its reward tasks from them; ``config.py``
turns PlaNet's budgets in episodes into agent steps with them."""

from __future__ import annotations

#: reward tasks: PlaNet's action repeat R per domain (env steps per agent step; appendix A)
ACTION_REPEAT = {"cartpole": 8, "reacher": 4, "cheetah": 4, "finger": 2, "ball_in_cup": 4, "walker": 2}
#: reward tasks: the action repeat of domains PlaNet did not run (the median of its table)
DEFAULT_ACTION_REPEAT = 4
#: reward tasks: env steps per episode (dm_control's own length for every suite task but lqr)
EPISODE_ENV_STEPS = 1000


def dmc_reward_episode_steps(env: str) -> int | None:
    """T (agent steps) of the reward task ``dmc:<domain>-<task>`` at PlaNet's action repeat;
    None for any other env name."""
    if not env.startswith("dmc:"):
        return None
    domain = env[len("dmc:"):].split("-", 1)[0]
    return EPISODE_ENV_STEPS // ACTION_REPEAT.get(domain, DEFAULT_ACTION_REPEAT)


#: MBOLD's tabletop scenes: the std of the dataset's correlated-noise random policy per scene
#: (table 4; actions dx, dy, dz, gripper) and its filter's beta (appendix A.3)
TABLETOP_NOISE_STD = {"reach": (0.6, 0.6, 0.3, 0.3), "push1": (0.6, 0.6, 0.3, 0.3), "push3": (0.6, 0.6, 0.3, 0.3),
                      "door": (0.3, 0.3, 0.3, 0.15)}
TABLETOP_NOISE_BETA = 0.5


def collection_noise(env: str) -> dict | None:
    """The correlated-noise policy ``{"std": [...], "beta": b}`` that the suite collects ``env``'s
    random data with (MBOLD's tabletop scenes); None where the suite's random policy is uniform."""
    if not env.startswith("tabletop:"):
        return None
    scene = env[len("tabletop:"):]
    if scene not in TABLETOP_NOISE_STD:
        return None
    return {"std": list(TABLETOP_NOISE_STD[scene]), "beta": TABLETOP_NOISE_BETA}
