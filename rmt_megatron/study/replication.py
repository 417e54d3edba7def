"""The replication: train every arm of a table for several seeds, evaluate each checkpoint on
the held-out test split under both prompt forms, and write the tables (`study.replication_report`).
What is trained, evaluated and compared is declared once in `study.design`.

    python -m rmt_megatron.replicate [--tables main ablations posttrain] [--seeds 1 2 3]
        [--train-iters 100] [--eval-positions 400] [--work-dir runs/replicate]
        [--output-dir docs/results/replication] [--threads N] [--smoke]

    python -m rmt_megatron.replicate --hf-checkpoint DIR (or --gguf-checkpoint FILE)
        --train-data-path PREFIX --valid-data-path PREFIX --test-data-path PREFIX
        [--tokenizer-model PATH] [--tables main ablations] [...] [pretrain flags ...]

The first form runs on the built-in world (its shipped base model and corpus); the second on
your model and your data (indexed datasets from `rmt-preprocess`): "does RMT help on my model and
my data?". Any other flag is a pretrain flag given to every arm's run (e.g. `--rmt-budget-initial
256 --seq-length 2048`); `--print-train-flags ARM` prints the flags an arm's run gets and stops.

Arms (one trained configuration each; `design.ARMS`):
- main: `ntp` (plain continued pre-training, compute-matched to the RMT run of the same seed),
  `rpt` (RL without budget, curriculum or NTP term), `rmt` (everything); the untrained base is
  evaluated once.
- ablations: RMT without the budget, without the curriculum, without the NTP term.
- posttrain (built-in world only): the base and the main arms' checkpoints, each post-trained
  (`study.posttrain`: SFT then GRPO on question-answer problems, the same settings for all) with
  each seed.

Every run starts from the same base model (the built-in one was warm-started on both prompt
forms); every checkpoint is evaluated with the budget clause (B_T of the arms' config) and without
one, on the same positions (`--eval-seed 0`, difficulty from the fixed base model). Training runs
are subprocesses (`python -m rmt_megatron.pretrain`, log in the run's directory), evaluations run
in this process (`run.checkpoint_eval`), one thing at a time with `--threads` torch threads;
finished runs and evaluations are reused, so an interrupted replication resumes where it stopped.
A finished run is reused only if it trained with the settings its arm's flags give now and the
work directory's runs started from the same base model and data as now (else the replication
stops and names what differs), an evaluation only if it has the prompt asked for and is newer
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR, prepare_builtin_data
from rmt_megatron.cli import command
from rmt_megatron.config.flags import config_from_args, pretrain_parser
from rmt_megatron.config.sections import SECTIONS, TRAINING_FIELDS, RMTConfig
from rmt_megatron.errors import ConfigError, TrainingError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.checkpoint import TRACKER, latest_step, read_state
from rmt_megatron.mcore.indexed_dataset import load_indexed_dataset
from rmt_megatron.method.budget import final_budget
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import is_gguf, load_tokenizer, with_imported_model
from rmt_megatron.run.checkpoint_eval import build_parser as build_eval_parser
from rmt_megatron.run.checkpoint_eval import evaluate_checkpoint, evaluate_model
from rmt_megatron.run.metrics_log import read_metrics
from rmt_megatron.study.design import (
    ARMS,
    BASE,
    NTP_ARM,
    POSTTRAIN,
    POSTTRAIN_SOURCES,
    PROMPTS,
    RMT_ARM,
    TABLES,
    Arm,
    arm,
)
from rmt_megatron.study.posttrain import build_parser as build_posttrain_parser
from rmt_megatron.study.posttrain import settings_from_args as posttrain_settings
from rmt_megatron.study.posttrain_report import posttrain_path
from rmt_megatron.study.replication_report import eval_path, run_dir, write_report

PRESET = "tiny_cpu"
"""The preset every arm trains from (the pretrain command's default); pretrain flags given to the
replication change it for every arm."""
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


@dataclass(frozen=True, kw_only=True)
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
    """Extra `python -m rmt_megatron.pretrain` flags for every arm (the smoke mode's steps, a
    user's own)."""
    posttrain_flags: tuple[str, ...] = ()
    """Extra `python -m rmt_megatron.posttrain` flags (the smoke mode's small sizes)."""
    base_checkpoint: Path | None = None
    """The user's base model (a Hugging Face directory or a .gguf file); None: the built-in
    world's shipped base model and corpus."""
    train_data_path: Path | None = None
    valid_data_path: Path | None = None
    test_data_path: Path | None = None
    tokenizer_model: Path | None = None
    """The tokenizer of the user's data (default: the base model's own)."""

    @property
    def builtin(self) -> bool:
        return self.base_checkpoint is None

    @property
    def builtin_data_dir(self) -> Path:
        return self.work_dir / "builtin_data"

    def world_flags(self) -> list[str]:
        """The pretrain flags that name the model and the data every arm trains on."""
        if self.builtin:
            return ["--builtin-data-dir", str(self.builtin_data_dir)]
        base = str(self.base_checkpoint)
        flags = ["--gguf-checkpoint" if is_gguf(base) else "--hf-checkpoint", base]
        flags += ["--train-data-path", str(self.train_data_path)]
        flags += ["--valid-data-path", str(self.valid_data_path)]
        if self.tokenizer_model is not None:
            flags += ["--tokenizer-model", str(self.tokenizer_model)]
        return flags

    def arm_config(self, flags: list[str] | tuple[str, ...] = ()) -> RMTConfig:
        """The config the pretrain command makes of the common flags and `flags`."""
        return pretrain_config([*self.train_flags, *flags, *self.world_flags()])

    @property
    def final_budget(self) -> int:
        """B_T of the arms' config: the budget in the "budget" prompt."""
        return final_budget(self.arm_config().budget)


def pretrain_config(flags: list[str]) -> RMTConfig:
    """The config `python -m rmt_megatron.pretrain FLAGS` trains with (the model of an imported
    checkpoint included)."""
    return with_imported_model(config_from_args(pretrain_parser(PRESET).parse_args(flags), PRESET))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rmt_megatron.replicate",
        description="Train and evaluate RMT, RPT, compute-matched NTP and the ablations, and "
        "write the evidence tables: on the built-in world (see docs/results/), or on your model "
        "and data (--hf-checkpoint/--gguf-checkpoint and the three data paths). Other flags are "
        "pretrain flags for every arm.",
        allow_abbrev=False,
    )
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=None)
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
    world = parser.add_argument_group("your model and data (default: the built-in world)")
    base = world.add_mutually_exclusive_group()
    base.add_argument("--hf-checkpoint", default=None, help="Base model: a Hugging Face dir.")
    base.add_argument("--gguf-checkpoint", default=None, help="Base model: a .gguf file.")
    for split in ("train", "valid", "test"):
        world.add_argument(f"--{split}-data-path", default=None, help="Indexed dataset PREFIX.")
    world.add_argument("--tokenizer-model", default=None, help="Default: the base model's.")
    parser.add_argument(
        "--print-train-flags",
        metavar="ARM",
        choices=[a.name for a in ARMS],
        default=None,
        help="Print the pretrain flags the run of ARM with the first --seeds gets, and stop.",
    )
    parser.add_argument(
        "--print-final-budget",
        action="store_true",
        help="Print B_T, the budget of the 'budget' prompt, and stop.",
    )
    return parser


