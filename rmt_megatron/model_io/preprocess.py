"""Turn text or JSONL into a Megatron indexed dataset (flags after Megatron-LM's
`tools/preprocess_data.py`).

    python -m rmt_megatron.preprocess --input corpus.jsonl --json-keys text \\
        --output-prefix data/corpus --tokenizer-model my.model
    python -m rmt_megatron.preprocess --input corpus.txt --output-prefix data/corpus \\
        --train-tokenizer 32000          # trains data/corpus.model on the input first

Input: `.jsonl` (one JSON object per line; the `--json-keys` field is a document) or plain text
(documents separated by blank lines). Each document becomes one sequence, ending with EOS unless
`--no-append-eod`. Output: PREFIX.bin / PREFIX.idx, written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from rmt_megatron.cli import command
from rmt_megatron.errors import DatasetError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.indexed_dataset import write_indexed_dataset
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import load_tokenizer
from rmt_megatron.model_io.tokenizers import fingerprint, train_sentencepiece

TOKENIZER_RECORD = ".tokenizer.json"
"""Suffix of the file beside PREFIX.bin/.idx that names the tokenizer the dataset was built with."""


def record_tokenizer(prefix: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Write `PREFIX.tokenizer.json`: the tokenizer's fingerprint, size and file."""
    record = {
        "fingerprint": fingerprint(tokenizer),
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": str(tokenizer.path),
    }
    atomic_write(str(prefix) + TOKENIZER_RECORD, json.dumps(record, indent=1))


def check_tokenizer(prefix: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Refuse a dataset whose record names another tokenizer (a dataset without a record, e.g.
    built by Megatron-LM's tools, is taken on trust: its ids are only checked against the
    vocabulary size)."""
    path = Path(str(prefix) + TOKENIZER_RECORD)
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
        recorded = record["fingerprint"]
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is unreadable ({error}): rebuild the dataset") from None
    if recorded != fingerprint(tokenizer):
        raise DatasetError(
            f"{prefix} was built with another tokenizer ({record.get('tokenizer')}, "
            f"{record.get('vocab_size')} tokens) than this run's {tokenizer.path} "
            f"({tokenizer.vocab_size} tokens): rebuild it with `rmt-preprocess "
            f"--tokenizer-model {tokenizer.path}` or pass the tokenizer it was built with"
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; bytes that are not UTF-8 are an error naming
    the line."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(
                    f"{path}:{number} is not UTF-8 ({error.reason} at byte {error.start}): "
                    "re-encode the file as UTF-8"
                ) from None


def _json_record(path: Path, number: int, line: str, json_key: str) -> str:
    """The `json_key` text of one JSON-lines record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}:{number} is not valid JSON ({error}); JSON input is one object per line"
        ) from None
    if not isinstance(record, dict):
        raise DatasetError(
            f"{path}:{number} is a JSON {type(record).__name__}, not an object: JSON lines "
            f'need one object per line, e.g. {{"{json_key}": "..."}}'
        )
    if json_key not in record:
        raise DatasetError(
            f"{path}:{number} has no {json_key!r} field (its keys: {sorted(record)}); pass "
            "--json-keys"
        )
    text = record[json_key]
    if not isinstance(text, str):
        raise DatasetError(
            f"{path}:{number}: {json_key!r} is {json.dumps(text)}, not a string of text"
        )
    return text


def read_documents(path: Path, json_key: str) -> Iterator[str]:
    """Documents of a JSON-lines file (.jsonl or .json: one object per line, field `json_key`)
    or a text file (blank-line separated); empty documents are left out."""
    if not path.is_file():
        raise DatasetError(f"--input {path} does not exist (or is not a file)")
    if path.suffix in (".jsonl", ".json"):
        for number, line in _lines(path):
            if line.strip() and (text := _json_record(path, number, line, json_key)):
                yield text
        return
    block: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block).rstrip("\n")
            block = []
    if block:
        yield "".join(block).rstrip("\n")


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Text/JSONL -> Megatron indexed dataset.")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--json-keys", default="text", help="JSONL field holding the text")
    tokenizer = parser.add_mutually_exclusive_group(required=True)
    tokenizer.add_argument(
        "--tokenizer-model",
        help="an existing sentencepiece .model, a "
        "Hugging Face tokenizer.json, a checkpoint directory holding one, or "
        "a .gguf file (its embedded vocabulary)",
    )
    tokenizer.add_argument(
        "--train-tokenizer",
        type=int,
        metavar="VOCAB_SIZE",
        help="train a BPE tokenizer of this size on the input first",
    )
    parser.add_argument(
        "--no-append-eod", action="store_true", help="do not end each document with EOS"
    )
    args = parser.parse_args(argv)
    if args.train_tokenizer:
        model_path = Path(args.output_prefix + ".model")
        model = train_sentencepiece(
            read_documents(args.input, args.json_keys), model_path, args.train_tokenizer
        )
        print(f"trained {model_path} ({model.vocab_size} tokens)")
    else:
        model = load_tokenizer(args.tokenizer_model)
    eod = [] if args.no_append_eod else [model.eos_id]
    documents = (
        model.encode(text) + eod
        for text in tqdm(read_documents(args.input, args.json_keys), desc="tokenize", unit="doc")
    )
    count = write_indexed_dataset(args.output_prefix, documents, model.vocab_size)
    record_tokenizer(args.output_prefix, model)
    print(f"wrote {count} documents to {args.output_prefix}.bin/.idx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
