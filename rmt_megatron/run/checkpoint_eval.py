"""Evaluate any checkpoint on any held-out dataset, without a run's training flags.

    python -m rmt_megatron.evaluate --load DIR [--data-path PREFIX] [--tokenizer-model PATH]
        [--proxy-checkpoint DIR] [--prompt-budget auto|none|N] [--eval-positions N]
        [--eval-seed S] [--output FILE]

- The model's shape comes from the checkpoint's recorded config (`rmt_state.json`); the model
  is loaded at TP = PP = 1 (distributed checkpoints reshard on load).
- The dataset defaults to the built-in "test" split; the tokenizer to the one the checkpoint's
  run recorded (the built-in one for the built-in world).
- Difficulty (the entropy tiers) comes from a fixed proxy, never from the model under test, so
  every checkpoint is scored on the same positions: by default the shipped base model for the
  built-in world; for other data `--proxy-checkpoint` is required (a checkpoint of ours or a
  Hugging Face directory). The proxy's name is in the cache file's name
  (`PREFIX_entropy_<proxy>_<digest>.npy`).
- The prompt form defaults to the one the checkpoint was trained with (`prompt_budget` in its
  state: the final budget B_T, or none); `--prompt-budget` overrides it.
- The report (`run.evaluation.evaluate`) goes to `--output`, by default
  `runs/eval/<checkpoint>_iter<step>_<dataset>_<prompt>.json`; a file that exists is not
  overwritten unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR, prepare_builtin_data
from rmt_megatron.cli import command
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.mcore.rollout_engines import build_rollout_engine
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import load_tokenizer
from rmt_megatron.model_io.own_checkpoint import (
    load_fixed_model,
    own_checkpoint_state,
    prompt_budget_of,
)
from rmt_megatron.model_io.preprocess import check_tokenizer
from rmt_megatron.run.difficulty import DifficultyScorer
from rmt_megatron.run.evaluation import evaluate, held_out_positions

BUILTIN_PROXY = ASSETS / CHECKPOINT_DIR
"""The fixed difficulty proxy of the built-in world: the shipped base model."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rmt_megatron.evaluate",
        description="Held-out next-token accuracy of a checkpoint: reasoning and plain argmax, "
        "per entropy tier and per kind of position.",
        allow_abbrev=False,
    )
    parser.add_argument("--load", required=True, help="Checkpoint directory (a run's --save).")
    parser.add_argument("--ckpt-step", type=int, default=None, help="Step (default: latest).")
    parser.add_argument(
        "--data-path", default=None, help="Held-out dataset PREFIX (default: built-in test)."
    )
    parser.add_argument(
        "--tokenizer-model", default=None, help="Default: the tokenizer the run recorded."
    )
    parser.add_argument(
        "--proxy-checkpoint",
        default=None,
        help="Difficulty proxy (default: the shipped base model, built-in data only).",
    )
    parser.add_argument(
        "--prompt-budget",
        default="auto",
        help="'auto' (the checkpoint's own prompt form), 'none' (no budget clause) or a number.",
    )
    parser.add_argument("--eval-positions", type=int, default=400)
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--builtin-data-dir", default="runs/builtin_data")
    parser.add_argument("--output", default=None, help="Report JSON path.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing report.")
    return parser


def _prompt_budget(flag: str, state: dict, config: RMTConfig) -> int | None:
    if flag == "auto":
        return prompt_budget_of(state, config)
    if flag == "none":
        return None
    if not flag.isdigit() or int(flag) < 1:
        raise ConfigError(f"--prompt-budget {flag!r}: give 'auto', 'none' or a positive number")
    return int(flag)


