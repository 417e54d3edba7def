"""Named configurations, and the switches that turn RMT into its baselines.

Presets:
- `tiny_cpu`: a seconds-scale model for tests and the built-in CPU default run.
- `qwen3_14b`: Qwen3-14B's shape with the paper's RMT settings (docs/method.md), for launch
  scripts and docs on a GPU cluster (16 × H100 in the paper).

Methods (`apply_method`): "rmt" (everything on), "rpt" (no budget, no curriculum, no NTP term:
plain reinforcement pre-training) and "ntp" (no RL: plain continued pre-training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rmt_megatron.config.sections import (
    BudgetConfig,
    CurriculumConfig,
    ModelConfig,
    RMTConfig,
    RolloutConfig,
    TrainConfig,
)
from rmt_megatron.errors import ConfigError


def tiny_cpu() -> RMTConfig:
    """A 4-layer, 128-wide model (about 1M parameters) with short rollouts, for 2 CPU cores."""
    return RMTConfig(
        budget=BudgetConfig(initial=96, minimum=40, decay=0.42),
        curriculum=CurriculumConfig(min_context=8),
        rollout=RolloutConfig(
            prompts_per_step=16, group_size=4, max_response_length=208, max_prompt_length=192
        ),
        model=ModelConfig(
            num_layers=4,
            hidden_size=128,
            ffn_hidden_size=384,
            num_attention_heads=4,
            num_query_groups=2,
            seq_length=320,
            max_position_embeddings=512,
        ),
        train=TrainConfig(
            train_iters=60,
            lr=5e-5,
            lr_warmup_iters=3,
            micro_batch_size=16,
            log_interval=10,
            save="runs/tiny_cpu/checkpoints",
            save_interval=30,
            eval_interval=30,
            tensorboard_dir="runs/tiny_cpu/tensorboard",
        ),
    )


def qwen3_14b() -> RMTConfig:
    """Qwen3-14B (40 layers, 5120 wide, GQA 40/8, qk-norm, vocab 151936) with the paper's RMT
    hyperparameters: B_0 = 800, γ = 0.2, G = 8, 128 prompts per step, lr 1e-6, λ = 0.1. Laid out
    for 8×H100 nodes at TP 8: on one node the step's rollouts run in three chunks under the
    default KV budget (docs/memory.md); stops are checked every 16 decoding steps."""
    return RMTConfig(
        model=ModelConfig(
            num_layers=40,
            hidden_size=5120,
            ffn_hidden_size=17408,
            num_attention_heads=40,
            num_query_groups=8,
            kv_channels=128,
            seq_length=4096,
            max_position_embeddings=40960,
            vocab_size=151936,
            norm_epsilon=1e-6,
            rotary_base=1000000,
            qk_layernorm=True,
            untie_embeddings_and_output_weights=True,
            params_dtype="bfloat16",
            tensor_model_parallel_size=8,
        ),
        rollout=RolloutConfig(stop_check_interval=16),
        train=TrainConfig(
            train_iters=1000, lr=1e-6, micro_batch_size=1, save_interval=100, eval_interval=100
        ),
    )


PRESETS: dict[str, Callable[[], RMTConfig]] = {"tiny_cpu": tiny_cpu, "qwen3_14b": qwen3_14b}
"""Preset name -> function building a fresh `RMTConfig`."""

METHODS = ("rmt", "rpt", "ntp")
"""What `apply_method` accepts."""


def get_preset(name: str) -> RMTConfig:
    """A fresh config for preset `name`; unknown names raise `ConfigError` listing the known."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def apply_method(config: RMTConfig, method: str) -> RMTConfig:
    """`config` switched to one of `METHODS` (a new object; "rmt" leaves it as it is)."""
    if method == "rmt":
        return config
    if method == "rpt":
        return replace(
            config,
            budget=replace(config.budget, enabled=False),
            curriculum=replace(config.curriculum, enabled=False),
            loss=replace(config.loss, ntp_weight=0.0, rl_weight=1.0),
        )
    if method == "ntp":
        return replace(
            config,
            budget=replace(config.budget, enabled=False),
            curriculum=replace(config.curriculum, enabled=False),
            loss=replace(config.loss, rl_weight=0.0, ntp_weight=config.loss.ntp_weight or 1.0),
        )
    raise ConfigError(f"method={method!r} is unknown: choose one of {METHODS}")
