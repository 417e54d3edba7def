"""A (mid-trained) GPTModel back to a Hugging Face checkpoint: the inverse of `hf_import`.

Every rank gathers its tensor-parallel shards into whole tensors (vocab rows, the per-KV-group
QKV blocks, the per-rank [gate; up] blocks of linear_fc1, the column blocks of linear_proj and
linear_fc2), pipeline stages send their layers (renumbered to global layer indices) to rank 0,
and rank 0 un-fuses them into the Hugging Face names, strips Megatron's vocabulary padding and
writes `model.safetensors` next to a copy of the source `config.json` (the architecture
description; only the weights change in mid-training). Files are written under temporary names
and renamed when complete. Import followed by export reproduces the weights bitwise.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from rmt_megatron.cli import command
from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.mcore import parallel
from rmt_megatron.model_io import hf_names
from rmt_megatron.model_io.checkpoints import checkpoint_config, is_gguf


def _gather_tp(module: str, tensor: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
    """Whole tensor for replicated and column-sharded weights; per-rank list for row-sharded
    ones (vocab rows, fused QKV and FC1 blocks)."""
    if module in hf_names.LAYER_NORMS or module == "decoder.final_layernorm.weight":
        return tensor
    pieces = parallel.tensor_parallel_all_gather(tensor)
    if module in hf_names.LAYER_COLUMN_SHARDED:
        return torch.cat(pieces, dim=1)
    return pieces


def _stage_tensors(model, config: ModelConfig) -> dict[str, object]:
    """This stage's tensors by global Megatron name (TP shards gathered)."""
    first_layer = hf_names.layer_offset(config, parallel.pipeline_stage())
    tensors = {}
    for name, tensor in model.state_dict().items():
        if tensor is None or name.endswith("_extra_state"):
            continue
        layer = hf_names.split_layer_name(name)
        if layer is not None:
            name = f"decoder.layers.{first_layer + layer[0]}.{layer[1]}"
        module = name if layer is None else layer[1]
        tensors[name] = _gather_tp(module, tensor.detach().cpu())
    return tensors


def _as_ranks(value) -> list[torch.Tensor]:
    return value if isinstance(value, list) else [value]


def _to_hf(tensors: dict, config: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    head_dim = config.head_dim
    per_group = config.num_attention_heads // config.query_groups
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        layer = hf_names.split_layer_name(name)
        if layer is not None:
            out.update(
                _layer_to_hf(
                    hf_names.hf_layer_prefix(layer[0]), layer[1], value, per_group, head_dim
                )
            )
        elif name == "decoder.final_layernorm.weight":
            out[hf_names.GLOBAL_TENSORS[name]] = value
        elif name == "embedding.word_embeddings.weight" or (
            config.untie_embeddings_and_output_weights
        ):
            out[hf_names.GLOBAL_TENSORS[name]] = torch.cat(_as_ranks(value))[:vocab_size]
    return {key: tensor.contiguous() for key, tensor in out.items()}


def _layer_to_hf(
    layer: str, module: str, value, per_group: int, head_dim: int
) -> dict[str, torch.Tensor]:
    whole = {**hf_names.LAYER_NORMS, **hf_names.LAYER_COLUMN_SHARDED}
    if module in whole:
        return {f"{layer}.{whole[module]}": value}
    if module.startswith(hf_names.LAYER_QKV + "."):
        suffix = module.rsplit(".", 1)[1]
        fused = torch.cat(_as_ranks(value))
        groups = fused.reshape(-1, (per_group + 2) * head_dim, *fused.shape[1:])
        q, k, v = groups.split([per_group * head_dim, head_dim, head_dim], dim=1)
        return {
            f"{layer}.self_attn.{proj}_proj.{suffix}": part.reshape(-1, *fused.shape[1:])
            for proj, part in (("q", q), ("k", k), ("v", v))
        }
    if module == hf_names.LAYER_FC1[0]:
        halves = [piece.chunk(2) for piece in _as_ranks(value)]
        gate, up = hf_names.LAYER_FC1[1]
        return {
            f"{layer}.{gate}": torch.cat([g for g, _ in halves]),
            f"{layer}.{up}": torch.cat([u for _, u in halves]),
        }
    raise ValueError(f"no Hugging Face tensor for {layer}.{module}")


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
"""Files of a Hugging Face source checkpoint that are copied beside the exported weights."""


def _write_source_files(source: Path, directory: Path) -> None:
    """config.json and the tokenizer files of the checkpoint the run started from: copied from a
    Hugging Face directory, or written from a GGUF file's metadata and vocabulary."""
    if is_gguf(source):
        from rmt_megatron.model_io.gguf import GGUFCheckpoint, gguf_tokenizer

        (directory / "config.json").write_text(json.dumps(GGUFCheckpoint(source).config, indent=2))
        gguf_tokenizer(source).save(directory)
        return
    for name in ("config.json", *TOKENIZER_FILES):
        if (source / name).is_file():
            shutil.copy(source / name, directory / name)


def source_vocab_size(source: str | os.PathLike) -> int:
    """The unpadded vocabulary size of the checkpoint a run started from."""
    return checkpoint_config(source)["vocab_size"]


def export_hf(
    model,
    config: ModelConfig,
    vocab_size: int,
    source: str | os.PathLike,
    output: str | os.PathLike,
) -> Path | None:
    """Write `output/` (config.json, tokenizer files, model.safetensors) from every rank's
    stage; `source` is the Hugging Face directory or GGUF file the run started from.
    Collective; returns the directory on rank 0, None elsewhere."""
    from safetensors.torch import save_file

    stages = parallel.pipeline_all_gather_object(_stage_tensors(model, config))
    tensors = {k: v for stage in stages for k, v in stage.items()}
    if not parallel.is_main_rank():
        return None
    output = Path(output)
    temporary = output.with_name(output.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file(
        _to_hf(tensors, config, vocab_size),
        str(temporary / "model.safetensors"),
        metadata={"format": "pt"},
    )
    _write_source_files(Path(source), temporary)
    shutil.rmtree(output, ignore_errors=True)
    temporary.replace(output)
    return output


@command
def main(argv: list[str] | None = None) -> int:
    """`[torchrun ...] rmt-export-hf --load SAVE --hf-source SOURCE --output OUT`: the newest
    checkpoint under SAVE (a run started with --hf-checkpoint or --gguf-checkpoint SOURCE)
    written back as a Hugging Face checkpoint with SOURCE's config and tokenizer."""
    import argparse
    from dataclasses import replace

    from rmt_megatron.mcore.checkpoint import latest_step, load_checkpoint, read_state, step_dir
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    parser = argparse.ArgumentParser(description="Checkpoint -> Hugging Face checkpoint.")
    parser.add_argument("--load", required=True, help="checkpoint directory (--save of a run)")
    parser.add_argument(
        "--hf-source",
        required=True,
        help="the Hugging Face directory or GGUF file the run started from",
    )
    parser.add_argument("--output", required=True)
    parser.add_argument("--tensor-model-parallel-size", type=int, default=1)
    parser.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    args = parser.parse_args(argv)
    saved = read_state(args.load)
    step = latest_step(args.load)
    config = replace(
        ModelConfig(**saved["config"]["model"]),
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
    )
    vocab_size = source_vocab_size(args.hf_source)
    with parallel.process_group(config, seed=0):
        model = build_gpt_model(config, config.vocab_size or vocab_size)
        load_checkpoint(args.load, model, restore_rng=False)
        written = export_hf(model, config, vocab_size, args.hf_source, args.output)
    if written:
        print(f"wrote {written} from {step_dir(args.load, step)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
