"""Agents: one per file. ``make_agent(name, cfg, spec, device, seed)`` builds one by name."""

from __future__ import annotations

import difflib

from pixelplan.agents.base import Agent, AgentBase, Decision, EnvSpec, ObsSpec, resolve_device


def _glamor(cfg, spec, device, seed):
    from pixelplan.agents.glamor import GlamorAgent
    return GlamorAgent(cfg, spec, device, seed)


def _gcsl(cfg, spec, device, seed):
    from pixelplan.agents.gcsl import GcslAgent
    return GcslAgent(cfg, spec, device, seed)


def _discern(cfg, spec, device, seed):
    from pixelplan.agents.discern import DiscernAgent
    return DiscernAgent(cfg, spec, device, seed)


def _planet(cfg, spec, device, seed):
    from pixelplan.agents.planet import PlanetAgent
    return PlanetAgent(cfg, spec, device, seed)


def _mbold(cfg, spec, device, seed):
    from pixelplan.agents.mbold import MboldAgent
    return MboldAgent(cfg, spec, device, seed)


def _random(cfg, spec, device, seed):
    from pixelplan.agents.random import RandomAgent
    return RandomAgent(cfg, spec, device, seed)


AGENTS = {"glamor": _glamor, "gcsl": _gcsl, "discern": _discern, "planet": _planet, "mbold": _mbold, "random": _random}


def make_agent(name: str, cfg, spec: EnvSpec, device, seed: int) -> Agent:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, AGENTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}.{hint}")
    return AGENTS[name](cfg, spec, device, seed)


__all__ = ["AGENTS", "Agent", "AgentBase", "Decision", "EnvSpec", "ObsSpec", "make_agent", "resolve_device"]
