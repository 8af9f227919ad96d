"""``pixelplan table``: a results table and learning curves from a set of run directories.

The table has the layout of the GLAMOR paper's table 1: one row per env, one column per
agent (glamor, gcsl, discern, then any others alphabetically, random last: the floor). A
run whose summary has a ``label`` (``pixelplan train --label``, for ablations) gets the
label's column instead of its agent's.
A cell is the final value of an evaluation metric for that env and agent, from each run's
``summary.json``, as ``mean (std)`` over seeds (population std, ddof=0, so a single seed
shows 0.00), with the number of seeds and the env steps the runs trained for. If the runs
of one cell trained for different numbers of env steps, the fewest is shown, marked with
``*`` and explained under the table. Paper numbers, given as ``{env: {agent: value}}``,
appear as extra columns ``paper (<agent>)``.

The metric (``metric``, ``pixelplan table --metric``) is any key of the evaluation metrics
(``success_rate``, ``optimal_rate``, ``mean_return``, ``mean_steps``, ...), or ``auto``
(the default), which picks one per env: ``success_rate`` where that env's runs report it
(goal tasks), else ``mean_return`` (reward tasks), so one table can mix both kinds. The
notes under the table name the metric of each row. Rates (names ending in ``_rate``) show
two decimals, other metrics one. A run without the metric of its env is skipped with a
warning; a metric that no run reports is a ``ValueError``.

Written to the output directory:

* ``table.md``: the Markdown table (also printed by the CLI);
* ``table.json``: ``{env: {agent: {metric, mean, std, seeds, env_steps, env_steps_max}}}``,
  where ``metric`` names the env's metric, ``seeds`` counts runs and ``env_steps`` is the
  fewest env steps among them;
* ``curve-<env>.png`` per env (``:`` and ``/`` in the name become ``-``): the env's metric
  at each evaluation against env steps, from each run's ``metrics.jsonl``, one line per
  agent, the mean over seeds at the steps all of its seeds logged, with a +-1 std band
  (clipped to [0, 1] for rates).

A directory without ``summary.json`` is skipped with a warning (``TableWarning``), unless
it holds run directories one level down, which are used instead (so ``pixelplan table
runs`` reads every run under ``runs/``). Two runs of the same env, agent and seed count
once (the first given), with a warning. If no run is usable, ``ValueError``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelplan.runs import plots
from pixelplan.runs.logging import read_metrics

LEADING_AGENTS = ("glamor", "gcsl", "discern")
FLOOR_AGENT = "random"
MISSING = "-"
AUTO = "auto"
# What metric="auto" picks for an env: the first of these that its runs report.
AUTO_METRICS = ("success_rate", "mean_return")
# Numbers in summary.json that describe the run, not its evaluation.
RUN_FIELDS = frozenset({"seed", "env_steps", "updates", "episodes", "replay_gib", "dataset_frames",
                        "wall_seconds", "eval_trials"})


class TableWarning(UserWarning):
    """A run directory (or part of one) that ``pixelplan table`` had to leave out."""


@dataclass(frozen=True)
class Summary:
    """A run directory's ``summary.json``, read: ``finals`` holds its final evaluation metrics."""
    path: Path
    env: str
    agent: str
    seed: Any
    env_steps: int | None
    finals: dict[str, float]


@dataclass(frozen=True)
class Run:
    """A run in the table: the final ``value`` of its env's ``metric``."""
    path: Path
    env: str
    agent: str
    seed: Any
    env_steps: int | None
    metric: str
    value: float


def agent_order(agents: Iterable[str]) -> list[str]:
    """glamor, gcsl, discern (those present), then the others alphabetically, random last."""
    agents = set(agents)
    lead = [a for a in LEADING_AGENTS if a in agents]
    rest = sorted(agents - set(LEADING_AGENTS) - {FLOOR_AGENT})
    return lead + rest + ([FLOOR_AGENT] if FLOOR_AGENT in agents else [])


def curve_filename(env: str) -> str:
    safe = env
    for ch in (":", "/", "\\"):
        safe = safe.replace(ch, "-")
    return f"curve-{safe}.png"


