"""Command-line flags, in Megatron-LM's spelling, and the `RMTConfig` they build.

Two groups:
- `add_rmt_args(parser)`: the RMT flags only, all prefixed `--rmt-` so that the function can be
  Megatron-LM's `extra_args_provider` without clashing with its own flags (`--grpo-*` among them).
- `add_megatron_args(parser)`: the subset of Megatron-LM's own flags (`--num-layers`, `--lr`,
  `--tensor-model-parallel-size`, ...) that `pretrain_rmt.py` honours when it runs standalone.

Every flag defaults to None ("not given"); `config_from_args` starts from a preset and overlays
the flags that were given, so a preset's values hold unless overridden. Help texts are the config
fields' docstrings.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, replace
from typing import Any

from rmt_megatron.config.presets import METHODS, PRESETS, apply_method, get_preset
from rmt_megatron.config.sections import SECTIONS, RMTConfig, field_docs
from rmt_megatron.errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """One command-line flag that sets `<section>.<field>` of `RMTConfig`."""

    flag: str
    section: str
    field: str
    const: Any = None
    """For a flag that takes no value: what it sets the field to (booleans default to True)."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def switch_value(self) -> Any:
        """For a flag that takes no value, what giving it sets; None for a flag with a value."""
        if self.const is not None:
            return self.const
        return True if typing.get_type_hints(SECTIONS[self.section])[self.field] is bool else None

    def given_value(self, args: argparse.Namespace) -> Any:
        """What this flag set in `args`, or None where it was not given. Reads our parser's
        namespace or Megatron-LM's: there a flag without a value is `store_true` and holds False
        when not given (so False counts only for a flag whose constant is False), and some flags
        keep another name (`MEGATRON_DESTS`)."""
        value = getattr(args, self.dest, None)
        if value is None and self.dest in MEGATRON_DESTS:
            value = getattr(args, MEGATRON_DESTS[self.dest], None)
        switch = self.switch_value
        if value is None or switch is None:
            return value
        return switch if value is True or value == switch else None


RMT_FLAGS = (
    Flag("--rmt-no-budget", "budget", "enabled", const=False),
    Flag("--rmt-budget-initial", "budget", "initial"),
    Flag("--rmt-budget-min", "budget", "minimum"),
    Flag("--rmt-budget-decay", "budget", "decay"),
    Flag("--rmt-budget-exponent-power", "budget", "exponent_power"),
    Flag("--rmt-match-rule", "reward", "match_rule"),
    Flag("--rmt-length-reward-weight", "reward", "length_weight"),
    Flag("--rmt-length-reward-max", "reward", "length_reward_max"),
    Flag("--rmt-no-curriculum", "curriculum", "enabled", const=False),
    Flag("--rmt-tier-thresholds", "curriculum", "tier_thresholds"),
    Flag("--rmt-tier-probs-start", "curriculum", "start_probs"),
    Flag("--rmt-tier-probs-end", "curriculum", "end_probs"),
    Flag("--rmt-curriculum-transition-start", "curriculum", "transition_start"),
    Flag("--rmt-curriculum-transition-end", "curriculum", "transition_end"),
    Flag("--rmt-min-context", "curriculum", "min_context"),
    Flag("--rmt-entropy-top-k", "curriculum", "entropy_top_k"),
    Flag("--rmt-proxy-checkpoint", "curriculum", "proxy_checkpoint"),
    Flag("--rmt-pool-documents", "curriculum", "pool_documents"),
    Flag("--rmt-ntp-weight", "loss", "ntp_weight"),
    Flag("--rmt-rl-weight", "loss", "rl_weight"),
    Flag("--rmt-kl-beta", "loss", "kl_beta"),
    Flag("--rmt-clip-eps", "loss", "clip_eps"),
    Flag("--rmt-entropy-coeff", "loss", "entropy_coeff"),
    Flag("--rmt-advantage-eps", "loss", "advantage_eps"),
    Flag("--rmt-filter-zero-variance-groups", "loss", "filter_zero_variance_groups"),
    Flag("--rmt-fused-output-layer", "loss", "fused_output_layer"),
    Flag("--rmt-pack-sequences", "loss", "pack_sequences"),
    Flag("--rmt-prompts-per-step", "rollout", "prompts_per_step"),
    Flag("--rmt-group-size", "rollout", "group_size"),
    Flag("--rmt-temperature", "rollout", "temperature"),
    Flag("--rmt-top-p", "rollout", "top_p"),
    Flag("--rmt-max-response-length", "rollout", "max_response_length"),
    Flag("--rmt-max-prompt-length", "rollout", "max_prompt_length"),
    Flag("--rmt-rollout-kv-cache-gib", "rollout", "kv_cache_gib"),
    Flag("--rmt-stop-check-interval", "rollout", "stop_check_interval"),
    Flag("--rmt-rollout-engine", "rollout", "engine"),
)
"""Flags added by `add_rmt_args`."""

