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


def test_an_evaluation_is_redone_if_its_prompt_differs_or_its_checkpoint_is_newer(
    tmp_path, monkeypatch
):
    settings = Settings(("main",), (1,), 2, 8, 8, tmp_path, tmp_path / "tables", 1)
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
    settings = Settings(("posttrain",), (1,), 2, 8, 8, tmp_path, tmp_path / "tables", 1)
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
