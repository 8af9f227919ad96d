"""Goal environments: the contract, the built-in grid world, wrappers and a registry.

>>> from pixelplan import envs
>>> env = envs.make("gridworld")
>>> frame, info = env.reset(seed=0)
>>> frame.shape, frame.dtype.name, info["features"].tolist()
((27, 27), 'uint8', [3.0, 3.0])

Names are plain (``"gridworld"``) or use a ``"prefix:rest"`` form
(``"dmc:cartpole-balance"``): ``register("dmc:", factory)`` registers a
prefix handler called as ``factory(rest, **kwargs)``. Built in: ``gridworld``,
``gridworld-fourrooms``, ``gridworld-maze9``, ``dmc:<domain>-<task>`` (any dm_control suite task;
see :mod:`pixelplan.envs.dmc`) and ``atari:<game>`` (the GLAMOR paper's 14 games; see
:mod:`pixelplan.envs.atari`) and ``tabletop:<scene>`` (MBOLD's reach, push1, push3 and door; see
:mod:`pixelplan.envs.tabletop`).

A name ``"package.module:factory"`` whose prefix is not a registered prefix names a
factory by import path, like a Gymnasium entry point: ``make`` imports the module (from
``sys.path``, and from the current directory when it is not on ``sys.path``, as
``python -m`` would) and calls ``factory(**kwargs)``, which must return a
:class:`GoalEnv`. This form works in every process, so env worker processes need no
registration; ``pixelplan train --env examples.slider:make_env`` trains a user's env.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from typing import Any, Callable

import gymnasium as gym

from .core import Goal, GoalEnv, GoalSpec, GoalTask, GymGoalEnv, check_goal_frame
from .atari import AtariGoalEnv, make_atari
from .dmc import DMCGoalEnv, make_dmc
from .tabletop import TabletopEnv, make_tabletop
from .goals import GoalSets, build_goal_sets, cached_goal_sets, diverse_goals, load_goals, save_goals
from .gridworld import GridWorld
from .wrappers import FrameStack, stack_from_history

__all__ = [
    "Goal",
    "GoalTask",
    "GoalEnv",
    "GoalSpec",
    "GymGoalEnv",
    "check_goal_frame",
    "GridWorld",
    "DMCGoalEnv",
    "AtariGoalEnv",
    "TabletopEnv",
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
#: the (name, factory) pairs this module registers itself: every process that imports
#: pixelplan.envs has them, while a program's own register() calls exist only in its process
_BUILTIN: set[tuple[str, int]] = set()
#: "package.module:attr", both sides dotted Python identifiers
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


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
    required = [p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    if required:
        raise ValueError(f"env {name!r} needs option(s) {', '.join(required)} (pixelplan train --env-options "
                         f"{required[0]} VALUE ...)")
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        hints = []
        # a factory may name what to use instead of an option users are likely to try
        named = getattr(factory, "option_hints", None) or {}
        for k in unknown:
            if k in named:
                hints.append(f"{k!r} (use {named[k]})")
                continue
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"env {name!r} got unknown option(s) {', '.join(hints)}; "
            f"accepted options: {', '.join(accepted) if accepted else '(none)'}"
        )


def runtime_registration(name: str) -> tuple[str, Callable[..., GoalEnv]] | None:
    """``(registered name, factory)`` when ``name`` resolves to a registration made at run
    time by the program (not by pixelplan itself), else ``None``. A prefix registration is
    returned as ``("prefix:", handler)``. Env worker processes are spawned fresh and do not
    have such registrations; :class:`pixelplan.envs.vector.EnvFactory` ships them along."""
    if not isinstance(name, str):
        return None
    if name in _FACTORIES:
        key, factory = name, _FACTORIES[name]
    elif ":" in name and name.split(":", 1)[0] in _PREFIXES:
        key = name.split(":", 1)[0] + ":"
        factory = _PREFIXES[key[:-1]]
    else:
        return None
    return None if (key, id(factory)) in _BUILTIN else (key, factory)


def adopt_registration(key: str, factory: Callable[..., GoalEnv]) -> None:
    """Register ``factory`` under ``key`` unless that name is already registered (used in env
    worker processes, where importing the factory's module may have registered it)."""
    table = _PREFIXES if key.endswith(":") else _FACTORIES
    if (key[:-1] if key.endswith(":") else key) not in table:
        register(key, factory)


def _import_module(module_name: str, env_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        cwd = os.getcwd()
        # Only a miss of the module itself (or a parent package) is retried from the current
        # directory: the console script `pixelplan` does not put it on sys.path, `python -m` does.
        if not (module_name == missing or module_name.startswith(missing + ".")) or not missing:
            raise ValueError(f"env {env_name!r}: importing module {module_name!r} failed: {exc}") from None
        on_path = {os.path.abspath(p or os.curdir) for p in sys.path}
        if os.path.abspath(cwd) in on_path:
            raise ValueError(f"env {env_name!r}: no module named {missing!r} (looked on sys.path, which "
                             f"includes the current directory {cwd})") from None
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()
        try:
            # cwd stays on sys.path when this works: spawned env workers copy sys.path, and
            # pickled references to the module's functions must resolve there too.
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc2:
            sys.path.remove(cwd)
            if exc2.name and (module_name == exc2.name or module_name.startswith(exc2.name + ".")):
                raise ValueError(f"env {env_name!r}: no module named {exc2.name!r} (looked on sys.path and "
                                 f"in the current directory {cwd})") from None
            raise ValueError(f"env {env_name!r}: importing module {module_name!r} failed: {exc2}") from None
    except ImportError as exc:
        raise ValueError(f"env {env_name!r}: importing module {module_name!r} failed: {exc}") from None


def _import_factory(name: str) -> Callable[..., GoalEnv]:
    module_name, attr = name.split(":", 1)
    try:
        obj = _import_module(module_name, name)
    except ValueError as exc:
        close = difflib.get_close_matches(module_name, list(_PREFIXES), n=1)
        if close and "no module named" in str(exc):
            raise ValueError(f"{exc} (did you mean {close[0]}:{attr}?)") from None
        raise
    for part in attr.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [a for a in dir(obj) if not a.startswith("_")], n=1)
            where = f"module {module_name!r}" if obj is sys.modules.get(module_name) else repr(obj)
            raise ValueError(f"env {name!r}: {where} has no attribute {part!r}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"env {name!r}: {attr} is a {type(obj).__name__}, not a callable that returns a GoalEnv")
    return obj


def _goal_env_of(name: str, env: Any) -> GoalEnv:
    """``env`` if it is a GoalEnv (or a wrapper of one); else a one-line ValueError."""
    if isinstance(env, GoalEnv) or isinstance(getattr(env, "unwrapped", None), GoalEnv):
        return env
    hint = ("wrap it with pixelplan.envs.GymGoalEnv(env, features_fn, goal_spec)"
            if isinstance(env, gym.Env) else "it must return a pixelplan.envs.GoalEnv")
    cls = type(env)
    raise ValueError(f"env {name!r}: the factory returned a {cls.__qualname__} ({cls.__module__}.{cls.__qualname__}), "
                     f"not a pixelplan GoalEnv; {hint}")


def make(name: str, **kwargs: Any) -> GoalEnv:
    """Build the env ``name`` with options ``kwargs``: a registered name, ``"prefix:rest"``
    for a registered prefix, or ``"package.module:factory"`` (an importable factory)."""
    if not isinstance(name, str):
        raise ValueError(f"env name must be a string, got {name!r}")
    if name in _FACTORIES:
        factory = _FACTORIES[name]
        _check_kwargs(name, factory, kwargs)
        env = factory(**kwargs)
    elif ":" in name and name.split(":", 1)[0] in _PREFIXES:
        prefix, rest = name.split(":", 1)
        factory = _PREFIXES[prefix]
        _check_kwargs(name, factory, kwargs, skip_first=True)
        env = factory(rest, **kwargs)
    elif _IMPORT_PATH.match(name):
        factory = _import_factory(name)
        _check_kwargs(name, factory, kwargs)
        env = factory(**kwargs)
    else:
        known = names()
        close = difflib.get_close_matches(name, known, n=1)
        raise ValueError(
            f"unknown env {name!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; known envs: {', '.join(known)}; or name a factory by import path, package.module:function"
            + ("" if ":" in name else " (a name registered with register() exists only in the process that "
               "registered it)")
        )
    env = _goal_env_of(name, env)
    base = env.unwrapped
    base.make_name, base.make_options = name, dict(kwargs)
    return env


def _layout_factory(layout: str, doc: str) -> Callable[..., GridWorld]:
    """``make`` factory of a grid world with a builtin layout (its options: start, T, pixels)."""
    def factory(start: str = "centre", max_episode_steps: int | None = None, cell_px: int = 3,
                render_mode: str | None = None) -> GridWorld:
        return GridWorld(layout=layout, start=start, max_episode_steps=max_episode_steps, cell_px=cell_px,
                         render_mode=render_mode)
    factory.__doc__ = doc
    factory.__name__ = factory.__qualname__ = f"gridworld_{layout}"
    return factory


_gridworld_fourrooms = _layout_factory("fourrooms", "Sutton et al.'s four rooms (11x11 interior, 13x13 with the border).")
_gridworld_maze9 = _layout_factory("maze9", "pixelplan's 9x9 maze: corridors, dead ends, shortest paths up to 16 "
                                            "steps (T = 32).")


for _name, _factory in (("gridworld", GridWorld), ("dmc:", make_dmc), ("atari:", make_atari), ("tabletop:", make_tabletop),
                        ("gridworld-fourrooms", _gridworld_fourrooms), ("gridworld-maze9", _gridworld_maze9)):
    register(_name, _factory)
    _BUILTIN.add((_name, id(_factory)))
