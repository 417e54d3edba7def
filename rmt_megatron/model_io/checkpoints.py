"""Starting weights from outside: a Hugging Face checkpoint directory or a GGUF file, one entry.

    load_tokenizer(path)                  -> the tokenizer (.model, tokenizer.json, HF dir, .gguf)
    open_checkpoint(path)                 -> (config.json dict, reader of tensors by HF name)
    checkpoint_config(path)               -> the config.json dict alone
    import_model_config(path, run)        -> the checkpoint's architecture in the run's ModelConfig
    with_imported_model(config)           -> the run's RMTConfig with that model
    load_imported_weights(model, config, path)   this rank's slices into its GPTModel stage
    load_proxy(path, run_model, tokenizer)       a difficulty proxy in the run's layout

A path ending in `.gguf` is read by `model_io.gguf`, anything else as a Hugging Face directory by
`hf_import`; both map onto the model through `hf_import.load_weights`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from rmt_megatron.config.sections import ModelConfig, RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.hf_import import (
    SafetensorsReader,
    architecture_from_hf,
    load_weights,
    read_hf_config,
)
from rmt_megatron.model_io.tokenizers import HFTokenizer, SentencePieceTokenizer


def is_gguf(path: str | os.PathLike) -> bool:
    return Path(path).suffix == ".gguf"


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A `.model` file -> SentencePieceTokenizer; a `.gguf` file -> its embedded vocabulary;
    tokenizer.json or a directory holding one -> HFTokenizer."""
    path = Path(path)
    if path.suffix == ".model":
        return SentencePieceTokenizer(path)
    if is_gguf(path):
        from rmt_megatron.model_io.gguf import gguf_tokenizer

        return gguf_tokenizer(path)
    return HFTokenizer.from_file(path)


def open_checkpoint(path: str | os.PathLike):
    """(Hugging Face config dict, tensor reader) of the checkpoint at `path`."""
    if is_gguf(path):
        from rmt_megatron.model_io.gguf import GGUFCheckpoint

        checkpoint = GGUFCheckpoint(path)
        return checkpoint.config, checkpoint
    return read_hf_config(Path(path)), SafetensorsReader(Path(path))


def checkpoint_config(path: str | os.PathLike) -> dict:
    """The Hugging Face config dict of the checkpoint at `path`, without opening its weights."""
    return open_checkpoint(path)[0] if is_gguf(path) else read_hf_config(Path(path))


def import_model_config(
    path: str | os.PathLike, run: ModelConfig | None = None, **overrides
) -> ModelConfig:
    """`run` (the run's parallel layout, dtype, vocabulary padding and sequence length) with the
    architecture of the checkpoint at `path`, then `overrides`. Without `run`: the defaults, with
    the sequence length capped at 4096 and at the checkpoint's context."""
    architecture = architecture_from_hf(checkpoint_config(path))
    if run is None:
        run = ModelConfig(
            seq_length=min(4096, architecture["max_position_embeddings"]),
            max_position_embeddings=architecture["max_position_embeddings"],
        )
    return replace(run, **architecture, **overrides)


def with_imported_model(config: RMTConfig) -> RMTConfig:
    """`config` whose model takes the architecture of --hf-checkpoint / --gguf-checkpoint (when
    the run starts from one); the run's own layout, dtype and sequence length stay."""
    source = config.data.imported_checkpoint
    if source is None:
        return config
    return replace(config, model=import_model_config(source, config.model))


def load_imported_weights(model, config: ModelConfig, path: str | os.PathLike) -> None:
    """Fill this rank's GPTModel stage from the checkpoint at `path` (sharded reads)."""
    hf_config, reader = open_checkpoint(path)
    load_weights(model, config, reader, hf_config["vocab_size"])


def _check_same_vocabulary(path: str | os.PathLike, tokenizer) -> None:
    """The proxy's own tokenizer (where it ships one) must give every id the run's bytes."""
    has_tokenizer = is_gguf(path) or (Path(path) / "tokenizer.json").is_file()
    if not has_tokenizer:
        return
    proxy = load_tokenizer(path)
    ids = range(max(proxy.vocab_size, tokenizer.vocab_size))
    if proxy.vocab_size != tokenizer.vocab_size or (
        proxy.token_bytes(ids) != tokenizer.token_bytes(ids)
    ):
        raise ConfigError(
            f"the proxy {path} has another vocabulary than the run's tokenizer "
            f"{tokenizer.path} ({proxy.vocab_size} vs {tokenizer.vocab_size} "
            "tokens): a difficulty proxy must share the tokenizer"
        )


def load_proxy(path: str | os.PathLike, run_model: ModelConfig, tokenizer):
    """The difficulty-scoring proxy at `path` as this rank's GPTModel stage, in the run's
    parallel layout and eval mode (build inside `megatron_cpu.device_mode()`)."""
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    _check_same_vocabulary(path, tokenizer)
    config = import_model_config(path, run_model)
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"the proxy {path} has {config.vocab_size} embedding rows but the "
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens"
        )
    model = build_gpt_model(config, config.vocab_size, initialize=False)
    load_imported_weights(model, config, path)
    return model.eval()