MEGATRON_SPELLINGS = {
    "override_opt_param_scheduler": "--override-opt_param-scheduler",
    "use_checkpoint_opt_param_scheduler": "--use-checkpoint-opt_param-scheduler",
}
"""Megatron-LM flags whose spelling is not the field name with dashes."""
MEGATRON_DESTS = {"norm_epsilon": "layernorm_epsilon"}
"""Megatron-LM flags stored under another name in its namespace (`--norm-epsilon`)."""

MEGATRON_FLAGS = (
    *(
        Flag(MEGATRON_SPELLINGS.get(name, "--" + name.replace("_", "-")), section, name)
        for section in ("model", "train", "data")
        for name in (f.name for f in dataclasses.fields(SECTIONS[section]))
        if name != "params_dtype"
    ),
    Flag("--bf16", "model", "params_dtype", const="bfloat16"),
    Flag("--fp16", "model", "params_dtype", const="float16"),
)
"""Flags added by `add_megatron_args`: each model/train field under its Megatron-LM name."""


def _add_flag(group: argparse._ArgumentGroup, spec: Flag, defaults: RMTConfig) -> None:
    """Add one flag whose help text is the field's docstring and the value `defaults` holds."""
    section_cls = SECTIONS[spec.section]
    hint = typing.get_type_hints(section_cls)[spec.field]
    default = getattr(getattr(defaults, spec.section), spec.field)
    help_text = field_docs(section_cls)[spec.field].replace("%", "%%")  # argparse formats help
    if spec.switch_value is not None:
        const = spec.switch_value
        group.add_argument(
            spec.flag,
            dest=spec.dest,
            action="store_const",
            const=const,
            default=None,
            help=f"{help_text} (sets {spec.section}.{spec.field} to {const!r})",
        )
        return
    kwargs: dict[str, Any] = {"dest": spec.dest, "default": None}
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        kwargs.update(nargs=len(args), type=args[0], metavar=spec.field.upper())
    elif typing.get_origin(hint) is typing.Literal:
        kwargs.update(choices=args, type=str)
    else:
        kwargs["type"] = next(a for a in (*args, hint) if a in (int, float, str))
    group.add_argument(spec.flag, help=f"{help_text} (default: {default!r})", **kwargs)


def add_rmt_args(
    parser: argparse.ArgumentParser, defaults: RMTConfig | None = None
) -> argparse.ArgumentParser:
    """Add the `--rmt-*` flags; usable as Megatron-LM's `extra_args_provider`. The help shows
    the values of `defaults` (the method's defaults when None)."""
    group = parser.add_argument_group("RMT", "Reinforcement Mid-Training")
    group.add_argument(
        "--rmt-preset",
        default=None,
        choices=sorted(PRESETS),
        help="Start from this named config (default: the method's defaults, or "
        "tiny_cpu when pretrain_rmt.py runs standalone).",
    )
    group.add_argument(
        "--rmt-method",
        default=None,
        choices=METHODS,
        help="rmt (default), rpt (no budget, curriculum or NTP term), or ntp "
        "(no RL: continued pre-training).",
    )
    for spec in RMT_FLAGS:
        _add_flag(group, spec, defaults or RMTConfig())
    return parser


