"""The replication: train every method of a table for several seeds, evaluate each checkpoint on
the held-out test split under both prompt forms, and write the tables (`study.replication_report`).

    python -m rmt_megatron.replicate [--tables main ablations posttrain] [--seeds 1 2 3]
        [--train-iters 100] [--eval-positions 400] [--work-dir runs/replicate]
        [--output-dir docs/results/replication] [--threads N] [--smoke]

Arms (one trained configuration each; `ARMS`):
- main: `ntp` (plain continued pre-training, compute-matched to the RMT run of the same seed),
  `rpt` (RL without budget, curriculum or NTP term), `rmt` (everything); the untrained base is
  evaluated once.
- ablations: RMT without the budget, without the curriculum, without the NTP term.
- posttrain: the base and the main arms' checkpoints, each post-trained (`study.posttrain`: SFT
  then GRPO on question-answer problems, the same settings for all) with each seed.

Every run starts from the same shipped base model, which was warm-started on both prompt forms;
every checkpoint is evaluated with the budget clause (B_T of the preset) and without one, on the
same positions (`--eval-seed 0`, difficulty from the fixed base model). Training runs are
subprocesses (`python -m rmt_megatron.pretrain`, log in the run's directory), evaluations run in
this process (`run.checkpoint_eval`), one thing at a time with `--threads` torch threads;
finished runs and evaluations are reused, so an interrupted replication resumes where it stopped.
A finished run is reused only if it trained with the settings its arm's flags give now and the
work directory's runs started from the shipped base model as it is now (else the replication
stops and names what differs), and an evaluation only if it has the prompt asked for and is newer
than its checkpoint (else it is redone), and a post-training report only if it has the settings
asked for and is newer than its checkpoint (else it is replaced).

Compute matching of NTP: an RL step costs about 3 × its trained tokens (forward and backward)
plus its generated rollout tokens (`token_compute`); the NTP run gets as many steps of
`NTP_PROMPTS_PER_STEP` documents as bring its 3 × trained tokens to the RMT run's total.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR, prepare_builtin_data
from rmt_megatron.config.flags import config_from_args, pretrain_parser
from rmt_megatron.config.presets import get_preset
from rmt_megatron.config.sections import SECTIONS
from rmt_megatron.errors import TrainingError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.checkpoint import TRACKER, latest_step, read_state
from rmt_megatron.mcore.indexed_dataset import load_indexed_dataset
from rmt_megatron.method.budget import final_budget
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.checkpoint_eval import build_parser as build_eval_parser
from rmt_megatron.run.checkpoint_eval import evaluate_checkpoint
from rmt_megatron.run.metrics_log import read_metrics
from rmt_megatron.study.posttrain import build_parser as build_posttrain_parser
from rmt_megatron.study.posttrain import settings_from_args as posttrain_settings
from rmt_megatron.study.posttrain_report import SOURCES as POSTTRAIN_SOURCES
from rmt_megatron.study.posttrain_report import posttrain_path
from rmt_megatron.study.replication_report import eval_path, run_dir, write_report

NTP_PROMPTS_PER_STEP = 64
"""Documents per step of the compute-matched NTP run (fewer, larger steps than RL's 16)."""
WARMUP_PERCENT = 5
"""Every arm warms its learning rate up over this share of its steps, rounded down (5 of 100
steps for the RL arms; the committed tables were made so). Given explicitly, because a bare
`--train-iters` scales the preset's own warm-up, which follows the preset's run length."""
SMOKE_TRAIN_FLAGS = (
    "--rmt-prompts-per-step", "2", "--rmt-group-size", "2", "--rmt-max-response-length", "48",
)  # fmt: skip
SMOKE_POSTTRAIN_FLAGS = (
    "--sft-iters", "2", "--grpo-iters", "2", "--eval-problems", "4", "--prompts-per-step", "2",
    "--group-size", "2", "--sft-batch", "4",
)  # fmt: skip


@dataclass(frozen=True)
class Arm:
    name: str
    table: str
    flags: tuple[str, ...]


ARMS = (
    Arm("rpt", "main", ("--rmt-method", "rpt")),
    Arm("rmt", "main", ()),
    Arm("ntp", "main", ("--rmt-method", "ntp")),
    Arm("rmt_no_budget", "ablations", ("--rmt-no-budget",)),
    Arm("rmt_no_curriculum", "ablations", ("--rmt-no-curriculum",)),
    Arm("rmt_no_ntp", "ablations", ("--rmt-ntp-weight", "0")),
)
TABLES = ("main", "ablations", "posttrain")
PRESET = "tiny_cpu"
"""The preset every arm trains from (the pretrain command's default)."""
BASE = "base"
PROMPTS = ("budget", "none")


@dataclass(frozen=True)
class Settings:
    tables: tuple[str, ...]
    seeds: tuple[int, ...]
    train_iters: int
    eval_positions: int
    curve_positions: int
    work_dir: Path
    output_dir: Path
    threads: int
    train_flags: tuple[str, ...] = ()
    """Extra `python -m rmt_megatron.pretrain` flags for every arm (the smoke mode's steps)."""
    posttrain_flags: tuple[str, ...] = ()
    """Extra `python -m rmt_megatron.posttrain` flags (the smoke mode's small sizes)."""

    @property
    def final_budget(self) -> int:
        return final_budget(get_preset(PRESET).budget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rmt_megatron.replicate",
        description="Reproduce the evidence tables on the built-in world (see docs/results/).",
        allow_abbrev=False,
    )
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--train-iters", type=int, default=100)
    parser.add_argument("--eval-positions", type=int, default=400)
    parser.add_argument(
        "--curve-positions", type=int, default=100, help="Validation positions per curve point."
    )
    parser.add_argument("--work-dir", default="runs/replicate")
    parser.add_argument("--output-dir", default="docs/results/replication")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 small steps (2 positions x 2 rollouts, 48-token responses), one seed, 8 "
        "positions, into --work-dir only: checks the pipeline.",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    work_dir = Path(args.work_dir)
    if args.smoke:
        return Settings(
            tuple(args.tables),
            (args.seeds[0],),
            2,
            8,
            4,
            work_dir,
            work_dir / "tables",
            1,
            SMOKE_TRAIN_FLAGS,
            SMOKE_POSTTRAIN_FLAGS,
        )
    return Settings(
        tuple(args.tables),
        tuple(args.seeds),
        args.train_iters,
        args.eval_positions,
        args.curve_positions,
        work_dir,
        Path(args.output_dir),
        args.threads,
    )


def _run(command: list[str], settings: Settings, log: Path) -> float:
    """Run `command` (in this process's working directory, so that relative paths mean the same)
    with `settings.threads` torch threads, its output into `log`; returns the wall time. A
    failure ends the replication naming the log."""
    env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads), "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log.open("w") as stream:
        code = subprocess.call(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    if code:
        tail = log.read_text().strip().splitlines()[-3:]
        raise TrainingError(f"{' '.join(command[:3])} ... failed (exit {code}); see {log}: {tail}")
    return time.time() - started


def token_compute(metrics: list[dict]) -> float:
    """3 × trained tokens + generated rollout tokens, summed over a run's steps."""
    return sum(3 * row["loss_tokens"] + row["rollout_tokens"] for row in metrics)


def _ntp_steps(settings: Settings, rmt_metrics: list[dict]) -> int:
    """NTP steps whose 3 × trained tokens match the RMT run's `token_compute`."""
    builtin = prepare_builtin_data(settings.work_dir / "builtin_data")
    vocab_size = SentencePieceTokenizer(builtin.tokenizer_model).vocab_size
    dataset = load_indexed_dataset(builtin.train_prefix, vocab_size)  # keeps the mmap open
    tokens_per_step = NTP_PROMPTS_PER_STEP * (float(dataset.sequence_lengths.mean()) - 1)
    return max(1, math.ceil(token_compute(rmt_metrics) / (3 * tokens_per_step)))


TRAINING_FIELDS = (
    "train_iters",
    "micro_batch_size",
    "lr",
    "lr_warmup_iters",
    "weight_decay",
    "seed",
)
"""The `train` fields that change what a run learns (its paths and intervals do not)."""


def training_settings(config: dict) -> dict[str, object]:
    """What decides how a run trains, flattened to "section.field": every method and model
    field (a switched-off budget or curriculum by its switch alone) and `TRAINING_FIELDS`.
    `config` is an `RMTConfig.to_dict()`, as saved in a checkpoint's state."""
    config = json.loads(json.dumps(config))  # tuples as saved: lists
    flat: dict[str, object] = {}
    for section in (name for name in SECTIONS if name not in ("train", "data")):
        values = config[section]
        if values.get("enabled") is False:
            values = {"enabled": False}
        flat.update({f"{section}.{k}": v for k, v in values.items()})
    flat.update({f"train.{k}": config["train"][k] for k in TRAINING_FIELDS})
    return flat


def _check_reusable(directory: Path, flags: list[str]) -> None:
    """Refuse to reuse the finished run in `directory` if it trained with other settings than
    `flags` (the pretrain command's) give now, e.g. after the preset changed."""
    expected = training_settings(
        config_from_args(pretrain_parser(PRESET).parse_args(flags), PRESET).to_dict()
    )
    recorded = training_settings(read_state(directory)["config"])
    changed = [
        f"{k}: run {recorded.get(k)!r}, now {v!r}"
        for k, v in expected.items()
        if recorded.get(k) != v
    ]
    if changed:
        raise TrainingError(
            f"{directory} finished with other settings than its arm has now "
            f"({'; '.join(changed)}): give a new --work-dir, or remove that run and its "
            "evaluations to train it again"
        )


def base_digest() -> str:
    """SHA-256 over the shipped base model's files (checkpoint and tokenizer), by content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in ASSETS.rglob("*") if p.is_file() and p.name != "base.json"):
        digest.update(str(path.relative_to(ASSETS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def check_base_model(work_dir: Path) -> None:
    """Record which base model the runs under `work_dir` start from, and refuse a work directory
    whose runs started from another one (a re-made base or another world)."""
    record = work_dir / "base_model.json"
    current = {"base_sha256": base_digest()}
    if not record.is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(current, indent=1))
    elif json.loads(record.read_text()) != current:
        raise TrainingError(
            f"the runs under {work_dir} started from another base model than the shipped one "
            f"({record} differs from {ASSETS}): give a new --work-dir, or remove that one"
        )


def _newer_than(output: Path, checkpoint: Path) -> bool:
    """Whether `output` was written after `checkpoint`'s newest step was."""
    return output.stat().st_mtime >= (checkpoint / TRACKER).stat().st_mtime


def train(settings: Settings, arm: Arm, seed: int) -> Path:
    """Train `arm` with `seed` (unless a finished run is there); returns its directory."""
    directory = run_dir(settings.work_dir, arm.name, seed)
    iters = settings.train_iters
    flags = [*arm.flags, *settings.train_flags]
    if arm.name == "ntp":
        rmt = train(settings, next(a for a in ARMS if a.name == "rmt"), seed)
        iters = _ntp_steps(settings, read_metrics(rmt))
        flags += ["--rmt-prompts-per-step", str(NTP_PROMPTS_PER_STEP)]
    flags += [
        "--seed",
        str(seed),
        "--train-iters",
        str(iters),
        "--lr-warmup-iters",
        str(WARMUP_PERCENT * iters // 100),
        "--save",
        str(directory),
        "--load",
        str(directory),
        "--save-interval",
        str(max(1, iters // 2)),
        "--eval-interval",
        str(max(1, iters // 4)),
        "--eval-positions",
        str(settings.curve_positions),
        "--tensorboard-dir",
        str(directory / "tensorboard"),
        "--builtin-data-dir",
        str(settings.work_dir / "builtin_data"),
    ]
    if latest_step(directory) == iters:
        _check_reusable(directory, flags)
        return directory
    command = [sys.executable, "-m", "rmt_megatron.pretrain", *flags]
    print(f"train {arm.name} seed {seed}: {iters} steps -> {directory}", flush=True)
    seconds = _run(command, settings, directory / "train.log")
    atomic_write(directory / "wall_time.json", json.dumps({"seconds": seconds}))
    return directory


def evaluate(settings: Settings, checkpoint: Path, output: Path, prompt: str) -> None:
    """Evaluate `checkpoint` on the test split under `prompt`, in this process, unless `output`
    holds an evaluation under that prompt newer than the checkpoint."""
    asked = settings.final_budget if prompt == "budget" else None
    fresh = output.is_file() and _newer_than(output, checkpoint)
    if fresh and json.loads(output.read_text()).get("prompt_budget") == asked:
        return
    args = build_eval_parser().parse_args(
        [
            "--load",
            str(checkpoint),
            "--prompt-budget",
            "none" if asked is None else str(asked),
            "--eval-positions",
            str(settings.eval_positions),
            "--builtin-data-dir",
            str(settings.work_dir / "builtin_data"),
        ]
    )
    print(f"evaluate {output.stem}", flush=True)
    report, _ = evaluate_checkpoint(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, json.dumps(report, indent=1))


def post_train(settings: Settings, source: str, seed: int) -> None:
    """Post-train the checkpoint of `source` (the base or a main arm) with `seed`, as a
    `python -m rmt_megatron.posttrain` subprocess, unless its report holds the same settings and
    is newer than the checkpoint (a stale report is replaced)."""
    output = posttrain_path(settings.work_dir, source, seed)
    if source == BASE:
        checkpoint = ASSETS / CHECKPOINT_DIR
    else:
        checkpoint = train(settings, next(a for a in ARMS if a.name == source), seed)
    flags = ["--load", str(checkpoint), "--output", str(output), "--seed", str(seed)]
    flags += settings.posttrain_flags
    wanted = asdict(posttrain_settings(build_posttrain_parser().parse_args(flags)))
    fresh = output.is_file() and _newer_than(output, checkpoint)
    if fresh and json.loads(output.read_text()).get("settings") == wanted:
        return
    output.unlink(missing_ok=True)  # posttrain never overwrites a report
    command = [sys.executable, "-m", "rmt_megatron.posttrain", *flags]
    print(f"post-train {source} seed {seed} -> {output}", flush=True)
    _run(command, settings, output.with_suffix(".log"))


def replicate(settings: Settings) -> None:
    """Every run and evaluation the chosen tables need, then the tables."""
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)  # the evaluations' share, as the runs'
    check_base_model(settings.work_dir)

    for prompt in PROMPTS:
        evaluate(
            settings,
            ASSETS / CHECKPOINT_DIR,
            eval_path(settings.work_dir, BASE, None, prompt),
            prompt,
        )
    for table in settings.tables:
        if table == "posttrain":
            for seed in settings.seeds:
                for _, source in POSTTRAIN_SOURCES:
                    post_train(settings, source, seed)
            continue
        for seed in settings.seeds:
            for arm in (a for a in ARMS if a.table == table):
                directory = train(settings, arm, seed)
                for prompt in PROMPTS:
                    evaluate(
                        settings,
                        directory,
                        eval_path(settings.work_dir, arm.name, seed, prompt),
                        prompt,
                    )
    write_report(settings, ARMS, BASE, PROMPTS)
