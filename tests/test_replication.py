"""The evidence pipeline: the checkpoint evaluation command, paired statistics, and the
replication command end to end in its 2-step smoke mode."""

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import arithmetic_datasets, tiny_hugging_face_model

from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR
from rmt_megatron.config.flags import config_from_args, pretrain_parser
from rmt_megatron.config.presets import tiny_cpu
from rmt_megatron.errors import TrainingError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.checkpoint import STATE_FILE, TRACKER, set_latest, step_dir
from rmt_megatron.method.budget import budget_at
from rmt_megatron.method.tallies import paired_difference
from rmt_megatron.model_io.own_checkpoint import prompt_budget_of
from rmt_megatron.run.checkpoint_eval import main as evaluate_main
from rmt_megatron.study import replication
from rmt_megatron.study.posttrain import PostTrainSettings
from rmt_megatron.study.posttrain_report import posttrain_path
from rmt_megatron.study.replication import PRESET, Settings, token_compute
from rmt_megatron.study.replication_report import paired

ROOT = Path(__file__).resolve().parents[1]


def test_paired_difference_is_the_mean_difference_with_its_standard_error():
    result = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    assert result["mean"] == pytest.approx(0.5)
    assert result["se"] == pytest.approx(math.sqrt(1 / 3 / 4))
    assert result["n"] == 4
    assert math.isnan(paired_difference([], [])["mean"])
    assert math.isnan(paired_difference([1], [0])["se"])


def test_paired_comparison_averages_seeds_position_by_position():
    def report(values):
        return {"outcomes": [{"kind": "computed", "reasoning_accuracy": v} for v in values]}

    first = [report([1, 1, 0]), report([1, 0, 0])]
    second = [report([0, 1, 0])]
    mean, se, n = paired(first, second, ("reasoning_accuracy", "reasoning_accuracy"))
    differences = [1.0, -0.5, 0.0]
    assert n == 3 and mean == pytest.approx(sum(differences) / 3)
    assert se == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in differences) / 2 / 3))


def test_compute_counts_trained_tokens_thrice_and_generated_tokens_once():
    metrics = [{"loss_tokens": 100, "rollout_tokens": 40}, {"loss_tokens": 10, "rollout_tokens": 0}]
    assert token_compute(metrics) == 3 * 110 + 40


def _finished_run(directory: Path, config: dict) -> Path:
    """A run directory whose newest step (2) records `config`, as a trainer's save does."""
    step_dir(directory, 2).mkdir(parents=True)
    atomic_write(step_dir(directory, 2) / STATE_FILE, json.dumps({"step": 2, "config": config}))
    set_latest(directory, 2)
    return directory


def test_a_finished_run_is_reused_only_with_the_settings_its_arm_has_now(tmp_path):
    flags = ["--seed", "1", "--train-iters", "2", "--save", "a", "--eval-positions", "8"]
    config = config_from_args(pretrain_parser(PRESET).parse_args(flags), PRESET).to_dict()
    same = _finished_run(tmp_path / "same", config)
    replication._check_reusable(same, [*flags[:4], "--save", "b"])  # paths may differ
    stale = json.loads(json.dumps(config))
    stale["budget"]["minimum"] -= 8
    stale["train"]["lr"] *= 2
    run = _finished_run(tmp_path / "stale", stale)
    final = config["budget"]["minimum"]
    with pytest.raises(
        TrainingError, match=rf"budget.minimum: run {final - 8}, now {final}.*train.lr"
    ):
        replication._check_reusable(run, flags)
    # a switched-off budget's other fields do not matter (RPT after a change of B_T)
    rpt = ["--rmt-method", "rpt", *flags]
    off = config_from_args(pretrain_parser(PRESET).parse_args(rpt), PRESET).to_dict()
    off["budget"]["minimum"] -= 8
    replication._check_reusable(_finished_run(tmp_path / "rpt", off), rpt)


def test_a_work_directory_is_refused_if_its_runs_started_from_another_base(tmp_path, monkeypatch):
    replication.check_base_model(tmp_path / "work")  # a new work directory records the base
    replication.check_base_model(tmp_path / "work")  # the same base: accepted
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "tokenizer.model").write_bytes(b"another world")
    monkeypatch.setattr(replication, "ASSETS", assets)
    with pytest.raises(TrainingError, match="started from another base model"):
        replication.check_base_model(tmp_path / "work")


def _small_settings(work_dir: Path, table: str) -> Settings:
    """Settings of a one-seed, two-step replication of `table` in `work_dir`."""
    return Settings(
        tables=(table,),
        seeds=(1,),
        train_iters=2,
        eval_positions=8,
        curve_positions=8,
        work_dir=work_dir,
        output_dir=work_dir / "tables",
        threads=1,
    )


