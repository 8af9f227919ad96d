"""Training runs end to end: resume, determinism, run-directory contents, errors, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pixelplan import cli
from pixelplan import config as config_lib
from pixelplan import envs
from pixelplan.runs import online as online_mod
from pixelplan.runs.logging import read_metrics
from pixelplan.runs.train import IncompatibleCheckpoint, load_agent, train

from conftest import ROUND, small_run_config

TIMING = ("wall_seconds", "env_steps_per_s")


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def summary_without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


def interrupt_on_round(monkeypatch, n: int) -> None:
    """Make the n-th call of the collection round raise, as a crash mid-run would."""
    original = online_mod.OnlineRun.collect_round
    calls = []

    def collect(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(online_mod.OnlineRun, "collect_round", collect)


def assert_steps_continue(records: list[dict]) -> None:
    for kind in {r["kind"] for r in records}:
        steps = [r["step"] for r in records if r["kind"] == kind]
        assert all(a < b for a, b in zip(steps, steps[1:])), (kind, steps)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted run of the small config, seed 0: (run dir, summary)."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    summary = train(small_run_config(out))
    return out, summary


@pytest.fixture
def baseline_copy(baseline, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(baseline[0], out)
    return out


# ----------------------------------------------------------------- contents
def test_run_directory_contents(baseline):
    out, summary = baseline
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "learning_curve.png",
                 "goals_vs_achieved.png", "summary.json"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    for key in ("env", "agent", "seed", "env_steps", "wall_seconds", "success_rate", "optimal_rate"):
        assert key in on_disk, key
    assert on_disk["env"] == "gridworld" and on_disk["agent"] == "glamor" and on_disk["seed"] == 0
    assert on_disk["env_steps"] == 6 * ROUND
    assert 0.0 <= on_disk["success_rate"] <= 1.0 and 0.0 <= on_disk["optimal_rate"] <= 1.0
    assert config_lib.load(out / "config.json") == small_run_config(out)
    records = read_metrics(out)
    assert_steps_continue(records)
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3 * ROUND, 6 * ROUND]
    assert [r["step"] for r in records if r["kind"] == "train"] == [ROUND * i for i in range(1, 7)]
    assert any("loss" in r for r in records if r["kind"] == "train")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["loop"]["env_steps"] == 6 * ROUND


def test_summary_counts_training_episodes(baseline):
    out, summary = baseline
    last_train = [r for r in read_metrics(out) if r["kind"] == "train"][-1]
    assert last_train["episodes"] == 6 * 4          # 6 rounds of 4 envs
    assert summary["episodes"] == 6 * 4


# -------------------------------------------------------------- determinism
def test_same_seed_same_metrics_and_other_seed_differs(baseline, tmp_path):
    out, summary = baseline
    again = train(small_run_config(tmp_path / "again"))
    assert summary_without_timing(again) == summary_without_timing(summary)
    assert without_timing(read_metrics(tmp_path / "again")) == without_timing(read_metrics(out))

    other = tmp_path / "seed1"
    train(small_run_config(other, seed=1))
    mine, theirs = without_timing(read_metrics(out)), without_timing(read_metrics(other))
    assert [r["step"] for r in mine] == [r["step"] for r in theirs]
    assert mine != theirs
    losses = lambda rs: [r["loss"] for r in rs if "loss" in r]  # noqa: E731
    assert losses(mine) and losses(mine) != losses(theirs)


def test_env_worker_processes_give_the_same_run(baseline, tmp_path):
    """Stepping envs in worker processes changes speed, never results."""
    out, summary = baseline
    spread = train(small_run_config(tmp_path / "workers", env_workers=2))
    assert summary_without_timing(spread) == summary_without_timing(summary)
    assert without_timing(read_metrics(tmp_path / "workers")) == without_timing(read_metrics(out))


# ------------------------------------------------------------------- resume
def test_resume_after_a_crash_is_exact(baseline, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    cfg = small_run_config(out)
    # Round 4 ends at 4 rounds with a checkpoint; round 5 logs a train line; round 6 crashes.
    interrupt_on_round(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["loop"]["env_steps"] == 4 * ROUND
    before = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(before[-1])["step"] == 5 * ROUND     # logged after the checkpoint
    assert not (out / "summary.json").exists()

    monkeypatch.undo()
    summary = train(small_run_config(out))
    assert summary["env_steps"] == 6 * ROUND
    assert summary_without_timing(summary) == summary_without_timing(baseline[1])

    after = (out / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in before if json.loads(line)["step"] <= 4 * ROUND]
    assert after[:len(kept)] == kept                       # entries up to the checkpoint, verbatim
    records = read_metrics(out)
    assert_steps_continue(records)
    assert without_timing(records) == without_timing(read_metrics(baseline[0]))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["loop"]["env_steps"] == 6 * ROUND


def test_resume_is_exact_when_checkpoints_fall_between_log_lines(tmp_path, monkeypatch):
    kw = dict(steps=4 * ROUND, log_every=2 * ROUND, checkpoint_every=ROUND, min_steps_learn=0)
    straight = tmp_path / "straight"
    train(small_run_config(straight, **kw))
    out = tmp_path / "resumed"
    interrupt_on_round(monkeypatch, 4)      # checkpoint at round 3, the log line is due at round 4
    with pytest.raises(KeyboardInterrupt):
        train(small_run_config(out, **kw))
    monkeypatch.undo()
    train(small_run_config(out, **kw))
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(straight))


def test_rerunning_a_finished_run_changes_nothing_and_more_steps_extend_it(baseline, baseline_copy):
    out = baseline_copy
    before = (out / "metrics.jsonl").read_text()
    summary = train(small_run_config(out))
    assert summary_without_timing(summary) == summary_without_timing(baseline[1])
    assert (out / "metrics.jsonl").read_text() == before

    longer = train(small_run_config(out, steps=7 * ROUND))    # steps may change on resume
    assert longer["env_steps"] == 7 * ROUND
    records = read_metrics(out)
    assert_steps_continue(records)
    assert records[-1]["step"] == 7 * ROUND
    assert (out / "metrics.jsonl").read_text().startswith(before)


# ------------------------------------------------------------------- errors
def test_unknown_env_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        envs.make("nope")
    msg = str(info.value)
    assert "'nope'" in msg and "gridworld" in msg and "gridworld-fourrooms" in msg


def test_incompatible_config_names_the_differing_field(baseline_copy):
    out = baseline_copy
    saved = (out / "config.json").read_text()
    with pytest.raises(IncompatibleCheckpoint) as info:
        train(small_run_config(out, **{"shared.state_size": 16}))
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "shared.state_size" in msg and "32" in msg and "16" in msg
    assert "mix_hidden" not in msg
    assert (out / "config.json").read_text() == saved      # the run directory is left alone


def test_incompatible_checkpoint_without_config_json(baseline_copy):
    # The checkpoint's own config is checked too, when config.json is gone.
    (baseline_copy / "config.json").unlink()
    with pytest.raises(IncompatibleCheckpoint, match="seed"):
        train(small_run_config(baseline_copy, seed=5))


def test_unreadable_checkpoint_falls_back_to_the_previous_one(baseline_copy, baseline):
    prev = torch.load(baseline_copy / "checkpoint.prev.pt", weights_only=False)["loop"]["env_steps"]
    assert prev == 4 * ROUND                 # the checkpoint before the final one
    (baseline_copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="resuming from the previous checkpoint checkpoint.prev.pt"):
        summary = train(small_run_config(baseline_copy))
    assert summary_without_timing(summary) == summary_without_timing(baseline[1])
    assert without_timing(read_metrics(baseline_copy)) == without_timing(read_metrics(baseline[0]))


def test_unreadable_checkpoint_without_a_fallback_gives_advice(baseline_copy):
    (baseline_copy / "checkpoint.prev.pt").unlink()
    (baseline_copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IncompatibleCheckpoint, match="cannot read the checkpoint.*delete"):
        train(small_run_config(baseline_copy))


def test_load_agent_on_a_non_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_agent(tmp_path)
    msg = str(info.value)
    assert "config.json" in msg and "checkpoint.pt" in msg and "pixelplan train" in msg


def test_load_agent_restores_the_trained_weights(baseline):
    cfg, agent, factory, goals = load_agent(baseline[0])
    assert cfg == small_run_config(baseline[0])
    ckpt = torch.load(baseline[0] / "checkpoint.pt", weights_only=False)
    for key, value in agent.model.state_dict().items():
        assert torch.equal(value, ckpt["agent"]["model"][key]), key
    assert len(goals) > 0 and factory().unwrapped.max_episode_steps == 12


@pytest.mark.parametrize("field,value,needle", [
    ("steps", 0, "steps"),
    ("n_envs", 0, "n_envs"),
    ("glamor.gamma", 0.0, "glamor.gamma"),
    ("glamor.clip_logp", 1.0, "glamor.clip_logp"),
    ("agent", "nope", "glamor"),
])
def test_bad_config_values_are_named(tmp_path, field, value, needle):
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match=needle):
        train(small_run_config(out, **{field: value}))
    assert not (out / "checkpoint.pt").exists()


# ---------------------------------------------------------------------- CLI
def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["train", "--preset", "debug", "--out", str(out), "--steps", "200", "--no-progress",
                   "--device", "cpu", "--threads", "1", "--replay-ratio", "2"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "gridworld+debug" and summary["env_steps"] >= 200
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary

    rc = cli.main(["eval", "--run", str(out), "--trials", "2", "--episodes", "3"])
    assert rc == 0
    result = json.loads((out / "eval-trials2.json").read_text())
    assert result["trials"] == 2 and result["eval_episodes"] == 3
    assert (out / "eval-trials2.png").is_file()


@pytest.mark.parametrize("argv,needle", [
    (["train", "--env", "nope", "--no-progress"], "known envs"),
    (["train", "--preset", "nope", "--no-progress"], "unknown preset"),
    (["train", "--preset", "debug", "--steps", "0", "--no-progress"], "steps"),
    (["eval", "--run", "{tmp}"], "pixelplan train"),
    (["frobnicate"], "unknown command"),
])
def test_cli_errors_return_2(tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not Path(tmp_path / "out" / "checkpoint.pt").exists()


# ------------------------------------------------------------------- memory
def test_a_replay_too_large_for_the_machine_is_refused_before_training(tmp_path, monkeypatch):
    from pixelplan.data import replay as replay_mod
    monkeypatch.setattr(replay_mod, "available_memory", lambda: 4 * 2**30)
    cfg = small_run_config(tmp_path / "big", replay_capacity=2_000_000)   # 27x27 frames: 1.5 GiB + reserve
    with pytest.raises(replay_mod.ReplayTooLarge, match=r"--replay-capacity \d+ or less"):
        train(cfg)
    assert not (tmp_path / "big" / "checkpoint.pt").exists()
    fits = train(small_run_config(tmp_path / "fits", replay_capacity=20_000))
    assert fits["replay_gib"] == round(20_000 * (27 * 27 + 36) / 2**30, 3)   # the buffer reports its memory


def test_check_replay_fits_counts_each_frame_once():
    from pixelplan.data.replay import ReplayTooLarge, check_replay_fits
    need = check_replay_fits(1_000_000, (80, 104), available=24 * 2**30)
    assert need == 1_000_000 * (80 * 104 + 36)          # about 8.4 GB: frames once, 4 int64 + 1 float32 per slot
    with pytest.raises(ReplayTooLarge, match="needs 7.8 GiB"):
        check_replay_fits(1_000_000, (80, 104), available=8 * 2**30)


def test_random_agent_runs_without_a_replay(tmp_path):
    summary = train(small_run_config(tmp_path / "random", agent="random"))
    assert summary["updates"] == 0 and summary["agent"] == "random" and summary["replay_gib"] == 0
    last_train = [r for r in read_metrics(tmp_path / "random") if r["kind"] == "train"][-1]
    assert last_train["replay_frames"] == 0
    assert 0 <= summary["success_rate"] <= 1


# ------------------------------------------------------------------- presets
@pytest.mark.parametrize("env,expected", [
    ("gridworld", "gridworld"), ("gridworld-maze9", "gridworld"), ("examples.slider:make_env", "gridworld"),
    ("my-registered-env", "gridworld"), ("dmc:cartpole-balance", "paper"), ("atari:pong", "paper"),
])
def test_auto_preset_gives_the_paper_preset_to_the_paper_suites_only(env, expected):
    cfg = config_lib.preset("auto", env)
    assert cfg.preset == expected
    assert (cfg.min_steps_learn, cfg.glamor.self_goal_prob) == ((50_000, 0.0) if expected == "paper" else (1_000, 0.1))


def test_a_run_that_cannot_learn_says_so(tmp_path):
    cfg = small_run_config(tmp_path / "run", min_steps_learn=10 * ROUND, steps=2 * ROUND)
    with pytest.warns(UserWarning) as caught:
        summary = train(cfg)
    messages = " | ".join(str(w.message) for w in caught)
    assert "learning starts after min_steps_learn" in messages and "made no update" in messages
    assert summary["updates"] == 0
