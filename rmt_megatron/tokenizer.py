"""SentencePiece tokenizer with exact per-token bytes (what the match rewards compare).

Trained models use BPE with byte fallback, identity normalisation and no dummy prefix, so
`decode(encode(text)) == text` for any text, and digits split one per token. The reasoning-format
markers `<think>`, `</think>` and `\\boxed{` are single tokens.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

FORMAT_SYMBOLS = ("<think>", "</think>", "\\boxed{")
"""User-defined pieces every trained tokenizer has."""


class SentencePieceTokenizer:
    """A loaded `.model` file: ids <-> text, and the bytes each id stands for."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model {path} does not exist: pass the .model file "
                                    "written by `rmt-preprocess` or sentencepiece")
        self.path = path
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(path))
        except (OSError, RuntimeError) as error:
            raise ValueError(f"{path} is not a valid sentencepiece model: {error}") from None
        self._bytes = [self._piece_bytes(i) for i in range(self._sp.get_piece_size())]

    def _piece_bytes(self, token_id: int) -> bytes:
        if self._sp.is_byte(token_id):
            return bytes([int(self._sp.id_to_piece(token_id)[3:5], 16)])
        if self._sp.is_control(token_id) or self._sp.is_unknown(token_id):
            return b""
        return self._sp.id_to_piece(token_id).replace("\u2581", " ").encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(list(ids))

    def token_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes of each token (control tokens such as EOS are empty)."""
        return [self._bytes[i] for i in ids]

    def piece_id(self, piece: str) -> int:
        """The id of a piece that must exist (e.g. a `FORMAT_SYMBOLS` entry)."""
        token_id = self._sp.piece_to_id(piece)
        if self._sp.id_to_piece(token_id) != piece:
            raise KeyError(f"{piece!r} is not a piece of {self.path}")
        return token_id


def train_sentencepiece(texts: Iterable[str], output_path: str | os.PathLike,
                        vocab_size: int) -> SentencePieceTokenizer:
    """Train a BPE tokenizer on `texts` and write it to `output_path` (atomically)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
        user_defined_symbols=list(FORMAT_SYMBOLS), unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
        add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
        max_sentence_length=1 << 16)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_path.with_name(output_path.name + ".tmp")
    temporary.write_bytes(model.getvalue())
    temporary.replace(output_path)
    return SentencePieceTokenizer(output_path)