def test_an_evaluation_is_redone_if_its_prompt_differs_or_its_checkpoint_is_newer(
    tmp_path, monkeypatch
):
    settings = _small_settings(tmp_path, "main")
    checkpoint = tmp_path / "run"
    checkpoint.mkdir()
    (checkpoint / TRACKER).write_text("2")
    output = tmp_path / "eval.json"
    redone = []
    monkeypatch.setattr(
        replication, "evaluate_checkpoint", lambda args: redone.append(1) or ({}, None)
    )
    output.write_text(json.dumps({"prompt_budget": settings.final_budget}))
    replication.evaluate(settings, checkpoint, output, "budget")
    assert not redone  # the same prompt, newer than the checkpoint: reused
    replication.evaluate(settings, checkpoint, output, "none")
    assert len(redone) == 1  # another prompt
    output.write_text(json.dumps({"prompt_budget": None}))
    (checkpoint / TRACKER).touch()
    os.utime(output, (0, 0))
    replication.evaluate(settings, checkpoint, output, "none")
    assert len(redone) == 2  # older than the checkpoint


def test_a_post_training_report_is_replaced_if_its_settings_differ(tmp_path, monkeypatch):
    settings = _small_settings(tmp_path, "posttrain")
    output = posttrain_path(tmp_path, "base", 1)
    output.parent.mkdir(parents=True)
    commands = []
    monkeypatch.setattr(replication, "_run", lambda command, *_: commands.append(command))
    current = asdict(PostTrainSettings())
    output.write_text(json.dumps({"settings": current}))
    replication.post_train(settings, "base", 1)
    assert not commands and output.is_file()  # the same settings, newer than the base: reused
    output.write_text(json.dumps({"settings": {**current, "sft_iters": 60}}))
    replication.post_train(settings, "base", 1)
    assert len(commands) == 1 and not output.exists()  # stale: removed for the new report
    assert commands[0][commands[0].index("--seed") + 1] == "1"


def test_a_checkpoint_is_evaluated_with_the_prompt_it_was_trained_with():
    config = tiny_cpu()
    assert prompt_budget_of({"prompt_budget": None}, config) is None
    assert prompt_budget_of({"prompt_budget": 17}, config) == 17
    final = budget_at(config.train.train_iters, config.train.train_iters, config.budget)
    assert prompt_budget_of({}, config) == final


def test_evaluate_refuses_foreign_data_without_a_fixed_proxy(tmp_path, capsys):
    code = evaluate_main(
        ["--load", str(ASSETS / CHECKPOINT_DIR), "--data-path", str(tmp_path / "x")]
    )
    assert code == 1
    assert "needs --proxy-checkpoint" in capsys.readouterr().err