def add_megatron_args(
    parser: argparse.ArgumentParser, defaults: RMTConfig | None = None
) -> argparse.ArgumentParser:
    """Add the Megatron-LM flags that `pretrain_rmt.py` honours when it runs standalone (help
    as in `add_rmt_args`)."""
    group = parser.add_argument_group("Megatron", "Megatron-LM model and training flags")
    for spec in MEGATRON_FLAGS:
        _add_flag(group, spec, defaults or RMTConfig())
    return parser


def pretrain_parser(default_preset: str) -> argparse.ArgumentParser:
    """The parser of `pretrain_rmt.py`: every Megatron-LM and `--rmt-*` flag it honours, the
    help showing `default_preset`'s values (the preset a run without --rmt-preset uses)."""
    parser = argparse.ArgumentParser(
        description="Reinforcement Mid-Training on megatron-core. The defaults shown are the "
        f"{default_preset} preset's, which a run without --rmt-preset uses.",
        allow_abbrev=False,
    )
    defaults = get_preset(default_preset)
    add_megatron_args(parser, defaults)
    add_rmt_args(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace, default_preset: str | None = None) -> RMTConfig:
    """Build the run's `RMTConfig`: the preset (`--rmt-preset`, else `default_preset`, else the
    method's defaults), then `--rmt-method`, then every flag that was given. Flags missing from
    `args` (e.g. Megatron-LM owns the model flags) are skipped. A `--train-iters` without
    `--lr-warmup-iters` keeps the preset's warm-up as the same share of the run (the tiny
    preset's 3 of 60 steps become 0 of 2). Bad values raise `ConfigError`."""
    preset = getattr(args, "rmt_preset", None) or default_preset
    config = get_preset(preset) if preset else RMTConfig()
    config = apply_method(config, getattr(args, "rmt_method", None) or "rmt")
    overrides: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    given: dict[str, str] = {}
    for spec in RMT_FLAGS + MEGATRON_FLAGS:
        value = spec.given_value(args)
        if value is None:
            continue
        value = tuple(value) if isinstance(value, list) else value
        field = f"{spec.section}.{spec.field}"
        if field in given and overrides[spec.section][spec.field] != value:
            raise ConfigError(
                f"{given[field]} and {spec.flag} contradict each other (both set {field}): "
                "give one of them",
                field=field,
            )
        given[field] = spec.flag
        overrides[spec.section][spec.field] = value
    if getattr(args, "group_query_attention", None) is False:
        # a Megatron-LM namespace: without --group-query-attention every head has its own keys
        # and values, whatever --num-query-groups (default 1) holds, as Megatron-LM builds it
        overrides["model"]["num_query_groups"] = None
    train = overrides["train"]
    if "train_iters" in train and "lr_warmup_iters" not in train:
        # the preset's warm-up is a share of its own run length: keep the share
        train["lr_warmup_iters"] = (
            config.train.lr_warmup_iters * train["train_iters"] // config.train.train_iters
        )
    try:
        return replace(
            config,
            **{
                name: replace(getattr(config, name), **values)
                for name, values in overrides.items()
                if values
            },
        )
    except ConfigError as error:
        flags = [
            s.flag for s in RMT_FLAGS + MEGATRON_FLAGS if f"{s.section}.{s.field}" == error.field
        ]
        if not flags:
            raise
        raise ConfigError(f"{error} (flag {flags[0]})", field=error.field) from None


CPU_ONLY_MEGATRON_LM_FLAGS = [
    "--distributed-backend",
    "gloo",
    "--transformer-impl",
    "local",
    "--no-gradient-accumulation-fusion",
    "--no-rope-fusion",
    "--no-bias-swiglu-fusion",
    "--no-masked-softmax-fusion",
    "--no-bias-dropout-fusion",
    "--no-persist-layer-norm",
]
"""What `megatron.training` needs to run without a GPU: gloo, megatron-core's local layers, and
none of the fused kernels (Transformer Engine, apex, CUDA) it enables by default."""


