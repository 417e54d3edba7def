"""Model provider: a Llama-style megatron-core `GPTModel` from `ModelConfig`.

RMSNorm, SwiGLU MLP, RoPE, grouped-query attention, no biases (optional QKV bias and q/k norm
for the Qwen families), no dropout. The Transformer Engine layer spec is used when TE imports and
a GPU is present, megatron-core's local spec otherwise. The vocabulary is padded as Megatron-LM
pads it: up to a multiple of `make_vocab_size_divisible_by × tensor_model_parallel_size`; the
padded rows are real output-layer rows that no label points at (rollouts mask them out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig

from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.cpu import cpu_only, uses_transformer_engine

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def padded_vocab_size(vocab_size: int, config: ModelConfig) -> int:
    """`vocab_size` rounded up to a multiple of divisible_by × TP (Megatron-LM's rule)."""
    multiple = config.make_vocab_size_divisible_by * config.tensor_model_parallel_size
    return -(-vocab_size // multiple) * multiple


def transformer_config(config: ModelConfig, initialize: bool = True) -> TransformerConfig:
    """megatron-core's `TransformerConfig` for `config`; `initialize=False` leaves the weights
    uninitialised (for a model whose every weight is loaded next)."""
    dtype = DTYPES[config.params_dtype]
    if config.sequence_parallel and cpu_only():
        raise ConfigError(
            "sequence parallelism needs Transformer Engine or apex norms, which "
            "need a GPU: drop --sequence-parallel on CPU"
        )
    return TransformerConfig(
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        ffn_hidden_size=config.ffn_hidden_size,
        num_attention_heads=config.num_attention_heads,
        num_query_groups=config.query_groups,
        kv_channels=config.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=config.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=config.add_qkv_bias,
        qk_layernorm=config.qk_layernorm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=config.tensor_model_parallel_size,
        pipeline_model_parallel_size=config.pipeline_model_parallel_size,
        sequence_parallel=config.sequence_parallel,
        recompute_granularity=config.recompute_granularity,
        recompute_method=config.recompute_method,
        recompute_num_layers=config.recompute_num_layers,
        pipeline_dtype=dtype,
        params_dtype=dtype,
        bf16=dtype is torch.bfloat16,
        fp16=dtype is torch.float16,
        use_cpu_initialization=cpu_only(),
        perform_initialization=initialize,
    )


def _layer_spec(config: ModelConfig):
    """Transformer Engine's layers on a GPU that has it, megatron-core's local layers otherwise
    (megatron's TE spec imports without TE and fails only when built)."""
    if uses_transformer_engine():
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=config.qk_layernorm)
    return get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=config.qk_layernorm)


def build_gpt_model(config: ModelConfig, vocab_size: int, initialize: bool = True) -> GPTModel:
    """This rank's stage of the model (parallel state must be initialised). `vocab_size` is the
    tokenizer's; the embedding is padded per `padded_vocab_size`. `initialize=False` skips the
    random initialisation (minutes for a 14B model on CPU) when every weight is loaded next."""
    model = GPTModel(
        config=transformer_config(config, initialize),
        transformer_layer_spec=_layer_spec(config),
        vocab_size=padded_vocab_size(vocab_size, config),
        max_sequence_length=config.max_position_embeddings,
        pre_process=parallel.is_first_stage(),
        post_process=parallel.is_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=not config.untie_embeddings_and_output_weights,
        position_embedding_type="rope",
        rotary_base=config.rotary_base,
        rope_scaling=config.use_rope_scaling,
        rope_scaling_factor=config.rope_scaling_factor,
        seq_len_interpolation_factor=config.rotary_seq_len_interpolation_factor,
    )
    if not cpu_only():
        model.cuda(torch.cuda.current_device())
    # Every parameter in the params dtype, as Megatron-LM's Float16Module makes it: the local
    # spec's torch norms are built in fp32, and megatron's fp16/bf16 optimizer saves only
    # parameters of its half-precision groups.
    return model.to(DTYPES[config.params_dtype])
