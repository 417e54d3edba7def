"""Hugging Face checkpoints (Llama, Qwen2, Qwen3) into a megatron-core GPTModel, loaded sharded.

`architecture_from_hf(config)` maps a `config.json` dict to `ModelConfig`'s architecture fields
(RMSNorm ε, SwiGLU, GQA and head size, RoPE θ and scaling, Qwen2's QKV bias, Qwen3's per-head q/k
norms, tied or untied embeddings). `load_weights(model, config, reader, vocab_size)` fills this
rank's `GPTModel` stage from a reader of tensors by Hugging Face name (`SafetensorsReader` reads the
`*.safetensors` files, one file or an index; `gguf_import.GGUFCheckpoint` a GGUF file) asking
only for the rows and columns this rank holds, so no rank ever holds the whole model.
`model_import` is the entry point that picks the reader. The mapping:

    embed_tokens / lm_head [V, H]      -> vocab rows of this TP rank (padded rows zero)
    q/k/v_proj [(nq|nkv)·d, H]         -> linear_qkv, Megatron's layout grouped per KV head:
                                          for each of this rank's groups [q heads; k; v]
    q/k/v_proj bias (Qwen2)            -> linear_qkv.bias, same layout
    o_proj [H, nq·d]                   -> linear_proj, this rank's columns
    gate_proj, up_proj [F, H]          -> linear_fc1 = [gate rows; up rows] of this rank
    down_proj [H, F]                   -> linear_fc2, this rank's columns
    norms, q_norm/k_norm               -> copied whole
    model.layers.{offset + i}          -> decoder.layers.{i} of this pipeline stage

Shapes are checked against the model's parameters: config and weights that disagree, a missing
shard file or tensor, and an unsupported architecture are errors that say which.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.errors import CheckpointError, ConfigError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.gpt_model import padded_vocab_size
from rmt_megatron.model_io import hf_names

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist: pass a Hugging Face checkpoint "
            "directory (config.json + *.safetensors) or a .gguf file"
        )
    return json.loads(path.read_text())


def _rope_fields(rope: dict) -> dict:
    """ModelConfig's RoPE scaling fields for a Hugging Face `rope_scaling` dict (all three, so
    that nothing of the run's own RoPE settings survives an import)."""
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    plain = {
        "use_rope_scaling": False,
        "rope_scaling_factor": ModelConfig.rope_scaling_factor,
        "rotary_seq_len_interpolation_factor": None,
    }
    if rope_type == "default":
        return plain
    if rope_type == "linear":
        return {**plain, "rotary_seq_len_interpolation_factor": float(rope["factor"])}
    if rope_type == "llama3":
        fixed = {
            "low_freq_factor": 1,
            "high_freq_factor": 4,
            "original_max_position_embeddings": 8192,
        }
        other = {k: rope.get(k) for k, v in fixed.items() if rope.get(k, v) != v}
        if other:
            raise ConfigError(
                f"llama3 RoPE scaling with {other} is not supported: megatron-core "
                f"implements it with {fixed}"
            )
        return {**plain, "use_rope_scaling": True, "rope_scaling_factor": float(rope["factor"])}
    raise ConfigError(
        f"RoPE scaling {rope_type!r} is not supported: use a checkpoint with "
        "plain, 'linear' or 'llama3' RoPE"
    )


SUPPORTED_FEATURES = (
    "RMSNorm, SwiGLU MLP without biases, RoPE (plain, linear or llama3 scaling), full causal "
    "attention with grouped queries, Qwen2's q/k/v biases, Qwen3's q/k norms, tied or untied "
    "embeddings"
)


