"""GGUF (llama.cpp) checkpoints of the llama family into a megatron-core GPTModel, and their
embedded vocabularies as tokenizers.

`GGUFCheckpoint(path)` presents a GGUF file the way `hf_import` reads a Hugging Face checkpoint:
`.config` is the metadata as a `config.json` dict, and `read(name, rows, columns)` returns a
tensor by its Hugging Face name, dequantised to fp32 (`gguf.quants.dequantize`) from the
memory-mapped file, only the requested rows (quantisation blocks run along a row, so a row slice
is read without the rest). GGUF names, after dequantisation in PyTorch's `[out, in]` layout:

    token_embd [V, H] / output [V, H]        -> model.embed_tokens / lm_head (no output: tied)
    blk.i.attn_norm, blk.i.ffn_norm          -> input_layernorm, post_attention_layernorm
    output_norm                              -> model.norm
    blk.i.attn_q [nq·d, H], attn_k [nkv·d, H] -> q_proj, k_proj with each head's rows un-permuted
    blk.i.attn_v, attn_output                -> v_proj, o_proj
    blk.i.ffn_gate, ffn_up, ffn_down         -> mlp.gate_proj, up_proj, down_proj

llama.cpp's converter reorders each Q/K head's d rows for its interleaved RoPE: the Hugging Face
row `half·d/2 + j` (rotate-half layout) is stored at row `2j + half`. Reading undoes it per head,
`w.view(heads, d/2, 2, H).transpose(1, 2)`, which is why Q/K row slices must cover whole heads.

`gguf_tokenizer(path)` rebuilds the byte-level BPE vocabulary (`tokenizer.ggml.model == "gpt2"`)
with `tokenizers`: tokens, merges, the pre-tokenizer named by `tokenizer.ggml.pre`, control
tokens (type 3) as special tokens, the end-of-sequence id and the chat template.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rmt_megatron.errors import CheckpointError, ConfigError
from rmt_megatron.model_io.tokenizers import HFTokenizer

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_PRE_TOKENIZERS = ("smollm", "gpt2", "default")
CONTROL_TOKEN = 3
"""`tokenizer.ggml.token_type` of special (control) tokens."""

_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "lm_head.weight": "output.weight",
    "model.norm.weight": "output_norm.weight",
}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_name(hf_name: str) -> str | None:
    if hf_name in _NAMES:
        return _NAMES[hf_name]
    parts = hf_name.split(".", 3)
    if parts[:2] == ["model", "layers"] and len(parts) == 4 and parts[3] in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES[parts[3]]}"
    return None


def unpermute_rows(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Undo llama.cpp's per-head Q/K row order on `weight: [heads·head_dim, H]`."""
    heads = weight.shape[0] // head_dim
    return weight.reshape(heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(weight.shape)


class GGUFCheckpoint:
    """One GGUF file: its metadata as a Hugging Face config and its tensors by Hugging Face
    name (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path} does not exist: pass a .gguf file")
        try:
            self._reader = GGUFReader(self.path)
        except (ValueError, OSError) as error:
            raise CheckpointError(f"{self.path} is not a readable GGUF file ({error})") from error
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.read_names: set[str] = set()
        """The tensors `read` has been asked for (GGUF names)."""
        self.architecture = self.field("general.architecture")
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"GGUF architecture {self.architecture!r} is not supported: the "
                f"importer reads {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if "rope_freqs.weight" in self._tensors:
            raise ConfigError(
                f"{self.path} carries rope_freqs (Llama 3.1-style RoPE scaling "
                "baked into a tensor), which the GGUF importer does not read: "
                "import the Hugging Face checkpoint instead"
            )
        self.config = self._hf_config()
        """The metadata as a Hugging Face LlamaForCausalLM `config.json` dict."""

    def field(self, key: str, default=None):
        """A metadata value (scalar, string or list), or `default` when absent."""
        found = self._reader.fields.get(key)
        return default if found is None else found.contents()

    def _arch(self, key: str, default=None):
        return self.field(f"{self.architecture}.{key}", default)

    def _hf_config(self) -> dict:
        hidden = self._arch("embedding_length")
        heads = self._arch("attention.head_count")
        head_dim = self._arch("attention.key_length") or (hidden and heads and hidden // heads)
        rotary = self._arch("rope.dimension_count", head_dim)
        if rotary != head_dim:
            raise ConfigError(
                f"{self.path}: RoPE on {rotary} of {head_dim} head dimensions "
                "(partial rotary) is not supported"
            )
        scaling = self._arch("rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise ConfigError(
                f"{self.path}: RoPE scaling {scaling!r} is not supported (plain or linear)"
            )
        embedding = self._tensors.get("token_embd.weight")
        if embedding is None:
            raise CheckpointError(f"{self.path} has no token_embd.weight tensor")
        config = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "num_hidden_layers": self._arch("block_count"),
            "hidden_size": hidden,
            "intermediate_size": self._arch("feed_forward_length"),
            "num_attention_heads": heads,
            "num_key_value_heads": self._arch("attention.head_count_kv", heads),
            "head_dim": head_dim,
            "max_position_embeddings": self._arch("context_length"),
            "vocab_size": int(embedding.shape[1]),
            "rms_norm_eps": self._arch("attention.layer_norm_rms_epsilon"),
            "rope_theta": self._arch("rope.freq_base", 10000.0),
            "tie_word_embeddings": "output.weight" not in self._tensors,
            "hidden_act": "silu",
        }
        if scaling == "linear":
            config["rope_scaling"] = {
                "rope_type": "linear",
                "factor": self._arch("rope.scaling.factor"),
            }
        missing = [k for k, v in config.items() if v is None]
        if missing:
            raise CheckpointError(f"{self.path} lacks the metadata for {missing}")
        return config

    def __contains__(self, name: str) -> bool:
        return _gguf_name(name) in self._tensors

    def names(self) -> list[str]:
        """Every tensor of the file, by its GGUF name."""
        return list(self._tensors)

    def read(
        self, name: str, rows: slice = slice(None), columns: slice | None = None
    ) -> torch.Tensor:
        """The tensor Hugging Face calls `name`, fp32 `[out, in]`, rows then columns sliced."""
        from gguf.quants import dequantize

        gguf_name = _gguf_name(name)
        self.read_names.add(gguf_name or name)
        if gguf_name not in self._tensors:
            raise CheckpointError(
                f"tensor {gguf_name or name!r} (for {name}) is missing from {self.path}"
            )
        tensor = self._tensors[gguf_name]
        values = torch.from_numpy(
            np.array(dequantize(tensor.data[rows], tensor.tensor_type), dtype=np.float32)
        )
        if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            head_dim = self.config["head_dim"]
            if values.shape[0] % head_dim:
                raise ValueError(f"rows {rows} of {gguf_name} do not cover whole heads")
            values = unpermute_rows(values, head_dim)
        return values if columns is None else values[:, columns]


def _pre_tokenizer(name: str | None, path: Path):
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name in (None, "gpt2", "default"):
        return byte_level
    raise ConfigError(
        f"{path}: pre-tokenizer {name!r} is not supported (supported: "
        f"{', '.join(SUPPORTED_PRE_TOKENIZERS)}); use the model's Hugging Face "
        "tokenizer.json with --tokenizer-model"
    )


def gguf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """The vocabulary embedded in a GGUF file, as an `HFTokenizer` (see module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    path = Path(path)
    checkpoint = GGUFCheckpoint(path)
    kind = checkpoint.field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConfigError(
            f"{path}: tokenizer model {kind!r} is not supported (byte-level BPE, "
            "'gpt2', is); use the model's Hugging Face tokenizer.json with "
            "--tokenizer-model"
        )
    tokens = checkpoint.field("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in checkpoint.field("tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = _pre_tokenizer(checkpoint.field("tokenizer.ggml.pre"), path)
    tokenizer.decoder = decoders.ByteLevel()
    types = checkpoint.field("tokenizer.ggml.token_type", [])
    tokenizer.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, kind in enumerate(types)
            if kind == CONTROL_TOKEN
        ]
    )
    eos = checkpoint.field("tokenizer.ggml.eos_token_id")
    if eos is None:
        raise CheckpointError(
            f"{path} names no end-of-sequence token (tokenizer.ggml.eos_token_id)"
        )
    bos = checkpoint.field("tokenizer.ggml.bos_token_id")
    add_bos = checkpoint.field("tokenizer.ggml.add_bos_token", False)
    return HFTokenizer(
        tokenizer,
        int(eos),
        path,
        checkpoint.field("tokenizer.chat_template"),
        tokens[bos] if add_bos and bos is not None else "",
    )