def _replicate_smoke(work: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rmt_megatron.replicate",
            "--smoke",
            "--tables",
            "main",
            "posttrain",
            "--work-dir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_replicate_smoke_runs_every_main_arm_and_post_training_and_writes_the_tables(tmp_path):
    work = tmp_path / "work"
    completed = _replicate_smoke(work, timeout=900)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    tables = (work / "tables" / "tables.md").read_text()
    assert "## Main table" in tables and "RMT − RPT, budget prompt" in tables
    with (work / "tables" / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    arms = {row["arm"] for row in rows}
    assert {"base", "ntp", "rpt", "rmt"} <= arms
    steps = {r["arm"]: float(r["value"]) for r in rows if r["measure"] == "steps"}
    assert steps["rmt"] == steps["rpt"] == 2 and steps["ntp"] >= 1
    report = json.loads((work / "evals" / "rmt_seed1_budget.json").read_text())
    final = budget_at(2, 2, tiny_cpu().budget)
    assert report["prompt_budget"] == final and len(report["outcomes"]) == 8
    assert set(report["kinds"]) <= {"computed", "operand", "text"}
    assert "## Post-training" in tables and "| rmt − ntp | after grpo |" in tables
    for source in ("base", "ntp", "rpt", "rmt"):
        posttrained = json.loads((work / "posttrain" / f"{source}_seed1.json").read_text())
        assert len(posttrained["after_grpo"]["outcomes"]) == 4
        assert len(posttrained["grpo_steps"]) == 2 and len(posttrained["sft_loss"]) == 2
    measures = {(r["arm"], r["measure"]) for r in rows}
    assert ("rmt", "posttrain/after_grpo") in measures and ("base", "posttrain/before") in measures
    # a finished replication is reused, not retrained
    again = _replicate_smoke(work, timeout=300)
    assert again.returncode == 0
    assert "train " not in again.stdout and "post-train " not in again.stdout


BYO_PRETRAIN_FLAGS = (
    "--micro-batch-size 4 --rmt-max-prompt-length 400 --rmt-min-context 4 "
    "--rmt-tier-thresholds 0.0 0.1 0.2"
).split()
"""Pretrain flags a user of a random-weight 290-token model gives every arm (forwarded)."""


def _own_world(directory: Path) -> list[str]:
    """A tiny Hugging Face model and train/valid/test datasets made for it, as a user has them;
    the replication flags that name them."""
    tiny_hugging_face_model(directory)
    arithmetic_datasets(directory, directory, {"train": 30, "valid": 31, "test": 32})
    flags = ["--hf-checkpoint", str(directory)]
    for split in ("train", "valid", "test"):
        flags += [f"--{split}-data-path", str(directory / split)]
    return flags


def test_replicate_runs_on_your_own_model_and_data(tmp_path):
    """The bring-your-own-model replication, smoke size: every main arm trained from the
    Hugging Face checkpoint on the user's data, the base evaluated as it is, the main table
    written with no column for position kinds the data does not have."""
    (tmp_path / "model").mkdir()
    world = _own_world(tmp_path / "model")
    work = tmp_path / "work"
    argv = ["--smoke", "--tables", "main", "--work-dir", str(work), *world, *BYO_PRETRAIN_FLAGS]
    completed = subprocess.run(
        [sys.executable, "-m", "rmt_megatron.replicate", *argv],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    tables = (work / "tables" / "tables.md").read_text()
    assert "## Main table" in tables and "| RMT − RPT, budget prompt | all |" in tables
    assert "| method | prompt | all | easy | medium | hard | length |" in tables
    assert f"base model {tmp_path / 'model'}" in tables
    base = json.loads((work / "evals" / "base_budget.json").read_text())
    assert base["checkpoint"] == str(tmp_path / "model") and len(base["outcomes"]) == 8
    assert (work / "runs" / "rmt_seed1" / TRACKER).read_text().strip() == "2"
    assert json.loads((work / "base_model.json").read_text()).keys() == {
        "base_sha256",
        "train_data_sha256",
        "valid_data_sha256",
        "test_data_sha256",
    }


def test_own_model_replication_refuses_the_posttrain_table_and_missing_data(tmp_path, capsys):
    from rmt_megatron.study.replication import main

    model = ["--hf-checkpoint", str(tmp_path)]
    assert main([*model, "--tables", "posttrain", "--work-dir", str(tmp_path / "w")]) == 1
    assert "needs --train-data-path, --valid-data-path, --test-data-path" in capsys.readouterr().err
    data = [f"--{s}-data-path={tmp_path / s}" for s in ("train", "valid", "test")]
    assert main([*model, *data, "--tables", "posttrain"]) == 1
    assert "with your own model give --tables main ablations" in capsys.readouterr().err
    assert main(["--train-data-path", "x"]) == 1
    assert "need the base model" in capsys.readouterr().err
    assert main(["--print-final-budget", "--rmt-bogus", "1"]) == 1
    assert "unrecognized flags --rmt-bogus 1" in capsys.readouterr().err


def test_an_arm_s_flags_come_from_the_design(capsys):
    from rmt_megatron.study.design import arm
    from rmt_megatron.study.replication import main

    assert main(["--print-train-flags", "rpt", "--seeds", "4", "--rmt-budget-min", "7"]) == 0
    flags = capsys.readouterr().out.split()
    assert flags[: len(arm("rpt").flags) + 2] == ["--rmt-budget-min", "7", *arm("rpt").flags]
    assert flags[flags.index("--seed") + 1] == "4"
    assert flags[flags.index("--save") + 1].endswith("rpt_seed4")


def test_the_design_names_only_arms_it_trains_and_prompts_it_evaluates():
    from rmt_megatron.study.design import ARMS, BASE, PROMPTS, TRAINED_TABLES

    names = {a.name for a in ARMS} | {BASE}
    for table in TRAINED_TABLES:
        sides = [(r.arm, r.prompt, r.mode) for r in table.rows]
        sides += [(s.arm, s.prompt, s.mode) for c in table.comparisons for s in (c.first, c.second)]
        sides += [(arm, prompt, "reasoning") for arm, prompt in table.bars.entries]
        for arm, prompt, mode in sides:
            assert arm in names and prompt in PROMPTS and mode in ("reasoning", "argmax")
        trained = {a.name for a in ARMS if a.table == table.name}
        assert trained <= {r.arm for r in table.rows}  # every arm of a table has a row