def megatron_lm_argv(
    config: RMTConfig, global_batch_size: int, eval_interval: int, cpu: bool
) -> list[str]:
    """Megatron-LM flags under which `megatron.training.pretrain()` builds and trains the model
    of `config` as `pretrain_rmt.py` does: its Llama-style shape, the optimiser, a constant
    learning rate after the warm-up, per-token loss normalisation, RMT's step stream as the data
    (`--dataloader-type external`, no Megatron-LM evaluation) and the data flags `config.data`
    sets. `global_batch_size`: sequences per step over the data-parallel replicas (a multiple of
    --micro-batch-size × DP that holds an RMT step); `cpu`: add `CPU_ONLY_MEGATRON_LM_FLAGS`."""
    model, train, data = config.model, config.train, config.data
    argv = [
        *("--num-layers", str(model.num_layers), "--hidden-size", str(model.hidden_size)),
        *("--ffn-hidden-size", str(model.ffn_hidden_size)),
        *("--num-attention-heads", str(model.num_attention_heads)),
        *("--seq-length", str(model.seq_length)),
        *("--max-position-embeddings", str(model.max_position_embeddings)),
        *("--make-vocab-size-divisible-by", str(model.make_vocab_size_divisible_by)),
        *("--normalization", "RMSNorm", "--norm-epsilon", str(model.norm_epsilon)),
        *("--swiglu", "--disable-bias-linear", "--position-embedding-type", "rope"),
        *("--rotary-base", str(int(model.rotary_base))),
        *("--attention-dropout", "0", "--hidden-dropout", "0"),
        *("--tensor-model-parallel-size", str(model.tensor_model_parallel_size)),
        *("--micro-batch-size", str(train.micro_batch_size)),
        *("--global-batch-size", str(global_batch_size)),
        *("--train-iters", str(train.train_iters), "--lr", str(train.lr)),
        *("--min-lr", str(train.lr), "--lr-decay-style", "constant"),
        *("--lr-warmup-iters", str(train.lr_warmup_iters)),
        *("--weight-decay", str(train.weight_decay), "--clip-grad", str(train.clip_grad)),
        *("--adam-beta1", str(train.adam_beta1), "--adam-beta2", str(train.adam_beta2)),
        *("--adam-eps", str(train.adam_eps), "--seed", str(train.seed)),
        *("--initial-loss-scale", str(train.initial_loss_scale)),
        "--accumulate-allreduce-grads-in-fp32",
        *("--calculate-per-token-loss", "--dataloader-type", "external"),
        *("--eval-iters", "0", "--eval-interval", str(eval_interval)),
        *("--log-interval", str(train.log_interval)),
    ]
    if model.num_query_groups is not None:
        argv += ["--group-query-attention", "--num-query-groups", str(model.num_query_groups)]
    if model.kv_channels is not None:
        argv += ["--kv-channels", str(model.kv_channels)]
    argv += [
        flag
        for flag, on in (
            ("--qk-layernorm", model.qk_layernorm),
            ("--add-qkv-bias", model.add_qkv_bias),
            ("--untie-embeddings-and-output-weights", model.untie_embeddings_and_output_weights),
            ("--use-rope-scaling", model.use_rope_scaling),
            ("--bf16", model.params_dtype == "bfloat16"),
            ("--fp16", model.params_dtype == "float16"),
        )
        if on
    ]
    if model.use_rope_scaling:
        argv += ["--rope-scaling-factor", str(model.rope_scaling_factor)]
    if data.train_data_path is not None:
        argv += ["--train-data-path", data.train_data_path]
        argv += ["--valid-data-path", str(data.valid_data_path)]
    if data.tokenizer_model is not None:
        kind = (
            "SentencePieceTokenizer"
            if data.tokenizer_model.endswith(".model")
            else ("HuggingFaceTokenizer")
        )
        argv += ["--tokenizer-type", kind, "--tokenizer-model", data.tokenizer_model]
    if data.pretrained_checkpoint is not None:
        argv += ["--pretrained-checkpoint", data.pretrained_checkpoint]
    return argv + (CPU_ONLY_MEGATRON_LM_FLAGS if cpu else [])
