"""The built-in default: arithmetic-story corpus, shipped tokenizer and warm-started base model.

`prepare_builtin_data(directory)` writes the train and held-out indexed datasets of the corpus
(`rmt_megatron.builtin.corpus`, fixed seeds) with the shipped tokenizer, once: a stamp file
records the tokenizer's hash and the corpus sizes, and a mismatch rebuilds the datasets. The
shipped assets under `assets/tiny_base/` (tokenizer + base checkpoint) are reproduced by
`rmt-warmstart`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmt_megatron.builtin.corpus import (
    KINDS,
    Segment,
    arithmetic_documents,
    document_text,
    segment_at,
)
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.indexed_dataset import write_indexed_dataset
from rmt_megatron.model_io.position_kinds import write_position_kinds
from rmt_megatron.model_io.preprocess import record_tokenizer
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).resolve().parent / "assets" / "tiny_base"
TOKENIZER_FILE = "tokenizer.model"
CHECKPOINT_DIR = "checkpoint"
SPLITS = {"train": (2000, 0), "valid": (300, 1), "test": (300, 2)}
"""Documents and seed per split. Each split adds only its own operand pairs
(`corpus.pair_split`): "valid" is for choosing settings, "test" for the reported results."""


@dataclass(frozen=True)
class BuiltinData:
    tokenizer_model: Path
    train_prefix: Path
    valid_prefix: Path
    test_prefix: Path
    base_checkpoint: Path


def builtin_documents(split: str) -> list[list[Segment]]:
    """The corpus documents of `split` ("train" or "valid")."""
    count, seed = SPLITS[split]
    return arithmetic_documents(count, seed, split)


def encode_document(tokenizer: SentencePieceTokenizer, segments: list[Segment]) -> list[int]:
    """A document's token ids, ending with EOS."""
    return [*tokenizer.encode(document_text(segments)), tokenizer.eos_id]


def located_tokens(
    tokenizer: SentencePieceTokenizer, segments: list[Segment]
) -> list[tuple[str, tuple[Segment, int] | None]]:
    """Each token of the document (EOS excluded): its text and where it starts (the segment and
    the offset in it, `corpus.segment_at`)."""
    ids = encode_document(tokenizer, segments)[:-1]
    located, offset = [], 0
    for piece in tokenizer.token_bytes(ids):
        text = piece.decode("utf-8", errors="replace")
        located.append((text, segment_at(segments, offset)))
        offset += len(text)
    return located


def token_kind(text: str, where: tuple[Segment, int] | None) -> str:
    """A digit token has its number's kind ("computed" or "operand"); any other is "text"."""
    return where[0].kind if where and text.isdigit() else "text"


def token_kinds(tokenizer: SentencePieceTokenizer, segments: list[Segment]) -> list[int]:
    """The kind (index in `corpus.KINDS`) of each token of `encode_document`, EOS ("text")
    included (`token_kind`)."""
    kinds = [KINDS.index(token_kind(*token)) for token in located_tokens(tokenizer, segments)]
    return [*kinds, KINDS.index("text")]


def prepare_builtin_data(
    directory: str | os.PathLike, assets: str | os.PathLike = ASSETS
) -> BuiltinData:
    """Write (if needed) the built-in datasets under `directory`; return every built-in path."""
    directory, assets = Path(directory), Path(assets)
    tokenizer_model = assets / TOKENIZER_FILE
    tokenizer = SentencePieceTokenizer(tokenizer_model)
    stamp = {
        "tokenizer_sha256": hashlib.sha256(tokenizer_model.read_bytes()).hexdigest(),
        "splits": SPLITS,
        "corpus_sample_sha256": hashlib.sha256(
            "".join(document_text(doc) for doc in arithmetic_documents(5, 0, "train")).encode()
        ).hexdigest(),
    }
    stamp_path = directory / "builtin.json"
    prefixes = {split: directory / f"arith_{split}" for split in SPLITS}
    current = stamp_path.is_file() and json.loads(stamp_path.read_text()) == json.loads(
        json.dumps(stamp)
    )
    if not current:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("arith_*"):
            stale.unlink()
        for split, prefix in prefixes.items():
            documents = builtin_documents(split)
            write_indexed_dataset(
                prefix,
                (encode_document(tokenizer, doc) for doc in documents),
                tokenizer.vocab_size,
            )
            record_tokenizer(prefix, tokenizer)
            codes = np.concatenate([token_kinds(tokenizer, doc) for doc in documents])
            write_position_kinds(prefix, KINDS, codes)
        atomic_write(stamp_path, json.dumps(stamp, indent=1))
    return BuiltinData(
        tokenizer_model,
        prefixes["train"],
        prefixes["valid"],
        prefixes["test"],
        assets / CHECKPOINT_DIR,
    )