def settings_from_args(args: argparse.Namespace, pretrain_flags: list[str] = ()) -> Settings:
    """The settings `build_parser`'s `args` and the remaining (pretrain) flags give."""
    work_dir = Path(args.work_dir)
    base = args.hf_checkpoint or args.gguf_checkpoint
    paths = {s: getattr(args, f"{s}_data_path") for s in ("train", "valid", "test")}
    if base is None and any(paths.values()):
        raise ConfigError(
            "--train/--valid/--test-data-path need the base model they are tokenized for: give "
            "--hf-checkpoint DIR or --gguf-checkpoint FILE"
        )
    if base is not None and not all(paths.values()):
        missing = ", ".join(f"--{s}-data-path" for s, p in paths.items() if p is None)
        raise ConfigError(f"a replication on your own model needs {missing} too")
    default = TABLES if base is None else tuple(t for t in TABLES if t != POSTTRAIN)
    tables = tuple(args.tables or default)
    if base is not None and POSTTRAIN in tables:
        raise ConfigError(
            "the posttrain table post-trains on the built-in world's question-answer problems: "
            "with your own model give --tables main ablations"
        )
    world = {
        "base_checkpoint": None if base is None else Path(base),
        "train_data_path": None if base is None else Path(paths["train"]),
        "valid_data_path": None if base is None else Path(paths["valid"]),
        "test_data_path": None if base is None else Path(paths["test"]),
        "tokenizer_model": Path(args.tokenizer_model) if args.tokenizer_model else None,
    }
    if args.smoke:
        return Settings(
            tables=tables,
            seeds=(args.seeds[0],),
            train_iters=2,
            eval_positions=8,
            curve_positions=4,
            work_dir=work_dir,
            output_dir=work_dir / "tables",
            threads=1,
            train_flags=(*SMOKE_TRAIN_FLAGS, *pretrain_flags),
            posttrain_flags=SMOKE_POSTTRAIN_FLAGS,
            **world,
        )
    return Settings(
        tables=tables,
        seeds=tuple(args.seeds),
        train_iters=args.train_iters,
        eval_positions=args.eval_positions,
        curve_positions=args.curve_positions,
        work_dir=work_dir,
        output_dir=Path(args.output_dir),
        threads=args.threads,
        train_flags=tuple(pretrain_flags),
        **world,
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


def _train_data(settings: Settings) -> tuple[Path, Tokenizer]:
    """(training dataset PREFIX, its tokenizer): the built-in world's, or the user's."""
    if settings.builtin:
        builtin = prepare_builtin_data(settings.builtin_data_dir)
        return builtin.train_prefix, load_tokenizer(builtin.tokenizer_model)
    assert settings.train_data_path is not None and settings.base_checkpoint is not None
    tokenizer = load_tokenizer(settings.tokenizer_model or settings.base_checkpoint)
    return settings.train_data_path, tokenizer


def _ntp_steps(settings: Settings, rmt_metrics: list[dict]) -> int:
    """NTP steps whose 3 × trained tokens match the RMT run's `token_compute`."""
    prefix, tokenizer = _train_data(settings)
    dataset = load_indexed_dataset(prefix, tokenizer.vocab_size)  # keeps the mmap open
    tokens_per_step = NTP_PROMPTS_PER_STEP * (float(dataset.sequence_lengths.mean()) - 1)
    return max(1, math.ceil(token_compute(rmt_metrics) / (3 * tokens_per_step)))


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
    `flags` (its pretrain flags) give now, e.g. after the preset changed."""
    expected = training_settings(pretrain_config(flags).to_dict())
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


DIGEST_CHUNK = 16 * 2**20
"""Bytes read at a time while hashing: a corpus or a checkpoint of many GB is never held whole."""


def _digest(files: list[Path], root: Path) -> str:
    """SHA-256 over `files` by content, each named relative to `root` (read in chunks)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(DIGEST_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _files(path: Path) -> list[Path]:
    """The files of a checkpoint directory or file, or of a dataset PREFIX (.bin and .idx)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in (path, Path(f"{path}.bin"), Path(f"{path}.idx")) if p.is_file()]


def base_digest() -> str:
    """SHA-256 over the shipped base model's files (checkpoint and tokenizer), by content."""
    files = [p for p in _files(ASSETS) if p.name != "base.json"]
    return _digest(files, ASSETS)


def world_record(settings: Settings) -> dict[str, str]:
    """What the runs of `settings` start from and train on, by content: the built-in world's
    shipped base model, or the user's base model, tokenizer and datasets."""
    if settings.builtin:
        return {"base_sha256": base_digest()}
    record = {}
    named = {
        "base": settings.base_checkpoint,
        "tokenizer": settings.tokenizer_model,
        "train_data": settings.train_data_path,
        "valid_data": settings.valid_data_path,
        "test_data": settings.test_data_path,
    }
    for name, path in named.items():
        if path is None:
            continue
        files = _files(Path(path))
        if not files:
            raise ConfigError(f"--{name.replace('_', '-')} {path}: no such file or directory")
        root = Path(path) if Path(path).is_dir() else Path(path).parent
        record[f"{name}_sha256"] = _digest(files, root)
    return record


def check_base_model(work_dir: Path, current: dict[str, str] | None = None) -> None:
    """Record what the runs under `work_dir` start from (`world_record`; default: the built-in
    world), and refuse a work directory whose runs started from another base model or data (a
    re-made base, another world, other datasets)."""
    record = work_dir / "base_model.json"
    current = current or {"base_sha256": base_digest()}
    if not record.is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(current, indent=1))
    elif json.loads(record.read_text()) != current:
        raise TrainingError(
            f"the runs under {work_dir} started from another base model or data than this "
            f"replication's ({record} differs): give a new --work-dir, or remove that one"
        )


def _newer_than(output: Path, checkpoint: Path) -> bool:
    """Whether `output` was written after `checkpoint`'s newest step was."""
    return output.stat().st_mtime >= (checkpoint / TRACKER).stat().st_mtime


def train_flags(settings: Settings, trained: Arm, seed: int) -> tuple[list[str], int]:
    """(the pretrain flags of the run of `trained` with `seed`, its steps). The NTP arm's steps
    follow the RMT run of the same seed, which is trained first if it is not there."""
    directory = run_dir(settings.work_dir, trained.name, seed)
    iters = settings.train_iters
    flags = list(trained.flags)
    if trained.name == NTP_ARM:
        rmt = train(settings, arm(RMT_ARM), seed)
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
    ]
    return [*settings.train_flags, *flags, *settings.world_flags()], iters


