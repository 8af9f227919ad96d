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
