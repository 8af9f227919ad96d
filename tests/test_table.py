"""``pixelplan table``: numbers, Markdown layout, curves, warnings and errors, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pixelplan import cli
from pixelplan.runs import table as table_mod
from pixelplan.runs.table import TableWarning, agent_order, make_table

CARTPOLE = "dmc:cartpole-balance"

# (env, agent, seed): (final success rate, env steps, {eval step: success rate})
RUNS = {
    ("gridworld", "glamor", 0): (1.00, 3000, {1000: 0.2, 2000: 0.6, 3000: 1.00}),
    ("gridworld", "glamor", 1): (0.50, 3000, {1000: 0.0, 2000: 0.4, 3000: 0.50}),
    ("gridworld", "glamor", 2): (0.75, 3000, {1000: 0.1, 2000: 0.5, 3000: 0.75, 3500: 0.8}),
    ("gridworld", "random", 0): (0.00, 3000, {1000: 0.0, 2000: 0.0, 3000: 0.00}),
    ("gridworld", "random", 1): (0.10, 3000, {1000: 0.1, 2000: 0.0, 3000: 0.10}),
    (CARTPOLE, "gcsl", 0): (0.40, 2000, {1000: 0.3, 2000: 0.40}),
    (CARTPOLE, "gcsl", 1): (0.40, 1000, {1000: 0.40}),
    (CARTPOLE, "glamor", 0): (0.90, 2000, {1000: 0.5, 2000: 0.90}),
    (CARTPOLE, "glamor", 1): (0.70, 2000, {1000: 0.3, 2000: 0.70}),
}


def write_run(path: Path, env: str, agent: str, seed: int, final: float, env_steps: int,
              evals: dict[int, float]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"env": env, "agent": agent, "seed": seed}))
    lines = []
    for step, rate in sorted(evals.items()):
        lines.append({"step": step, "kind": "train", "loss": 1.0 / step})
        lines.append({"step": step, "kind": "eval", "success_rate": rate, "mean_steps": 5.0,
                      "eval_episodes": 10, "wall_seconds": 1.5})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"env": env, "agent": agent, "seed": seed, "preset": "debug", "env_steps": env_steps,
               "wall_seconds": 12.3, "success_rate": final, "mean_steps": 5.0, "eval_episodes": 10}
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return path


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "runs"
    for (env, agent, seed), (final, steps, evals) in RUNS.items():
        write_run(root / f"{env.replace(':', '-')}-{agent}-seed{seed}", env, agent, seed, final, steps, evals)
    return root


@pytest.fixture
def run_dirs(runs_root) -> list[Path]:
    return sorted(runs_root.iterdir())


def parse_markdown(markdown: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(header, {env: {column: cell}}) of the table at the top of ``markdown``."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]   # noqa: E731
    header = split(rows[0])
    assert set(rows[1]) <= {"|", "-"}
    body = {}
    for line in rows[2:]:
        cells = split(line)
        body[cells[0]] = dict(zip(header[1:], cells[1:]))
    return header, body


# ------------------------------------------------------------------ numbers
def test_json_holds_exact_means_stds_seeds_and_steps(run_dirs, tmp_path):
    result = make_table(run_dirs, tmp_path / "out")
    table = result["table"]
    assert json.loads((tmp_path / "out" / "table.json").read_text()) == table
    assert list(table) == [CARTPOLE, "gridworld"]                   # envs sorted
    g = table["gridworld"]
    assert g["glamor"]["mean"] == pytest.approx(0.75)
    assert g["glamor"]["std"] == pytest.approx(math.sqrt(0.125 / 3))  # population std of 1, .5, .75
    assert g["glamor"]["seeds"] == 3 and g["glamor"]["env_steps"] == 3000
    assert g["random"]["mean"] == pytest.approx(0.05) and g["random"]["std"] == pytest.approx(0.05)
    assert g["random"]["seeds"] == 2
    c = table[CARTPOLE]
    assert c["glamor"]["mean"] == pytest.approx(0.8) and c["glamor"]["std"] == pytest.approx(0.1)
    assert c["gcsl"]["mean"] == pytest.approx(0.4) and c["gcsl"]["std"] == 0.0
    assert c["gcsl"]["env_steps"] == 1000 and c["gcsl"]["env_steps_max"] == 2000   # fewest shown
    for cells in table.values():
        for cell in cells.values():
            assert {"mean", "std", "seeds", "env_steps"} <= set(cell)


def test_markdown_cells_and_column_order(run_dirs, tmp_path):
    result = make_table(run_dirs, tmp_path / "out")
    markdown = result["markdown"]
    assert (tmp_path / "out" / "table.md").read_text() == markdown
    header, body = parse_markdown(markdown)
    assert header == ["env", "glamor", "gcsl", "random"]
    assert list(body) == [CARTPOLE, "gridworld"]
    assert body["gridworld"] == {"glamor": "0.75 (0.20), n=3, 3k steps", "gcsl": "-",
                                 "random": "0.05 (0.05), n=2, 3k steps"}
    assert body[CARTPOLE] == {"glamor": "0.80 (0.10), n=2, 2k steps",
                              "gcsl": "0.40 (0.00), n=2, 1k steps*", "random": "-"}
    # The marked cell is explained under the table.
    assert "fewest is shown" in markdown and f"{CARTPOLE} / gcsl: 1k to 2k" in markdown
    assert "ddof=0" in markdown


def test_a_single_seed_shows_std_zero(tmp_path):
    run = write_run(tmp_path / "one", "gridworld", "glamor", 4, 0.625, 1_500_000, {1000: 0.625})
    header, body = parse_markdown(make_table([run], tmp_path / "out")["markdown"])
    assert body["gridworld"]["glamor"] == "0.62 (0.00), n=1, 1.5M steps"
    assert "fewest is shown" not in make_table([run], tmp_path / "out")["markdown"]


def test_agent_order_glamor_gcsl_discern_others_then_random():
    assert agent_order(["random", "zeta", "discern", "mbold", "glamor", "gcsl", "planet"]) == \
        ["glamor", "gcsl", "discern", "mbold", "planet", "zeta", "random"]
    assert agent_order(["random", "planet"]) == ["planet", "random"]
    assert agent_order([]) == []


def test_columns_follow_agent_order(tmp_path):
    dirs = [write_run(tmp_path / a, "gridworld", a, 0, 0.5, 100, {100: 0.5})
            for a in ("random", "zeta", "discern", "glamor", "alpha", "gcsl")]
    header, _ = parse_markdown(make_table(dirs, tmp_path / "out")["markdown"])
    assert header == ["env", "glamor", "gcsl", "discern", "alpha", "zeta", "random"]


def test_reference_columns(run_dirs, tmp_path):
    reference = {"gridworld": {"glamor": 0.97}, CARTPOLE: {"gcsl": 0.3, "glamor": 0.851},
                 "atari:pong": {"glamor": 0.5}}
    with pytest.warns(TableWarning, match="atari:pong"):
        result = make_table(run_dirs, tmp_path / "out", reference=reference)
    header, body = parse_markdown(result["markdown"])
    assert header == ["env", "glamor", "gcsl", "random", "paper (glamor)", "paper (gcsl)"]
    assert body["gridworld"]["paper (glamor)"] == "0.97" and body["gridworld"]["paper (gcsl)"] == "-"
    assert body[CARTPOLE]["paper (glamor)"] == "0.85" and body[CARTPOLE]["paper (gcsl)"] == "0.30"
    assert "atari:pong" not in body
    assert set(result["table"]) == {"gridworld", CARTPOLE}          # table.json: measured numbers only


def test_reference_from_a_file_and_bad_references(run_dirs, tmp_path):
    path = tmp_path / "paper.json"
    path.write_text(json.dumps({"gridworld": {"glamor": 0.97}}))
    _, body = parse_markdown(make_table(run_dirs, tmp_path / "out", reference=path)["markdown"])
    assert body["gridworld"]["paper (glamor)"] == "0.97"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="env: {agent: value}"):
        make_table(run_dirs, tmp_path / "out", reference=path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_table(run_dirs, tmp_path / "out", reference=path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        make_table(run_dirs, tmp_path / "out", reference=tmp_path / "nope.json")


# ------------------------------------------------------------------- curves
def test_one_curve_per_env_at_the_shared_steps(run_dirs, tmp_path):
    out = tmp_path / "out"
    result = make_table(run_dirs, out)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["curve-dmc-cartpole-balance.png", "curve-gridworld.png"]
    assert sorted(Path(p).name for p in result["curves"]) == pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    curves = table_mod.curves(table_mod.find_runs(run_dirs))
    assert list(curves["gridworld"]) == ["glamor", "random"]
    steps, mean, std = curves["gridworld"]["glamor"]
    assert steps.tolist() == [1000, 2000, 3000]                      # 3500: only seed 2 has it
    assert mean == pytest.approx([0.1, 0.5, 0.75])
    assert std == pytest.approx([np.std([0.2, 0.0, 0.1]), np.std([0.6, 0.4, 0.5]), np.std([1, .5, .75])])
    steps, mean, std = curves[CARTPOLE]["gcsl"]
    assert steps.tolist() == [1000] and mean == pytest.approx([0.35]) and std == pytest.approx([0.05])


def test_a_run_without_eval_lines_is_left_out_of_its_curve_only(run_dirs, tmp_path):
    target = next(d for d in run_dirs if d.name == "gridworld-random-seed1")
    (target / "metrics.jsonl").unlink()
    with pytest.warns(TableWarning, match="no eval lines"):
        result = make_table(run_dirs, tmp_path / "out")
    assert result["table"]["gridworld"]["random"]["seeds"] == 2      # still in the table
    with pytest.warns(TableWarning, match="no eval lines"):
        steps, mean, _ = table_mod.curves(table_mod.find_runs(run_dirs))["gridworld"]["random"]
    assert mean == pytest.approx([0.0, 0.0, 0.0])


# ---------------------------------------------------------- warnings, errors
def test_non_run_directory_is_skipped_with_a_warning(run_dirs, tmp_path):
    stray = tmp_path / "not-a-run"
    stray.mkdir()
    (stray / "notes.txt").write_text("hello")
    with pytest.warns(TableWarning, match=r"not-a-run: no summary.json"):
        result = make_table([stray, *run_dirs], tmp_path / "out")
    assert result["table"]["gridworld"]["glamor"]["seeds"] == 3


def test_unusable_summaries_are_skipped_with_a_warning(run_dirs, tmp_path):
    broken = write_run(tmp_path / "broken", "gridworld", "glamor", 9, 0.0, 10, {})
    (broken / "summary.json").write_text("{")
    no_eval = write_run(tmp_path / "no-eval", "gridworld", "glamor", 8, 0.0, 10, {})
    summary = json.loads((no_eval / "summary.json").read_text())
    del summary["success_rate"]
    (no_eval / "summary.json").write_text(json.dumps(summary))
    with pytest.warns(TableWarning) as record:
        result = make_table([broken, no_eval, *run_dirs], tmp_path / "out")
    messages = "\n".join(str(w.message) for w in record)
    assert "cannot read summary.json" in messages and "no final success_rate" in messages
    assert result["table"]["gridworld"]["glamor"]["seeds"] == 3


def test_duplicate_seed_counts_once(run_dirs, tmp_path):
    copy = write_run(tmp_path / "copy", "gridworld", "glamor", 0, 0.0, 3000, {1000: 0.0})
    with pytest.warns(TableWarning, match="counted once"):
        result = make_table([*run_dirs, copy, run_dirs[0]], tmp_path / "out")
    assert result["table"]["gridworld"]["glamor"]["seeds"] == 3
    assert result["table"]["gridworld"]["glamor"]["mean"] == pytest.approx(0.75)


def test_a_directory_of_runs_is_expanded(runs_root, run_dirs, tmp_path):
    assert make_table([runs_root], tmp_path / "a")["table"] == make_table(run_dirs, tmp_path / "b")["table"]


def test_nothing_usable_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(TableWarning), pytest.raises(ValueError, match="no usable run directory"):
        make_table([empty, tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="no usable run directory"):
        make_table([], tmp_path / "out")
    assert not (tmp_path / "out" / "table.md").exists()


# ---------------------------------------------------------------------- CLI
def test_cli_table_writes_the_files_and_prints_the_table(run_dirs, tmp_path, capsys):
    out = tmp_path / "tables"
    reference = tmp_path / "paper.json"
    reference.write_text(json.dumps({"gridworld": {"glamor": 0.97}}))
    stray = tmp_path / "stray"
    stray.mkdir()
    rc = cli.main(["table", *map(str, run_dirs), str(stray), "--out", str(out),
                   "--reference", str(reference)])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out == (out / "table.md").read_text()
    header, body = parse_markdown(captured.out)
    assert header[-1] == "paper (glamor)" and body["gridworld"]["glamor"] == "0.75 (0.20), n=3, 3k steps"
    assert "warning" in captured.err and "stray" in captured.err
    for name in ("table.md", "table.json", "curve-gridworld.png", "curve-dmc-cartpole-balance.png"):
        assert (out / name).is_file(), name


def test_cli_table_default_out_dir_is_tables_in_the_cwd(run_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["table", *map(str, run_dirs)]) == 0
    assert (tmp_path / "tables" / "table.md").is_file()


def test_cli_table_with_nothing_usable_returns_2(tmp_path, capsys):
    assert cli.main(["table", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "warning" in err and "no usable run directory" in err


def test_usage_lists_table(capsys):
    assert cli.main([]) == 0
    assert "table" in capsys.readouterr().out


def test_the_shipped_table_1b_reference_loads():
    from pathlib import Path

    from pixelplan.runs.table import load_reference
    ref = load_reference(Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "glamor_table1b.json")
    assert len(ref) == 7 and ref["dmc:cartpole-balance"]["glamor"] == 0.97
    assert ref["dmc:point_mass-easy"] == {"glamor": 0.76, "discern": 0.03, "gcsl": 0.82}


def test_the_shipped_table_1a_reference_names_every_paper_game():
    from pathlib import Path

    from pixelplan.envs.atari import PAPER_GAMES
    from pixelplan.runs.table import load_reference
    ref = load_reference(Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "glamor_table1a.json")
    assert set(ref) == {f"atari:{g}" for g in PAPER_GAMES}   # keys are env names that runs record
    assert ref["atari:pong"]["glamor"] == 0.44 and ref["atari:qbert"] == {"glamor": 0.83, "discern": 0.26, "gcsl": 0.56}


# ------------------------------------------------------- metrics other than success
CHEETAH = "dmc:cheetah-run"

# (env, agent, seed): (final mean return, env steps, {eval step: mean return})
REWARD_RUNS = {
    (CHEETAH, "planet", 0): (600.0, 5000, {2500: 150.0, 5000: 600.0}),
    (CHEETAH, "planet", 1): (625.0, 5000, {2500: 250.0, 5000: 625.0}),
    (CHEETAH, "random", 0): (20.5, 5000, {2500: 18.0, 5000: 20.5}),
}


def write_eval_run(path: Path, env: str, agent: str, seed: int, env_steps: int, finals: dict,
                   evals: dict[int, dict]) -> Path:
    """A run directory whose summary and eval lines carry exactly the metrics given."""
    path.mkdir(parents=True)
    lines = [{"step": step, "kind": "eval", **metrics, "eval_episodes": 10, "wall_seconds": 1.0}
             for step, metrics in sorted(evals.items())]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"env": env, "agent": agent, "label": agent, "seed": seed, "preset": "debug",
               "env_steps": env_steps, "updates": 7, "wall_seconds": 9.0, "eval_trials": None,
               **finals, "eval_episodes": 10}
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return path


@pytest.fixture
def reward_dirs(tmp_path) -> list[Path]:
    root = tmp_path / "reward-runs"
    return [write_eval_run(root / f"cheetah-{agent}-seed{seed}", env, agent, seed, steps,
                           {"mean_return": final, "mean_steps": 1000.0},
                           {s: {"mean_return": r, "mean_steps": 1000.0} for s, r in evals.items()})
            for (env, agent, seed), (final, steps, evals) in REWARD_RUNS.items()]


@pytest.fixture
def saved_figures(monkeypatch) -> dict:
    """{png path: the matplotlib Figure saved there}, for checking axes after the fact."""
    from matplotlib.figure import Figure
    saved = {}
    original = Figure.savefig

    def savefig(self, path, *args, **kwargs):
        saved[Path(path).name] = self
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def band_range(ax) -> tuple[float, float]:
    """The lowest and highest y of the filled +-1 std bands on ``ax``."""
    ys = np.concatenate([p.vertices[:, 1] for c in ax.collections for p in c.get_paths()])
    return float(ys.min()), float(ys.max())


def test_a_reward_task_gets_a_mean_return_row(reward_dirs, tmp_path, saved_figures):
    out = tmp_path / "out"
    result = make_table(reward_dirs, out)
    cells = result["table"][CHEETAH]
    assert json.loads((out / "table.json").read_text())[CHEETAH]["planet"]["metric"] == "mean_return"
    assert {cell["metric"] for cell in cells.values()} == {"mean_return"}
    assert cells["planet"]["mean"] == pytest.approx(612.5) and cells["planet"]["std"] == pytest.approx(12.5)
    assert cells["random"]["mean"] == pytest.approx(20.5) and cells["random"]["seeds"] == 1
    assert result["metrics"] == {CHEETAH: "mean_return"}
    markdown = result["markdown"]
    header, body = parse_markdown(markdown)
    assert header == ["env", "planet", "random"]
    assert body[CHEETAH] == {"planet": "612.5 (12.5), n=2, 5k steps", "random": "20.5 (0.0), n=1, 5k steps"}
    assert "Final evaluation mean_return: mean (std)" in markdown and "success" not in markdown

    # The curve: mean returns, a band not clipped to [0, 1], a y axis that says so.
    steps, mean, std = table_mod.curves(table_mod.find_runs(reward_dirs))[CHEETAH]["planet"]
    assert steps.tolist() == [2500, 5000] and mean == pytest.approx([200.0, 612.5])
    assert std == pytest.approx([50.0, 12.5])
    ax = saved_figures["curve-dmc-cheetah-run.png"].axes[0]
    assert ax.get_ylabel() == "eval mean return"
    assert band_range(ax) == pytest.approx((18.0, 625.0))            # random at 18; planet 612.5 + 12.5
    assert ax.get_ylim()[1] > 600
    assert (out / "curve-dmc-cheetah-run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_curves_are_clipped_to_0_1_and_labelled(run_dirs, tmp_path, saved_figures):
    make_table(run_dirs, tmp_path / "out")
    ax = saved_figures["curve-gridworld.png"].axes[0]
    assert ax.get_ylabel() == "eval success rate"
    low, high = band_range(ax)
    assert low == 0.0 and high <= 1.0            # random's 0.05 - 0.05 std and glamor's 0.75 + 0.2
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))


def test_a_mixed_table_names_each_rows_metric(run_dirs, reward_dirs, tmp_path):
    out = tmp_path / "out"
    result = make_table([*run_dirs, *reward_dirs], out)
    assert result["metrics"] == {CARTPOLE: "success_rate", CHEETAH: "mean_return", "gridworld": "success_rate"}
    on_disk = json.loads((out / "table.json").read_text())
    assert {env: {c["metric"] for c in cells.values()} for env, cells in on_disk.items()} == \
        {CARTPOLE: {"success_rate"}, CHEETAH: {"mean_return"}, "gridworld": {"success_rate"}}
    header, body = parse_markdown(result["markdown"])
    assert header == ["env", "glamor", "gcsl", "planet", "random"]
    assert body["gridworld"]["glamor"] == "0.75 (0.20), n=3, 3k steps"
    assert body[CHEETAH]["planet"] == "612.5 (12.5), n=2, 5k steps" and body[CHEETAH]["glamor"] == "-"
    assert (f"Final evaluation metric, by env: success_rate ({CARTPOLE}, gridworld); "
            f"mean_return ({CHEETAH})") in result["markdown"]
    assert sorted(p.name for p in out.glob("*.png")) == \
        ["curve-dmc-cartpole-balance.png", "curve-dmc-cheetah-run.png", "curve-gridworld.png"]


def test_reference_numbers_of_a_reward_row_use_its_format(reward_dirs, tmp_path):
    _, body = parse_markdown(make_table(reward_dirs, tmp_path / "out",
                                        reference={CHEETAH: {"planet": 662}})["markdown"])
    assert body[CHEETAH]["paper (planet)"] == "662.0"


def test_auto_skips_runs_with_neither_success_rate_nor_mean_return(run_dirs, tmp_path):
    odd = write_eval_run(tmp_path / "odd", "dmc:odd", "glamor", 0, 100, {"mean_steps": 3.0},
                         {100: {"mean_steps": 3.0}})
    with pytest.warns(TableWarning, match=r"odd: summary.json has no final success_rate or mean_return"):
        result = make_table([odd, *run_dirs], tmp_path / "out")
    assert "dmc:odd" not in result["table"]


def goal_runs_with_optimal_rate(tmp_path) -> list[Path]:
    finals = {0: (1.0, 0.8), 1: (0.5, 0.25)}
    return [write_eval_run(tmp_path / f"grid-glamor-seed{seed}", "gridworld", "glamor", seed, 3000,
                           {"success_rate": s, "optimal_rate": o},
                           {1000: {"success_rate": s / 2, "optimal_rate": o / 2},
                            3000: {"success_rate": s, "optimal_rate": o}})
            for seed, (s, o) in finals.items()]


def test_metric_optimal_rate_selects_it(tmp_path, saved_figures):
    dirs = goal_runs_with_optimal_rate(tmp_path)
    no_optimal = write_eval_run(tmp_path / "grid-glamor-seed2", "gridworld", "glamor", 2, 3000,
                                {"success_rate": 0.9}, {3000: {"success_rate": 0.9}})
    with pytest.warns(TableWarning, match=r"seed2: summary.json has no final optimal_rate \(it has"):
        result = make_table([*dirs, no_optimal], tmp_path / "out", metric="optimal_rate")
    cell = result["table"]["gridworld"]["glamor"]
    assert cell["metric"] == "optimal_rate" and cell["seeds"] == 2
    assert cell["mean"] == pytest.approx(0.525) and cell["std"] == pytest.approx(0.275)
    assert "Final evaluation optimal_rate:" in result["markdown"]
    steps, mean, _ = table_mod.curves(table_mod.find_runs(dirs, "optimal_rate"))["gridworld"]["glamor"]
    assert steps.tolist() == [1000, 3000] and mean == pytest.approx([0.2625, 0.525])
    assert saved_figures["curve-gridworld.png"].axes[0].get_ylabel() == "eval optimal rate"
    # auto on the same runs is the success rate.
    assert make_table(dirs, tmp_path / "auto")["table"]["gridworld"]["glamor"]["mean"] == pytest.approx(0.75)


def test_cli_table_metric_flag(tmp_path, capsys):
    dirs = goal_runs_with_optimal_rate(tmp_path)
    out = tmp_path / "tables"
    assert cli.main(["table", *map(str, dirs), "--out", str(out), "--metric", "optimal_rate"]) == 0
    captured = capsys.readouterr()
    _, body = parse_markdown(captured.out)
    assert body["gridworld"]["glamor"] == "0.53 (0.28), n=2, 3k steps"
    assert "Final evaluation optimal_rate:" in captured.out
    assert json.loads((out / "table.json").read_text())["gridworld"]["glamor"]["metric"] == "optimal_rate"


def test_unknown_metric_is_an_error(run_dirs, reward_dirs, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"no run reports the metric 'nope' \(the runs report: "
                                         r"eval_episodes, mean_return, mean_steps, success_rate"):
        make_table([*run_dirs, *reward_dirs], tmp_path / "out", metric="nope")
    with pytest.raises(ValueError, match="no run reports the metric 'env_steps'"):   # a run field, not a metric
        make_table(run_dirs, tmp_path / "out", metric="env_steps")
    assert not (tmp_path / "out" / "table.md").exists()

    assert cli.main(["table", *map(str, run_dirs), "--out", str(tmp_path / "cli"), "--metric", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pixelplan table: error: no run reports the metric 'nope'")
    assert captured.err.count("\n") == 1                       # one line, no per-run warnings
    assert not (tmp_path / "cli").exists()


# ------------------------------------------------------ a run's learning curve
def eval_records(metrics_by_step: dict[int, dict]) -> list[dict]:
    return [r for step, m in sorted(metrics_by_step.items())
            for r in ({"step": step, "kind": "train", "loss": 0.5}, {"step": step, "kind": "eval", **m})]


def test_learning_curve_of_a_reward_task(tmp_path, saved_figures):
    from pixelplan.runs import plots
    path = tmp_path / "learning_curve.png"
    plots.learning_curve(eval_records({1000: {"mean_return": 120.0, "mean_steps": 1000.0},
                                       2000: {"mean_return": 480.0, "mean_steps": 1000.0}}), path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = saved_figures[path.name].axes[0]
    assert ax.get_ylabel() == "eval mean return"
    assert [line.get_label() for line in ax.get_lines()] == ["mean return"]
    assert ax.get_lines()[0].get_ydata().tolist() == [120.0, 480.0]
    assert ax.get_ylim()[1] > 480                             # not a [0, 1] axis


def test_learning_curve_of_a_goal_task_and_a_chosen_metric(tmp_path, saved_figures):
    from pixelplan.runs import plots
    records = eval_records({1000: {"success_rate": 0.5, "optimal_rate": 0.25, "mean_steps": 6.0},
                            2000: {"success_rate": 1.0, "optimal_rate": 0.75, "mean_steps": 4.0}})
    plots.learning_curve(records, tmp_path / "goal.png")
    ax = saved_figures["goal.png"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["success rate", "optimal rate"]
    assert ax.get_ylabel() == "fraction of evaluation goals"
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02))

    plots.learning_curve(records, tmp_path / "steps.png", metric="mean_steps")
    ax = saved_figures["steps.png"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["mean steps"]
    assert ax.get_ylabel() == "eval mean steps" and ax.get_ylim()[1] > 6
    with pytest.raises(ValueError, match="mean_return"):
        plots.learning_curve(records, tmp_path / "none.png", metric="mean_return")
    assert not (tmp_path / "none.png").exists()