def train(settings: Settings, trained: Arm, seed: int) -> Path:
    """Train the arm `trained` with `seed` (unless a finished run is there); returns its
    directory."""
    directory = run_dir(settings.work_dir, trained.name, seed)
    flags, iters = train_flags(settings, trained, seed)
    if latest_step(directory) == iters:
        _check_reusable(directory, flags)
        return directory
    command = [sys.executable, "-m", "rmt_megatron.pretrain", *flags]
    print(f"train {trained.name} seed {seed}: {iters} steps -> {directory}", flush=True)
    seconds = _run(command, settings, directory / "train.log")
    atomic_write(directory / "wall_time.json", json.dumps({"seconds": seconds}))
    return directory


def evaluate(settings: Settings, checkpoint: Path, output: Path, prompt: str) -> None:
    """Evaluate `checkpoint` (a run's, or the base model) on the test split under `prompt`, in
    this process, unless `output` holds an evaluation under that prompt newer than the
    checkpoint."""
    asked = settings.final_budget if prompt == "budget" else None
    trained = (checkpoint / TRACKER).is_file()
    done = output.is_file() and json.loads(output.read_text()).get("prompt_budget") == asked
    if done and (not trained or _newer_than(output, checkpoint)):
        return
    print(f"evaluate {output.stem}", flush=True)
    if trained:
        args = build_eval_parser().parse_args(_eval_flags(settings, checkpoint, asked))
        report, _ = evaluate_checkpoint(args)
    else:  # the user's base model, evaluated with the arms' settings
        config = settings.arm_config()
        config = replace(
            config,
            model=replace(
                config.model, tensor_model_parallel_size=1, pipeline_model_parallel_size=1
            ),
            data=replace(config.data, eval_positions=settings.eval_positions, eval_seed=0),
        )
        assert settings.test_data_path is not None and settings.base_checkpoint is not None
        report = evaluate_model(
            config,
            checkpoint,
            settings.test_data_path,
            _train_data(settings)[1],
            settings.base_checkpoint,
            asked,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, json.dumps(report, indent=1))


