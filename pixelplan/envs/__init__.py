"""Goal environments: the contract, the built-in grid world, wrappers and a registry.

>>> from pixelplan import envs
>>> env = envs.make("gridworld")
>>> frame, info = env.reset(seed=0)
>>> frame.shape, frame.dtype.name, info["features"].tolist()
((27, 27), 'uint8', [3.0, 3.0])

Names are plain (``"gridworld"``) or use a ``"prefix:rest"`` form
(``"dmc:cartpole-balance"``): ``register("dmc:", factory)`` registers a
prefix handler called as ``factory(rest, **kwargs)``. Built in: ``gridworld``,
``gridworld-fourrooms``, ``dmc:<domain>-<task>`` (any dm_control suite task;
see :mod:`pixelplan.envs.dmc`) and ``atari:<game>`` (the GLAMOR paper's 14 games; see
:mod:`pixelplan.envs.atari`).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from .core import Goal, GoalEnv, GoalSpec, GymGoalEnv, check_goal_frame
from .atari import AtariGoalEnv, make_atari
from .dmc import DMCGoalEnv, make_dmc
from .goals import GoalSets, build_goal_sets, cached_goal_sets, diverse_goals, load_goals, save_goals
from .gridworld import GridWorld
from .wrappers import FrameStack, stack_from_history

__all__ = [
    "Goal",
    "GoalEnv",
    "GoalSpec",
    "GymGoalEnv",
    "check_goal_frame",
    "GridWorld",
    "DMCGoalEnv",
    "AtariGoalEnv",
    "GoalSets",
    "build_goal_sets",
    "cached_goal_sets",
    "FrameStack",
    "stack_from_history",
    "diverse_goals",
    "save_goals",
    "load_goals",
    "make",
    "register",
    "names",
]

_FACTORIES: dict[str, Callable[..., GoalEnv]] = {}
_PREFIXES: dict[str, Callable[..., GoalEnv]] = {}


def register(name: str, factory: Callable[..., GoalEnv], overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> GoalEnv`` under ``name``.

    A name ending in ``":"`` (e.g. ``"dmc:"``) registers a prefix handler,
    called as ``factory(rest, **kwargs)`` for ``make("dmc:rest", ...)``.
    """
    if not isinstance(name, str) or not name or name.count(":") > 1 or (":" in name and not name.endswith(":")):
        raise ValueError(f"env name must be a non-empty string, or a prefix ending in ':', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable")
    table = _PREFIXES if name.endswith(":") else _FACTORIES
    key = name[:-1] if name.endswith(":") else name
    if key in table and not overwrite:
        raise ValueError(f"env {name!r} is already registered (pass overwrite=True to replace it)")
    table[key] = factory


def names() -> list[str]:
    """Registered env names, sorted; prefix handlers appear as ``"prefix:*"``."""
    return sorted(_FACTORIES) + sorted(f"{p}:*" for p in _PREFIXES)


def _check_kwargs(name: str, factory: Callable, kwargs: dict, skip_first: bool = False) -> None:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return
    if skip_first and params:
        params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"env {name!r} got unknown option(s) {', '.join(hints)}; "
            f"accepted options: {', '.join(accepted) if accepted else '(none)'}"
        )


def make(name: str, **kwargs: Any) -> GoalEnv:
    """Build the registered env ``name`` with options ``kwargs``."""
    if name in _FACTORIES:
        factory = _FACTORIES[name]
        _check_kwargs(name, factory, kwargs)
        return factory(**kwargs)
    if isinstance(name, str) and ":" in name:
        prefix, rest = name.split(":", 1)
        if prefix in _PREFIXES:
            factory = _PREFIXES[prefix]
            _check_kwargs(name, factory, kwargs, skip_first=True)
            return factory(rest, **kwargs)
    known = names()
    close = difflib.get_close_matches(str(name), known, n=1)
    raise ValueError(
        f"unknown env {name!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; known envs: {', '.join(known)}"
    )


def _gridworld_fourrooms(
    start: str = "centre",
    max_episode_steps: int | None = None,
    cell_px: int = 3,
    render_mode: str | None = None,
) -> GridWorld:
    """Sutton et al.'s four rooms (11x11 interior, 13x13 with the border)."""
    return GridWorld(
        layout="fourrooms", start=start, max_episode_steps=max_episode_steps, cell_px=cell_px, render_mode=render_mode
    )


register("gridworld", GridWorld)
register("dmc:", make_dmc)
register("atari:", make_atari)
register("gridworld-fourrooms", _gridworld_fourrooms)
