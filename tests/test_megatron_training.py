"""RMT's flags inside Megatron-LM's own argument parser (`megatron.training`, which megatron-core
ships from 0.17 on: the Python 3.12 stack). On the 0.16 stack the module does not exist and these
tests are skipped with that reason; CI runs them on the 3.12 stack (README)."""

import argparse

import pytest

arguments = pytest.importorskip(
    "megatron.training.arguments", reason="megatron.training ships with megatron-core >= 0.17"
)

from rmt_megatron.config.flags import RMT_FLAGS, add_rmt_args, config_from_args  # noqa: E402


def _megatron_lm_parser() -> argparse.ArgumentParser:
    """Megatron-LM's parser with `add_rmt_args` as its extra_args_provider, as `parse_args`
    builds it."""
    parser = arguments.add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
    return add_rmt_args(parser)  # a clash of option strings raises argparse.ArgumentError here


def test_every_rmt_flag_is_in_megatron_lm_s_help_and_none_clashes():
    parser = _megatron_lm_parser()
    ours = parser._action_groups[-1]
    assert ours.title == "RMT"
    formatter = parser._get_formatter()
    # our group alone: megatron-core 0.19.2's own --help fails on a bare % in the help of
    # --moe-paged-stash-buffer-size-factor-cuda (docs/megatron-core-on-cpu.md)
    formatter.add_arguments(ours._group_actions)
    text = formatter.format_help()
    missing = [f.flag for f in RMT_FLAGS if f.flag not in text]
    assert missing == [] and "--rmt-preset" in text and "--rmt-method" in text
    megatron_dests = {a.dest for a in parser._actions if a not in ours._group_actions}
    assert [a.dest for a in ours._group_actions if a.dest in megatron_dests] == []


def test_a_megatron_lm_namespace_gives_the_run_s_config():
    argv = ["--rmt-preset", "tiny_cpu", "--rmt-budget-min", "7", "--rmt-no-curriculum"]
    argv += ["--lr", "0.01", "--tensor-model-parallel-size", "2", "--seed", "5"]
    config = config_from_args(_megatron_lm_parser().parse_args(argv))
    assert config.budget.minimum == 7 and not config.curriculum.enabled
    assert config.train.lr == 0.01 and config.train.seed == 5
    assert config.model.tensor_model_parallel_size == 2
    # Megatron-LM's --num-query-groups (default 1) counts only with --group-query-attention
    assert config.model.num_query_groups is None
    gqa = ["--group-query-attention", "--num-query-groups", "2"]
    assert (
        config_from_args(_megatron_lm_parser().parse_args([*argv, *gqa])).model.num_query_groups
        == 2
    )