def _eval_flags(settings: Settings, checkpoint: Path, budget: int | None) -> list[str]:
    """`python -m rmt_megatron.evaluate` flags for a run's `checkpoint` on the test split."""
    flags = [
        "--load",
        str(checkpoint),
        "--prompt-budget",
        "none" if budget is None else str(budget),
        "--eval-positions",
        str(settings.eval_positions),
        "--builtin-data-dir",
        str(settings.builtin_data_dir),
    ]
    if not settings.builtin:
        flags += ["--data-path", str(settings.test_data_path)]
        flags += ["--proxy-checkpoint", str(settings.base_checkpoint)]
        if settings.tokenizer_model is not None:
            flags += ["--tokenizer-model", str(settings.tokenizer_model)]
    return flags


def post_train(settings: Settings, source: str, seed: int) -> None:
    """Post-train the checkpoint of `source` (the base or a main arm) with `seed`, as a
    `python -m rmt_megatron.posttrain` subprocess, unless its report holds the same settings and
    is newer than the checkpoint (a stale report is replaced)."""
    output = posttrain_path(settings.work_dir, source, seed)
    checkpoint = base_model(settings) if source == BASE else train(settings, arm(source), seed)
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


def base_model(settings: Settings) -> Path:
    """The model every arm starts from: the shipped base checkpoint or the user's."""
    return ASSETS / CHECKPOINT_DIR if settings.base_checkpoint is None else settings.base_checkpoint


def replicate(settings: Settings) -> None:
    """Every run and evaluation the chosen tables need, then the tables."""
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)  # the evaluations' share, as the runs'
    check_base_model(settings.work_dir, world_record(settings))
    for prompt in PROMPTS:
        output = eval_path(settings.work_dir, BASE, None, prompt)
        evaluate(settings, base_model(settings), output, prompt)
    for table in settings.tables:
        if table == POSTTRAIN:
            for seed in settings.seeds:
                for _, source in POSTTRAIN_SOURCES:
                    post_train(settings, source, seed)
            continue
        for seed in settings.seeds:
            for trained in (a for a in ARMS if a.table == table):
                directory = train(settings, trained, seed)
                for prompt in PROMPTS:
                    output = eval_path(settings.work_dir, trained.name, seed, prompt)
                    evaluate(settings, directory, output, prompt)
    write_report(settings)


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m rmt_megatron.replicate` (module docstring)."""
    args, pretrain_flags = build_parser().parse_known_args(argv)
    _, unknown = pretrain_parser(PRESET).parse_known_args(pretrain_flags)
    if unknown:
        raise ConfigError(
            f"unrecognized flags {' '.join(unknown)}: neither a replication flag (--help) nor a "
            "pretrain flag (python -m rmt_megatron.pretrain --help)"
        )
    settings = settings_from_args(args, pretrain_flags)
    settings.arm_config()  # a mistyped pretrain flag stops here, before anything runs
    if args.print_final_budget:
        print(settings.final_budget)
        return 0
    if args.print_train_flags:
        flags, _ = train_flags(settings, arm(args.print_train_flags), settings.seeds[0])
        print(" ".join(flags))
        return 0
    replicate(settings)
    return 0
