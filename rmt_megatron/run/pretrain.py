"""The standalone RMT mid-training command: Megatron-LM flags and `--rmt-*` flags -> config ->
`run.trainer.run_training`, with the schedule printed first and the held-out accuracy and
reasoning length, before and after, printed last.

    torchrun pretrain_rmt.py [flags]          (the repository's entry script)
    torchrun -m rmt_megatron.pretrain [flags]  (the same, from an install)

With no arguments it runs the built-in CPU default: the `tiny_cpu` preset on the built-in
arithmetic corpus, starting from the shipped warm-started base model, writing checkpoints,
TensorBoard events and eval JSON under `runs/tiny_cpu/`.
"""

from __future__ import annotations

import argparse

from rmt_megatron.cli import command
from rmt_megatron.config.flags import config_from_args, pretrain_parser
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.mcore.cpu import backends_line, cpu_only, set_cpu_threads
from rmt_megatron.mcore.parallel import is_main_rank
from rmt_megatron.method.budget import budget_at
from rmt_megatron.method.curriculum import tier_probabilities
from rmt_megatron.run.trainer import check_runnable, run_training

DEFAULT_PRESET = "tiny_cpu"
"""What `python pretrain_rmt.py` runs without --rmt-preset: the built-in CPU default."""


def build_parser() -> argparse.ArgumentParser:
    return pretrain_parser(DEFAULT_PRESET)


def schedule_table(config: RMTConfig, rows: int = 11) -> str:
    """B_t and p_t at evenly spaced steps of the run, as aligned text."""
    total = config.train.train_iters
    lines = [f"{'step':>6} {'t/T':>5} {'B_t':>6}  p_t (easy, medium, hard)"]
    for step in sorted({round(i * total / (rows - 1)) for i in range(rows)}):
        budget = budget_at(step, total, config.budget) if config.budget.enabled else "off"
        if config.curriculum.enabled:
            probs = ", ".join(
                f"{p:.2f}" for p in tier_probabilities(step, total, config.curriculum)
            )
        else:
            probs = "uniform over eligible positions"
        lines.append(f"{step:>6} {step / total:>5.2f} {budget!s:>6}  {probs}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args, default_preset=DEFAULT_PRESET)
    check_runnable(config)  # a setting that cannot run is refused before the banner
    if cpu_only():
        set_cpu_threads()
    if is_main_rank():
        print(backends_line(), flush=True)
        print(
            f"rmt_megatron: preset {args.rmt_preset or DEFAULT_PRESET}, method "
            f"{args.rmt_method or 'rmt'}, T={config.train.train_iters}, "
            f"G={config.rollout.group_size}, λ={config.loss.ntp_weight}",
            flush=True,
        )
        print(schedule_table(config), flush=True)
    result = run_training(config)
    evaluations = result["evaluations"]
    if is_main_rank() and len(evaluations) > 1:
        first, final = evaluations[0], evaluations[-1]
        print(
            f"done: held-out reasoning accuracy {first['average']['reasoning_accuracy']:.3f}"
            f" -> {final['average']['reasoning_accuracy']:.3f}, mean reasoning length "
            f"{first['mean_reasoning_length']:.1f} -> {final['mean_reasoning_length']:.1f}",
            flush=True,
        )
    return 0
