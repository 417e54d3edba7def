"""Command-line flags: Megatron-LM spelling, presets, overrides and error messages."""

import argparse

import pytest

from rmt_megatron.config.flags import add_megatron_args, add_rmt_args, config_from_args
from rmt_megatron.config.presets import tiny_cpu
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.run import pretrain


def _megatron_lm_like_parser() -> argparse.ArgumentParser:
    """Megatron-LM's own flags, including its GRPO ones, which ours must not clash with."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_megatron_args(parser)
    for flag in (
        "--grpo-group-size",
        "--grpo-kl-beta",
        "--grpo-clamp-eps-lower",
        "--grpo-entropy-term-weight",
        "--grpo-prompts-per-step",
    ):
        parser.add_argument(flag)
    return parser


def test_add_rmt_args_works_as_an_extra_args_provider_without_clashes():
    parser = add_rmt_args(_megatron_lm_like_parser())
    args = parser.parse_args(
        [
            "--num-layers",
            "4",
            "--rmt-group-size",
            "16",
            "--rmt-budget-decay",
            "0.3",
            "--rmt-tier-probs-start",
            "0.5",
            "0.4",
            "0.1",
            "--grpo-group-size",
            "2",
        ]
    )
    config = config_from_args(args)
    assert config.model.num_layers == 4
    assert config.rollout.group_size == 16
    assert config.budget.decay == 0.3
    assert config.curriculum.start_probs == (0.5, 0.4, 0.1)
    assert config.budget.initial == RMTConfig().budget.initial  # the method's default kept


def test_flags_not_given_keep_the_preset_values():
    args = pretrain.build_parser().parse_args(["--lr", "0.01", "--bf16", "--rmt-no-budget"])
    config = config_from_args(args, default_preset="tiny_cpu")
    expected = tiny_cpu()
    assert config.train.lr == 0.01 and config.model.params_dtype == "bfloat16"
    assert not config.budget.enabled
    assert config.model.hidden_size == expected.model.hidden_size
    assert config.rollout == expected.rollout


def test_method_and_preset_flags():
    args = pretrain.build_parser().parse_args(["--rmt-preset", "qwen3_14b", "--rmt-method", "rpt"])
    config = config_from_args(args, default_preset="tiny_cpu")
    assert config.model.num_layers == 40
    assert not config.curriculum.enabled and config.loss.ntp_weight == 0.0


def test_a_bad_flag_value_names_the_field_and_the_flag():
    args = pretrain.build_parser().parse_args(["--rmt-curriculum-transition-start", "0.9"])
    with pytest.raises(
        ConfigError,
        match=r"curriculum.transition_start=0.9.*"
        r"flag --rmt-curriculum-transition-start",
    ):
        config_from_args(args, default_preset="tiny_cpu")


def test_a_namespace_without_our_flags_gives_the_spec_defaults():
    assert config_from_args(argparse.Namespace()) == RMTConfig()


def test_a_megatron_lm_namespace_maps_precision_switches_and_norm_epsilon():
    """Megatron-LM's parser stores every switch it was not given as False (not None) and
    --norm-epsilon as layernorm_epsilon; neither may change the preset silently."""
    megatron_defaults = dict(
        bf16=False, fp16=False, qk_layernorm=False, untie_embeddings_and_output_weights=False,
        sequence_parallel=False, layernorm_epsilon=None, rmt_preset="qwen3_14b",
    )  # fmt: skip
    config = config_from_args(argparse.Namespace(**megatron_defaults))
    assert config.model.params_dtype == "bfloat16"  # the preset's, not overwritten by False
    assert config.model.qk_layernorm and config.model.untie_embeddings_and_output_weights
    given = {**megatron_defaults, "rmt_preset": "tiny_cpu", "bf16": True}
    config = config_from_args(argparse.Namespace(**{**given, "layernorm_epsilon": 1e-6}))
    assert config.model.params_dtype == "bfloat16" and config.model.norm_epsilon == 1e-6
    config = config_from_args(argparse.Namespace(**{**megatron_defaults, "rmt_preset": "tiny_cpu"}))
    assert config.model.params_dtype == "float32"


def test_schedule_table_shows_budget_and_tier_probabilities():
    config = tiny_cpu()
    table = pretrain.schedule_table(config)
    first, last = config.budget.initial, config.budget.minimum
    assert f"  0.00  {first:5d}  0.60, 0.30, 0.10" in table
    assert f"  1.00  {last:5d}  0.10, 0.30, 0.60" in table


def test_pretrain_rmt_rejects_a_bad_value_with_one_line_and_exit_status_1(capsys):
    assert pretrain.main(["--rmt-budget-min", "900"]) == 1
    err = capsys.readouterr().err
    assert "budget.minimum=900" in err and "(flag --rmt-budget-min)" in err
    assert "usage:" not in err


def test_help_shows_the_defaults_the_standalone_run_uses():
    text = pretrain.build_parser().format_help()
    assert "(default: 60)" in text  # tiny_cpu's train_iters, not the method's 1000
    assert "(default: 5e-05)" in text and "(default: 1e-06)" not in text


@pytest.mark.parametrize(("iters", "warmup"), [(2, 0), (60, 3), (140, 7), (1000, 50)])
def test_a_shorter_or_longer_run_keeps_the_preset_warm_up_share(iters, warmup):
    parse = pretrain.build_parser().parse_args
    config = config_from_args(parse(["--train-iters", str(iters)]), "tiny_cpu")
    assert config.train.lr_warmup_iters == warmup
    given = config_from_args(parse(["--train-iters", "10", "--lr-warmup-iters", "3"]), "tiny_cpu")
    assert given.train.lr_warmup_iters == 3
