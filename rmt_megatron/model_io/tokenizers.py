"""Tokenizers with exact per-token bytes (what the match rewards compare), behind the one
`rmt_megatron.method.tokenizer.Tokenizer` protocol: `vocab_size`, `eos_id`, `encode`, `decode`,
`token_bytes`, and `chat_template` (None when the model has none; `method.prompt` renders it).

- `SentencePieceTokenizer`: a `.model` file. Models trained here use BPE with byte fallback,
  identity normalisation and no dummy prefix, so `decode(encode(text)) == text`, and digits split
  one per token; `<think>`, `</think>` and `\\boxed{` are single tokens.
- `HFTokenizer`: a Hugging Face `tokenizer.json` (byte-level BPE as in Llama 3 / Qwen, or
  metaspace/byte-fallback vocabularies); byte-level pieces are mapped back through GPT-2's
  byte-to-character table, so a token that holds half of a UTF-8 character gives its real bytes.
  Also built from a GGUF file's embedded vocabulary (`gguf_import.gguf_tokenizer`).

`model_io.checkpoints.load_tokenizer(path)` picks the class from the path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from rmt_megatron.errors import TokenizerError
from rmt_megatron.files import atomic_write
from rmt_megatron.method.answer_format import FORMAT_SYMBOLS
from rmt_megatron.method.tokenizer import Tokenizer


class SentencePieceTokenizer:
    """A loaded `.model` file: ids <-> text, and the bytes each id stands for."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise TokenizerError(
                f"tokenizer model {path} does not exist: pass the .model file "
                "written by `rmt-preprocess` or sentencepiece"
            )
        self.path = path
        self.chat_template = None
        self.bos_text = ""
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(path))
        except (OSError, RuntimeError) as error:
            raise TokenizerError(f"{path} is not a valid sentencepiece model: {error}") from None
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


def train_sentencepiece(
    texts: Iterable[str], output_path: str | os.PathLike, vocab_size: int
) -> SentencePieceTokenizer:
    """Train a BPE tokenizer on `texts` and write it to `output_path` (atomically): byte
    fallback, digits split one per token, the answer format's pieces kept whole."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            split_digits=True,
            character_coverage=1.0,
            user_defined_symbols=list(FORMAT_SYMBOLS),
            unk_id=0,
            eos_id=1,
            bos_id=-1,
            pad_id=-1,
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            num_threads=1,
            minloglevel=2,
            max_sentence_length=1 << 16,
        )
    except RuntimeError as error:  # sentencepiece reports bad settings as RuntimeError
        reason = str(error).split("] ")[-1]
        raise TokenizerError(
            f"cannot train a {vocab_size}-token tokenizer for {output_path}: {reason}"
        ) from None
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output_path, model.getvalue())
    return SentencePieceTokenizer(output_path)


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = list(printable), 0
    for value in range(256):
        if value not in printable:
            printable.append(value)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): value for value, char in zip(printable, chars, strict=True)}


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` with its end-of-sequence id and chat template."""

    EOS_CANDIDATES = ("<|endoftext|>", "<|im_end|>", "</s>", "<|end_of_text|>", "<eos>")

    def __init__(
        self,
        tokenizer,
        eos_id: int,
        source: str | os.PathLike,
        chat_template: str | None = None,
        bos_text: str = "",
    ) -> None:
        self.path = Path(source)
        self.chat_template = chat_template
        self.bos_text = bos_text
        """What the chat template's `bos_token` renders as ("" where the model adds none)."""
        self._tokenizer = tokenizer
        decoder = tokenizer.decoder
        self._byte_level = decoder is not None and "ByteLevel" in repr(decoder)
        self._special = {
            i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special
        }
        self._bytes = [self._piece_bytes(i) for i in range(self.vocab_size)]
        self._eos = eos_id

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HFTokenizer:
        """`tokenizer.json` (a file, or a directory holding one, with its tokenizer_config.json
        for the end-of-sequence token and chat template when present)."""
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(
                f"{file} does not exist: pass a tokenizer.json or the "
                "checkpoint directory that holds one"
            )
        tokenizer = Tokenizer.from_file(str(file))
        config_path = file.parent / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        eos = config.get("eos_token")
        names = [eos["content"] if isinstance(eos, dict) else eos, *cls.EOS_CANDIDATES]
        eos_id = next(
            (tokenizer.token_to_id(n) for n in names if n and tokenizer.token_to_id(n) is not None),
            None,
        )
        if eos_id is None:
            raise TokenizerError(f"{file} names no end-of-sequence token (looked for {names})")
        template = config.get("chat_template")
        bos = config.get("bos_token") if config.get("add_bos_token", True) else None
        return cls(
            tokenizer,
            eos_id,
            file,
            template if isinstance(template, str) else None,
            (bos["content"] if isinstance(bos, dict) else bos) or "",
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and a tokenizer_config.json (end-of-sequence token, chat
        template) that Hugging Face's AutoTokenizer reads."""
        directory = Path(directory)
        self._tokenizer.save(str(directory / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": self._tokenizer.id_to_token(self._eos),
            "bos_token": self.bos_text or None,
            "add_bos_token": bool(self.bos_text),
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        atomic_write(directory / "tokenizer_config.json", json.dumps(config, indent=2))

    def _piece_bytes(self, token_id: int) -> bytes:
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self._special:
            return piece.encode("utf-8")
        if self._byte_level and all(c in _BYTE_DECODER for c in piece):
            return bytes(_BYTE_DECODER[c] for c in piece)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes of each token (special tokens give their text)."""
        return [self._bytes[i] for i in ids]


_BYTE_DECODER = _byte_level_decoder()


def fingerprint(tokenizer: Tokenizer) -> str:
    """A digest of what a tokenizer means: every id's bytes and the end-of-sequence id. Two
    tokenizers with equal fingerprints turn text into the same ids, whatever their files."""
    digest = hashlib.sha256(str(tokenizer.eos_id).encode())
    for piece in tokenizer.token_bytes(range(tokenizer.vocab_size)):
        digest.update(len(piece).to_bytes(4, "little") + piece)
    return digest.hexdigest()
