"""RMT mid-training entry point: `torchrun pretrain_rmt.py [Megatron-LM flags] [--rmt-* flags]`.

With no arguments it uses the built-in `tiny_cpu` preset. For now it parses and validates the
configuration and prints the run's budget and curriculum schedule; the training loop lands with
the trainer (see README, "Status").
"""

from __future__ import annotations

import argparse
import sys

from rmt_megatron.arguments import add_megatron_args, add_rmt_args, config_from_args
from rmt_megatron.budget import budget_at
from rmt_megatron.config import ConfigError, RMTConfig
from rmt_megatron.curriculum import tier_probabilities


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Reinforcement Mid-Training on megatron-core (default: the tiny_cpu preset).",
        allow_abbrev=False)
    add_megatron_args(parser)
    add_rmt_args(parser)
    return parser


def schedule_table(config: RMTConfig, rows: int = 11) -> str:
    """B_t and p_t at evenly spaced steps of the run, as aligned text."""
    total = config.train.train_iters
    lines = [f"{'step':>6} {'t/T':>5} {'B_t':>6}  p_t (easy, medium, hard)"]
    for i in range(rows):
        step = round(i * total / (rows - 1))
        budget = budget_at(step, total, config.budget) if config.budget.enabled else "off"
        if config.curriculum.enabled:
            probs = ", ".join(f"{p:.2f}" for p in tier_probabilities(step, total,
                                                                     config.curriculum))
        else:
            probs = "uniform over eligible positions"
        lines.append(f"{step:>6} {step / total:>5.2f} {budget!s:>6}  {probs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, default_preset="tiny_cpu")
    except ConfigError as error:
        parser.error(str(error))
    preset = args.rmt_preset or "tiny_cpu"
    print(f"rmt_megatron: configuration valid (preset {preset}, method "
          f"{args.rmt_method or 'rmt'}, T={config.train.train_iters}, "
          f"G={config.rollout.group_size}, λ={config.loss.ntp_weight}).")
    print(schedule_table(config))
    print("Training is not implemented yet: this entry point only validates the configuration "
          "and prints the schedule (the trainer is the next piece of work).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
