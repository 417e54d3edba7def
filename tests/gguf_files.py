"""Tiny GGUF files written offline the way llama.cpp's converter writes a Llama checkpoint:
metadata, Q/K rows permuted for interleaved RoPE, the embedding quantised to Q8_0, the MLP in F16,
and (optionally) a byte-level BPE vocabulary with a chat template."""

import json

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, RopeScalingType, TokenType
from gguf.quants import dequantize, quantize

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUANTISED = {"token_embd.weight": GGMLQuantizationType.Q8_0}
HALF = ("ffn_gate", "ffn_up", "ffn_down")


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order: per head, rotate-half rows -> interleaved pairs."""
    rows, columns = weight.shape
    return (
        weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)
    )


LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name in NAMES:
        return NAMES[hf_name]
    _, _, index, module = hf_name.split(".", 3)
    return f"blk.{index}.{LAYER_NAMES[module.rsplit('.', 1)[0]]}.weight"


def _heads(gguf_name: str, config) -> int | None:
    """Heads whose rows llama.cpp permutes in this tensor (None: not permuted)."""
    return {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(
        gguf_name.split(".")[-2]
    )


def write_gguf(path, model, tokenizer_dir=None, architecture="llama", drop=()) -> None:
    """Write `model` (a transformers LlamaForCausalLM) to `path` as llama.cpp would; then set
    the model's weights to what the file holds after dequantisation, so that `model` is the
    exact reference for the file."""
    config = model.config
    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    rope = config.rope_parameters
    if rope.get("rope_type", "default") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if tokenizer_dir is not None:
        _add_vocabulary(writer, tokenizer_dir)
    params = dict(model.named_parameters())  # a tied lm_head is listed once, as embed_tokens
    stored = {}
    for hf_name, param in params.items():
        name = _gguf_name(hf_name)
        array = param.detach().float().numpy()
        heads = _heads(name, config)
        if heads:
            array = permute_rows(array, heads)
        if name in QUANTISED:
            data = quantize(array, QUANTISED[name])
            stored[hf_name] = dequantize(data, QUANTISED[name])
        elif name.split(".")[-2] in HALF:
            data = array.astype(np.float16)
            stored[hf_name] = data.astype(np.float32)
        else:
            data = stored[hf_name] = array
        if name not in drop:
            writer.add_tensor(name, data, raw_dtype=QUANTISED.get(name))
        if heads:
            stored[hf_name] = permute_rows_back(stored[hf_name], heads)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with torch.no_grad():
        for hf_name, param in params.items():
            param.copy_(torch.from_numpy(np.ascontiguousarray(stored[hf_name])))


def permute_rows_back(weight: np.ndarray, heads: int) -> np.ndarray:
    rows, columns = weight.shape
    return (
        weight.reshape(heads, rows // heads // 2, 2, columns).swapaxes(1, 2).reshape(rows, columns)
    )


def _add_vocabulary(writer, tokenizer_dir) -> None:
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {a["id"] for a in data["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(
        [TokenType.CONTROL if i in special else TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_chat_template(CHAT_TEMPLATE)