def _refuse_unsupported(architecture: str, hf: dict) -> None:
    """A checkpoint feature the model cannot reproduce is an error that names it: importing it
    anyway would give other logits without a word."""
    unsupported = []
    # Qwen2 always has q/k/v biases (read as add_qkv_bias) and no o_proj bias
    if hf.get("attention_bias") and architecture != "Qwen2ForCausalLM":
        unsupported.append("attention_bias=True (biases on q/k/v/o)")
    if hf.get("mlp_bias"):
        unsupported.append("mlp_bias=True")
    if hf.get("use_sliding_window") and hf.get("sliding_window") is not None:
        unsupported.append(f"use_sliding_window=True (window {hf['sliding_window']})")
    if architecture == "LlamaForCausalLM" and hf.get("sliding_window") is not None:
        unsupported.append(f"sliding_window={hf['sliding_window']}")
    if unsupported:
        raise ConfigError(
            f"{architecture} with {', '.join(unsupported)} is not supported: the model has "
            f"{SUPPORTED_FEATURES}"
        )


def architecture_from_hf(hf: dict) -> dict:
    """Every architecture field of `ModelConfig` for a Hugging Face `config.json` given as a dict
    (the layout, dtype, vocabulary padding and sequence length are the run's, not the
    checkpoint's)."""
    architecture = (hf.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"architecture {architecture!r} is not supported: the importer reads "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(
            f"hidden_act={hf['hidden_act']!r}: only SwiGLU (silu) MLPs map to this model"
        )
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    _refuse_unsupported(architecture, hf)
    heads = hf["num_attention_heads"]
    fields = dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads", heads),
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        max_position_embeddings=hf["max_position_embeddings"],
        vocab_size=hf["vocab_size"],
        norm_epsilon=hf.get("rms_norm_eps", 1e-6),
        rotary_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000))),
        qk_layernorm=architecture == "Qwen3ForCausalLM",
        add_qkv_bias=architecture == "Qwen2ForCausalLM",
        untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False),
        **_rope_fields(rope),
    )
    return fields


class SafetensorsReader:
    """Lazy, sliced reads of tensors by name across a checkpoint's safetensors files."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (directory / "model.safetensors").is_file():
            weight_map = None
        else:
            raise CheckpointError(
                f"{directory} has neither model.safetensors nor model.safetensors.index.json"
            )
        files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        self._handles = {}
        for name in files:
            if not (directory / name).is_file():
                raise CheckpointError(f"shard {directory / name} named by the index is missing")
            self._handles[name] = safe_open(str(directory / name), framework="pt")
        # a safetensors handle is no dict: its keys() is the way to list its tensors
        single = self._handles["model.safetensors"] if weight_map is None else None
        self._where = weight_map or {key: "model.safetensors" for key in single.keys()}  # noqa: SIM118

        self.read_names: set[str] = set()
        """The tensors `read` has been asked for."""

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        """Every tensor of the checkpoint."""
        return list(self._where)

    def read(self, name: str, rows: slice = slice(None), columns: slice | None = None):
        self.read_names.add(name)
        if name not in self._where:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        part = self._handles[self._where[name]].get_slice(name)
        return part[rows] if columns is None else part[rows, columns]


def _rank_range(total: int, rank: int, ranks: int) -> slice:
    size = total // ranks
    return slice(rank * size, (rank + 1) * size)


def _fused_qkv(
    reader: SafetensorsReader, prefix: str, suffix: str, config: ModelConfig, tp_rank: int
) -> torch.Tensor:
    """This rank's linear_qkv weight (suffix "weight") or bias ("bias"), grouped per KV head."""
    head_dim = config.head_dim
    groups = config.query_groups
    per_group = config.num_attention_heads // groups
    local = _rank_range(groups, tp_rank, config.tensor_model_parallel_size)
    parts = []
    for group in range(local.start, local.stop):
        q_rows = slice(group * per_group * head_dim, (group + 1) * per_group * head_dim)
        kv_rows = slice(group * head_dim, (group + 1) * head_dim)
        parts += [
            reader.read(f"{prefix}.q_proj.{suffix}", q_rows),
            reader.read(f"{prefix}.k_proj.{suffix}", kv_rows),
            reader.read(f"{prefix}.v_proj.{suffix}", kv_rows),
        ]
    return torch.cat(parts)


def _vocab_rows(
    reader: SafetensorsReader, name: str, config: ModelConfig, tp_rank: int, vocab_size: int
) -> torch.Tensor:
    padded = padded_vocab_size(vocab_size, config)
    rows = _rank_range(padded, tp_rank, config.tensor_model_parallel_size)
    real = reader.read(name, slice(rows.start, min(rows.stop, vocab_size)))
    out = torch.zeros(rows.stop - rows.start, config.hidden_size, dtype=real.dtype)
    out[: real.shape[0]] = real
    return out