# ---------------------------------------------------------------- reading runs
def _warn(message: str) -> None:
    warnings.warn(message, TableWarning, stacklevel=3)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _load_summary(path: Path) -> Summary | None:
    """The summary in ``path``, or None (with a warning) when it is unusable."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        _warn(f"{path}: cannot read summary.json ({exc}); skipped")
        return None
    if not isinstance(summary, dict):
        _warn(f"{path}: summary.json is not a JSON object; skipped")
        return None
    missing = [k for k in ("env", "agent") if not isinstance(summary.get(k), str) or not summary[k]]
    if missing:
        _warn(f"{path}: summary.json has no {' or '.join(missing)}; skipped")
        return None
    steps = summary.get("env_steps")
    # An ablation run names its column with its label (e.g. glamor-randomcollect).
    label = summary.get("label") if isinstance(summary.get("label"), str) and summary.get("label") else None
    finals = {k: float(v) for k, v in summary.items() if k not in RUN_FIELDS and _is_number(v)}
    return Summary(path=path, env=summary["env"], agent=label or summary["agent"], seed=summary.get("seed"),
                   env_steps=int(steps) if _is_number(steps) else None, finals=finals)


def choose_metrics(summaries: list[Summary], metric: str = AUTO) -> dict[str, str | None]:
    """``{env: metric}``: ``metric`` for every env, or with ``auto`` the first of
    ``AUTO_METRICS`` that some run of the env reports (None when none does). A metric that
    no run reports is a ``ValueError``."""
    envs = list(dict.fromkeys(s.env for s in summaries))
    if metric != AUTO:
        if summaries and not any(metric in s.finals for s in summaries):
            reported = sorted({k for s in summaries for k in s.finals})
            raise ValueError(f"no run reports the metric {metric!r} (the runs report: "
                             f"{', '.join(reported) or 'no evaluation metric'}; or use auto)")
        return {env: metric for env in envs}
    chosen = {}
    for env in envs:
        reported = {k for s in summaries if s.env == env for k in s.finals}
        chosen[env] = next((m for m in AUTO_METRICS if m in reported), None)
    return chosen


def find_runs(run_dirs: Iterable, metric: str = AUTO) -> list[Run]:
    """The usable runs among ``run_dirs`` (or one level below them), in the order given,
    each with the final value of its env's metric (``choose_metrics``)."""
    summaries = _find_summaries(run_dirs)
    metrics = choose_metrics(summaries, metric)
    runs = []
    for s in summaries:
        wanted = metrics[s.env]
        if wanted is None or wanted not in s.finals:
            wanted = wanted or " or ".join(AUTO_METRICS)
            hint = (f"it has {', '.join(sorted(s.finals))}" if s.finals else "did the run evaluate?")
            _warn(f"{s.path}: summary.json has no final {wanted} ({hint}); skipped")
            continue
        runs.append(Run(path=s.path, env=s.env, agent=s.agent, seed=s.seed, env_steps=s.env_steps,
                        metric=wanted, value=s.finals[wanted]))
    return runs


def _find_summaries(run_dirs: Iterable) -> list[Summary]:
    """The readable summaries among ``run_dirs`` (or one level below them), in the order given."""
    summaries: list[Summary] = []
    seen_paths: set[Path] = set()
    seen_seeds: dict[tuple, Path] = {}
    for given in run_dirs:
        path = Path(given)
        if not path.is_dir():
            _warn(f"{path}: no such directory; skipped")
            continue
        if (path / "summary.json").is_file():
            candidates = [path]
        else:
            candidates = sorted(p for p in path.iterdir() if (p / "summary.json").is_file())
            if not candidates:
                _warn(f"{path}: no summary.json (not a run directory written by pixelplan train, "
                      f"or its run has not finished); skipped")
                continue
        for candidate in candidates:
            if candidate.resolve() in seen_paths:
                continue
            seen_paths.add(candidate.resolve())
            summary = _load_summary(candidate)
            if summary is None:
                continue
            if summary.seed is not None:
                key = (summary.env, summary.agent, json.dumps(summary.seed))
                if key in seen_seeds:
                    _warn(f"{candidate}: same env, agent and seed ({summary.env}, {summary.agent}, "
                          f"seed {summary.seed}) as {seen_seeds[key]}; counted once, from {seen_seeds[key]}")
                    continue
                seen_seeds[key] = candidate
            summaries.append(summary)
    return summaries


