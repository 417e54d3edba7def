"""The one table between Hugging Face (Llama/Qwen) tensor names and megatron-core GPTModel
names, read one way by the importer and the other way by the exporter.

    model.embed_tokens.weight              embedding.word_embeddings.weight    vocab rows
    lm_head.weight (tied: embed_tokens)    output_layer.weight                 vocab rows
    model.norm.weight                      decoder.final_layernorm.weight      whole
    model.layers.{offset + i}.<hf>         decoder.layers.{i}.<megatron>       per LAYER_* below

`offset` is the first global layer of this pipeline stage (`layer_offset`).
"""

from __future__ import annotations

from rmt_megatron.config.sections import ModelConfig

GLOBAL_TENSORS = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "output_layer.weight": "lm_head.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
}
"""Megatron name -> Hugging Face name of the tensors outside the layers."""

LAYER_NORMS = {
    "input_layernorm.weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
}
"""Per-layer tensors copied whole on every tensor-parallel rank."""

LAYER_COLUMN_SHARDED = {
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
"""Per-layer weights whose input columns are split over tensor-parallel ranks."""

LAYER_QKV = "self_attention.linear_qkv"
"""Fused [q heads; k; v] per KV group <- self_attn.{q,k,v}_proj (weight, and Qwen2's bias)."""

LAYER_FC1 = ("mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"))
"""Fused [gate rows; up rows] of each tensor-parallel rank <- mlp.gate_proj, mlp.up_proj."""


def layer_offset(config: ModelConfig, stage: int) -> int:
    """The global index of pipeline stage `stage`'s first layer (stages hold equal shares)."""
    return stage * (config.num_layers // config.pipeline_model_parallel_size)


def split_layer_name(name: str) -> tuple[int, str] | None:
    """`decoder.layers.{i}.<module>` -> (i, module); None for a tensor outside the layers."""
    parts = name.split(".", 3)
    if parts[:2] != ["decoder", "layers"] or len(parts) < 4:
        return None
    return int(parts[2]), parts[3]


def hf_layer_prefix(layer: int) -> str:
    """`model.layers.{layer}` (a global layer index)."""
    return f"model.layers.{layer}"