def _hf_tensor(
    name: str,
    reader: SafetensorsReader,
    config: ModelConfig,
    tp_rank: int,
    first_layer: int,
    vocab_size: int,
) -> torch.Tensor:
    tp = config.tensor_model_parallel_size
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        tied = not config.untie_embeddings_and_output_weights
        source = hf_names.GLOBAL_TENSORS["embedding.word_embeddings.weight" if tied else name]
        return _vocab_rows(reader, source, config, tp_rank, vocab_size)
    if name in hf_names.GLOBAL_TENSORS:
        return reader.read(hf_names.GLOBAL_TENSORS[name])
    layer = hf_names.split_layer_name(name)
    if layer is None:
        raise CheckpointError(f"no Hugging Face tensor maps to {name!r}")
    prefix, module = hf_names.hf_layer_prefix(first_layer + layer[0]), layer[1]
    if module in hf_names.LAYER_NORMS:
        return reader.read(f"{prefix}.{hf_names.LAYER_NORMS[module]}")
    if module.startswith(hf_names.LAYER_QKV + "."):
        return _fused_qkv(reader, f"{prefix}.self_attn", module.rsplit(".", 1)[1], config, tp_rank)
    if module in hf_names.LAYER_COLUMN_SHARDED:
        width = (
            config.num_attention_heads * config.head_dim
            if module.startswith("self_attention")
            else config.ffn_hidden_size
        )
        return reader.read(
            f"{prefix}.{hf_names.LAYER_COLUMN_SHARDED[module]}",
            slice(None),
            _rank_range(width, tp_rank, tp),
        )
    if module == hf_names.LAYER_FC1[0]:
        rows = _rank_range(config.ffn_hidden_size, tp_rank, tp)
        return torch.cat([reader.read(f"{prefix}.{hf}", rows) for hf in hf_names.LAYER_FC1[1]])
    raise CheckpointError(f"no Hugging Face tensor maps to {name!r}")


@torch.no_grad()
def load_weights(model, config: ModelConfig, reader, vocab_size: int) -> None:
    """Fill this rank's GPTModel stage from `reader` (`name in reader`, `reader.read(name, rows,
    columns)` by Hugging Face tensor name), one parameter at a time so that only one tensor is
    ever held besides the model."""
    tp_rank = parallel.tensor_parallel_rank()
    first_layer = hf_names.layer_offset(config, parallel.pipeline_stage())
    for name, current in model.state_dict(keep_vars=True).items():
        if current is None or name.endswith("_extra_state"):
            continue
        value = _hf_tensor(name, reader, config, tp_rank, first_layer, vocab_size)
        if value.shape != current.shape:
            raise CheckpointError(
                f"{name}: the checkpoint gives shape {tuple(value.shape)} but the model built "
                f"from the config expects {tuple(current.shape)}: the checkpoint's config and "
                "its weights disagree"
            )
        current.copy_(value)
    _refuse_unread_tensors(reader, config)


def _refuse_unread_tensors(reader, config: ModelConfig) -> None:
    """A checkpoint tensor that no rank read has no place in the model (a bias, an extra norm):
    importing without it would give other logits, so it is an error (collective)."""
    read = set().union(*parallel.all_gather_object(reader.read_names))
    tied = not config.untie_embeddings_and_output_weights
    unread = sorted(
        name
        for name in reader.names()
        if name not in read
        and not name.endswith("rotary_emb.inv_freq")  # a buffer RoPE recomputes
        and not (tied and name in ("lm_head.weight", "output.weight"))  # a copy of the embedding
    )
    if unread:
        listed = ", ".join(unread[:6]) + (f" and {len(unread) - 6} more" if len(unread) > 6 else "")
        raise CheckpointError(
            f"the checkpoint holds tensors the model has no place for ({listed}): it has features "
            f"this importer does not implement (it reads {SUPPORTED_FEATURES})"
        )