def evaluate_checkpoint(args: argparse.Namespace) -> tuple[dict, Path]:
    """The report for `args` (see `build_parser`) and the path it belongs at."""
    load = Path(args.load)
    step, state, recorded = own_checkpoint_state(load, args.ckpt_step)
    config = replace(
        recorded,
        data=replace(recorded.data, eval_positions=args.eval_positions, eval_seed=args.eval_seed),
    )
    if args.data_path is None:
        builtin = prepare_builtin_data(args.builtin_data_dir)
        prefix, proxy = builtin.test_prefix, Path(args.proxy_checkpoint or BUILTIN_PROXY)
        tokenizer_path = args.tokenizer_model or builtin.tokenizer_model
    else:
        prefix = Path(args.data_path)
        if args.proxy_checkpoint is None:
            raise ConfigError(
                "--data-path needs --proxy-checkpoint: difficulty comes from a fixed proxy "
                "model, never from the checkpoint under test"
            )
        proxy = Path(args.proxy_checkpoint)
        tokenizer_path = (
            args.tokenizer_model
            or recorded.data.tokenizer_model
            or recorded.data.imported_checkpoint
        )
        if tokenizer_path is None:
            raise ConfigError(f"{load} records no tokenizer: give --tokenizer-model")
    tokenizer = load_tokenizer(tokenizer_path)
    budget = _prompt_budget(args.prompt_budget, state, config)
    report = evaluate_model(config, load, prefix, tokenizer, proxy, budget, step)
    report["step"] = step
    prompt = "nobudget" if budget is None else f"budget{budget}"
    output = Path(
        args.output or f"runs/eval/{load.resolve().name}_iter{step}_{prefix.name}_{prompt}.json"
    )
    return report, output


def evaluate_model(
    config: RMTConfig,
    model_path: Path,
    prefix: Path,
    tokenizer: Tokenizer,
    proxy: Path,
    budget: int | None,
    step: int | None = None,
) -> dict:
    """The evaluation report (`run.evaluation.evaluate`) of the model at `model_path` (a
    checkpoint of ours, or a Hugging Face directory / GGUF file used as it is) on the held-out
    dataset at `prefix`, at `config.data.eval_positions` positions drawn with
    `config.data.eval_seed` and tiered by the fixed `proxy`, with `budget` in the prompt
    (`step`: which step of a checkpoint of ours, default the latest), inside a process group of
    its own in the config's layout."""
    check_tokenizer(prefix, tokenizer)
    documents = documents_of(load_indexed_dataset(prefix, tokenizer.vocab_size))
    data = config.data
    with parallel.process_group(config.model, config.train.seed):
        model = load_fixed_model(model_path, config.model, tokenizer, step)
        score = DifficultyScorer(config, tokenizer, proxy).pool_scores(prefix, None)
        positions = held_out_positions(
            prefix, documents, score, tokenizer, config, data.eval_positions, data.eval_seed
        )
        engine = build_rollout_engine(model, tokenizer, config.model, config.rollout)
        report = evaluate(model, engine, tokenizer, documents, positions, config, budget, 0)
    report.update(
        checkpoint=str(model_path),
        dataset=str(prefix),
        proxy=str(proxy),
        eval_seed=data.eval_seed,
        prompt_budget=budget,
    )
    return report


def summary_lines(report: dict) -> list[str]:
    """The report as a few readable lines: per tier, per kind, and reasoning − argmax."""
    lines = [
        f"{report['positions']} positions, prompt budget {report['budget']}, mean reasoning "
        f"length {report['mean_reasoning_length']:.1f}"
    ]
    groups = [("tier", report["splits"]), ("kind", report.get("kinds", {}))]
    for label, group in groups:
        for name, row in group.items():
            difference = row.get("reasoning_minus_argmax")
            paired = (
                f", reasoning - argmax {difference['mean']:+.3f} ± {difference['se']:.3f}"
                if difference
                else ""
            )
            lines.append(
                f"  {label} {name:<9} n={row['positions']:<4} reasoning "
                f"{row['reasoning_accuracy']:.3f}  argmax {row['ntp_accuracy']:.3f}{paired}"
            )
    overall = report["reasoning_minus_argmax"]
    lines.append(f"  all: reasoning - argmax {overall['mean']:+.3f} ± {overall['se']:.3f} (SE)")
    return lines


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.eval_positions < 1:
        raise ConfigError("--eval-positions must be at least 1")
    report, output = evaluate_checkpoint(args)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} exists: give another --output, or --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, json.dumps(report, indent=1))
    print("\n".join(summary_lines(report)))
    print(f"report: {output}")
    return 0
