"""The config: a shared section, resume checks that compare only what the agent reads,
presets that compose, and runs saved before the shared section existed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pixelplan import cli
from pixelplan import config as config_lib
from pixelplan.runs.train import IncompatibleCheckpoint, train

from conftest import small_run_config


def test_shared_and_agent_sections_partition_what_glamor_had():
    shared = {f.name for f in dataclasses.fields(config_lib.SharedConfig)}
    own = {f.name for f in dataclasses.fields(config_lib.GlamorConfig)}
    assert not shared & own
    assert {"encoder", "state_size", "lr", "batch_size", "max_k", "collect", "eps_steps"} <= shared
    assert {"trials", "gamma", "clip_logp", "lstm_hidden", "plan_ema"} <= own


def test_a_config_saved_before_the_shared_section_loads_with_its_values_moved():
    new = config_lib.preset("gridworld")
    old = config_lib.to_dict(new)
    old["glamor"].update(old.pop("shared"))               # the layout runs were saved in before
    loaded = config_lib.from_dict(old)
    assert loaded == new
    assert config_lib.incompatible_fields(loaded, new) == []


def test_a_run_saved_before_the_shared_section_resumes(run_dir):
    cfg = small_run_config(run_dir)
    cfg.steps = 2 * 48
    train(cfg)
    path = run_dir / "config.json"
    data = json.loads(path.read_text())
    data["glamor"].update(data.pop("shared"))
    path.write_text(json.dumps(data))
    cfg.steps = 4 * 48
    summary = train(cfg)
    assert summary["env_steps"] >= 4 * 48


@pytest.mark.parametrize("agent", ["gcsl", "discern"])
def test_glamor_only_values_do_not_stop_a_baseline_from_resuming(run_dir, agent):
    cfg = small_run_config(run_dir, agent=agent)
    cfg.steps = 2 * 48
    train(cfg)
    again = small_run_config(run_dir, agent=agent, **{"glamor.trials": 99, "glamor.gamma": 0.5})
    again.steps = 3 * 48
    assert train(again)["env_steps"] >= 3 * 48
    # A shared value is what the baseline reads: changing it is refused, by name.
    changed = small_run_config(run_dir, agent=agent, **{"shared.lr": 0.123})
    changed.steps = 4 * 48
    with pytest.raises(IncompatibleCheckpoint, match="shared.lr"):
        train(changed)


def test_presets_compose_left_to_right():
    paper, debug = config_lib.preset("paper", "dmc:cartpole-balance"), config_lib.preset("debug")
    both = config_lib.preset(["paper", "debug"], "dmc:cartpole-balance")
    assert both.preset == "paper+debug" and debug.preset == "gridworld+debug"
    # The overlay sets the budget and sizes; everything it does not name stays the paper's.
    assert (both.steps, both.shared.state_size, both.shared.batch_size) == (600, 32, 16)
    assert (both.glamor.gamma, both.glamor.plan_ema, both.min_steps_learn) == (paper.glamor.gamma, 0.0, 200)
    # Without a base, auto is the base (by env).
    assert config_lib.preset("debug", "dmc:cartpole-balance") == both
    assert config_lib.preset(["gridworld", "debug"]) == debug


@pytest.mark.parametrize("names,needle", [(["debug", "paper"], "at most one base"),
                                          (["paper", "gridworld"], "at most one base"),
                                          (["papr"], "unknown preset 'papr'")])
def test_bad_preset_combinations_are_named(names, needle):
    with pytest.raises(ValueError, match=needle):
        config_lib.preset(names)


def test_cli_composes_presets_and_moves_old_flags(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="--glamor.lr is now --shared.lr"):
        rc = cli.main(["train", "--preset", "gridworld", "debug", "--out", str(out), "--steps", "100",
                       "--no-progress", "--threads", "1", "--glamor.lr", "0.002", "--glamor.trials", "3"])
    assert rc == 0
    saved = config_lib.load(out / "config.json")
    assert saved.preset == "gridworld+debug" and saved.shared.lr == 0.002 and saved.glamor.trials == 3
    assert cli.main(["train", "--preset", "debug", "paper", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_eval_trials_is_an_override_of_the_agent_not_a_write_into_its_config(monkeypatch):
    import numpy as np
    import torch

    from pixelplan.agents import ObsSpec, make_agent
    cfg = config_lib.preset("debug")
    agent = make_agent("glamor", cfg, ObsSpec((27, 27), 2, 4, 12), torch.device("cpu"), 0)
    assert agent.eval_trials == cfg.glamor.trials == 8
    seen = []
    real_plan = agent.plan
    monkeypatch.setattr(agent, "plan", lambda *a, **k: seen.append(a[3]) or real_plan(*a, **k))
    agent.eval_trials = 3
    agent.act(np.zeros((2, 2, 27, 27), np.uint8), np.zeros((2, 27, 27), np.uint8), np.zeros(2, int),
              explore=False, env_steps=0)
    assert seen == [3] and cfg.glamor.eval_trials is None and cfg.glamor.trials == 8


def test_eval_of_an_agent_without_a_planner_writes_eval_json(run_dir, capsys):
    cfg = small_run_config(run_dir, agent="gcsl")
    cfg.steps = 2 * 48
    train(cfg)
    assert cli.main(["eval", "--run", str(run_dir), "--episodes", "3"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["trials"] is None and result["eval_episodes"] == 3
    assert not list(run_dir.glob("eval-trials*"))


@pytest.mark.parametrize("flags, needle", [
    (["--shared.precision", "fp16"], "fp16"),             # a value outside a Literal's choices
    (["--glamor.lstm-buckets", "x"], "--glamor.lstm-buckets"),   # not an int
    (["--no-such-flag", "1"], "--no-such-flag"),          # an unknown flag
    (["--env"], "--env"),                                 # a flag the pre-parser reads, without its value
    (["--preset"], "--preset"),
])
def test_bad_train_flags_are_refused_in_one_line_with_exit_2(tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    assert cli.main(["train", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("pixelplan train: error:") and needle in err and "--help" in err
    assert not out.exists()


def test_train_help_still_prints_tyro_help(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--help"])
    assert stop.value.code == 0
    assert "--shared.precision" in capsys.readouterr().out


def test_a_sweep_with_a_bad_train_flag_says_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--agents", "random", "--seeds", "0", "--out", str(out), "--", "--nope", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("pixelplan sweep: error:") and "--nope" in err
    assert not out.exists()