def load_reference(reference) -> dict[str, dict[str, Any]]:
    """Paper numbers ``{env: {agent: value}}`` from a mapping or a JSON file; top-level keys
    starting with ``_`` are comments (``benchmarks/reference/glamor_table1b.json`` names its source)."""
    if reference is None:
        return {}
    if not isinstance(reference, Mapping):
        path = Path(reference)
        try:
            reference = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"reference file {path} does not exist") from None
        except ValueError as exc:
            raise ValueError(f"reference file {path} is not valid JSON: {exc}") from None
    if isinstance(reference, Mapping):  # keys starting with "_" are comments (e.g. "_source")
        reference = {k: v for k, v in reference.items() if not str(k).startswith("_")}
    if not isinstance(reference, Mapping) or not all(isinstance(v, Mapping) for v in reference.values()):
        raise ValueError('the reference must be a JSON object {env: {agent: value}}, '
                         'e.g. {"gridworld": {"glamor": 0.95}}')
    return {str(env): {str(agent): value for agent, value in agents.items()}
            for env, agents in reference.items()}


# ------------------------------------------------------------------ numbers
def summarise(runs: list[Run]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {agent: {metric, mean, std, seeds, env_steps, env_steps_max}}}``, envs sorted,
    agents in column order."""
    cells: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        cells.setdefault(run.env, {}).setdefault(run.agent, []).append(run)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for env in sorted(cells):
        table[env] = {}
        for agent in agent_order(cells[env]):
            group = cells[env][agent]
            values = np.array([r.value for r in group], dtype=np.float64)
            steps = [r.env_steps for r in group if r.env_steps is not None]
            table[env][agent] = {"metric": group[0].metric,   # one metric per env (find_runs)
                                 "mean": float(values.mean()), "std": float(values.std(ddof=0)),
                                 "seeds": len(group), "env_steps": min(steps) if steps else None,
                                 "env_steps_max": max(steps) if steps else None}
    return table


def _steps_text(steps: int | None) -> str:
    if steps is None:
        return "?"
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if steps >= size:
            return f"{steps / size:.3g}{suffix}"
    return str(steps)


def _differs(cell: dict) -> bool:
    return cell["env_steps"] is not None and cell["env_steps_max"] != cell["env_steps"]


def env_metrics(table: dict) -> dict[str, str]:
    """``{env: metric}`` of a ``summarise`` table (every cell of an env has its env's metric)."""
    return {env: next(iter(cells.values()))["metric"] for env, cells in table.items() if cells}


def _number_text(value: float, metric: str) -> str:
    """Two decimals for a rate, one for other metrics (returns, step counts)."""
    return f"{value:.2f}" if plots.is_rate(metric) else f"{value:.1f}"


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return MISSING
    mark = "*" if _differs(cell) else ""
    mean, std = (_number_text(cell[k], cell["metric"]) for k in ("mean", "std"))
    return f"{mean} ({std}), n={cell['seeds']}, {_steps_text(cell['env_steps'])} steps{mark}"


def _reference_text(value, metric: str) -> str:
    if value is None:
        return MISSING
    return _number_text(value, metric) if _is_number(value) else str(value)


def _metric_note(metrics: dict[str, str]) -> str:
    """The first note: what the cells are, naming the metric of every row."""
    rest = "mean (std) over seeds (population std, ddof=0); n = seeds; steps = env steps per run."
    envs_of: dict[str, list[str]] = {}
    for env, metric in metrics.items():
        envs_of.setdefault(metric, []).append(env)
    if len(envs_of) == 1:
        return f"Final evaluation {next(iter(envs_of))}: {rest}"
    per_env = "; ".join(f"{metric} ({', '.join(envs)})" for metric, envs in envs_of.items())
    return f"Final evaluation metric, by env: {per_env}. Cells: {rest}"


def to_markdown(table: dict, reference: dict | None = None) -> str:
    """The Markdown table (padded for reading as plain text) and its notes."""
    reference = reference or {}
    metrics = env_metrics(table)
    agents = agent_order({a for cells in table.values() for a in cells})
    paper = agent_order({a for env in table for a in reference.get(env, {})})
    header = ["env", *agents, *(f"paper ({a})" for a in paper)]
    rows = [[env, *(_cell_text(table[env].get(a)) for a in agents),
             *(_reference_text(reference.get(env, {}).get(a), metrics[env]) for a in paper)] for env in table]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    notes = [_metric_note(metrics)]
    differing = [(env, agent, cell) for env, cells in table.items() for agent, cell in cells.items()
                 if _differs(cell)]
    if differing:
        spans = "; ".join(f"{env} / {agent}: {_steps_text(c['env_steps'])} to "
                          f"{_steps_text(c['env_steps_max'])}" for env, agent, c in differing)
        notes.append(f"\\* The runs of this cell trained for different env steps; the fewest is shown "
                     f"({spans}).")
    if paper:
        notes.append("paper (agent): the reference numbers given with --reference.")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- curves
def _eval_curve(run: Run) -> dict[int, float] | None:
    """``{eval step: value of the run's metric}`` from its ``metrics.jsonl``."""
    try:
        records = read_metrics(run.path)
    except (OSError, ValueError) as exc:
        _warn(f"{run.path}: cannot read metrics.jsonl ({exc}); left out of the {run.env} curve")
        return None
    curve = {int(r["step"]): float(r[run.metric]) for r in records
             if isinstance(r, dict) and r.get("kind") == "eval" and _is_number(r.get(run.metric))
             and _is_number(r.get("step"))}
    if not curve:
        _warn(f"{run.path}: no eval lines with {run.metric} in metrics.jsonl; left out of the {run.env} curve")
        return None
    return curve


def curves(runs: list[Run]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``{env: {agent: (steps, mean, std)}}`` of each run's metric over the eval steps all of
    an agent's seeds share."""
    groups: dict[str, dict[str, list[dict[int, float]]]] = {}
    for run in runs:
        curve = _eval_curve(run)
        if curve is not None:
            groups.setdefault(run.env, {}).setdefault(run.agent, []).append(curve)
    out: dict[str, dict[str, tuple]] = {}
    for env in sorted(groups):
        for agent in agent_order(groups[env]):
            seeds = groups[env][agent]
            shared = sorted(set.intersection(*(set(c) for c in seeds)))
            if not shared:
                _warn(f"{env} / {agent}: its runs share no eval step; no curve for it")
                continue
            values = np.array([[c[s] for s in shared] for c in seeds], dtype=np.float64)
            out.setdefault(env, {})[agent] = (np.array(shared), values.mean(0), values.std(0, ddof=0))
    return out


# --------------------------------------------------------------------- main
def make_table(run_dirs: Iterable, out_dir, reference=None, metric: str = AUTO) -> dict[str, Any]:
    """Read the runs, write ``table.md``, ``table.json`` and ``curve-<env>.png`` to ``out_dir``.

    ``reference`` is ``{env: {agent: value}}`` or a JSON file holding it. ``metric`` is an
    evaluation metric's name, or ``auto`` (per env: ``success_rate``, else ``mean_return``).
    Returns ``{"table": <table.json content>, "markdown": <table.md text>, "curves": [png
    paths], "metrics": {env: metric}}``.
    """
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be an evaluation metric's name or {AUTO!r}, got {metric!r}")
    reference = load_reference(reference)
    runs = find_runs(run_dirs, metric)
    if not runs:
        given = ", ".join(map(str, run_dirs)) or "(none)"
        raise ValueError(f"no usable run directory among: {given}. A run directory is what "
                         f"pixelplan train writes, with a summary.json once the run has finished.")
    table = summarise(runs)
    metrics = env_metrics(table)
    unknown = sorted(set(reference) - set(table))
    if unknown:
        _warn(f"reference envs with no runs, not shown: {', '.join(unknown)}")
    markdown = to_markdown(table, reference)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown)
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    written = []
    env_curves = curves(runs)
    every_agent = agent_order({a for cells in table.values() for a in cells})   # stable colours
    for env in table:
        if env not in env_curves:
            _warn(f"{env}: no run has eval lines with {metrics[env]} in metrics.jsonl; no curve written")
            continue
        path = out / curve_filename(env)
        plots.eval_curves(env_curves[env], path, title=env, labels=every_agent, metric=metrics[env])
        written.append(str(path))
    return {"table": table, "markdown": markdown, "curves": written, "metrics": metrics}
