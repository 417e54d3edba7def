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
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from rmt_megatron.cli import command
from rmt_megatron.errors import DatasetError
from rmt_megatron.mcore.indexed_dataset import write_indexed_dataset
from rmt_megatron.model_io.checkpoints import load_tokenizer
from rmt_megatron.model_io.tokenizers import train_sentencepiece


def read_documents(path: Path, json_key: str) -> Iterator[str]:
    """Documents of a .jsonl file (field `json_key`) or a text file (blank-line separated)."""
    if not path.is_file():
        raise DatasetError(f"--input {path} does not exist")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DatasetError(f"{path}:{number} is not valid JSON ({error})") from None
                if json_key not in record:
                    raise DatasetError(
                        f"{path}:{number} has no {json_key!r} field (its keys: "
                        f"{sorted(record)}); pass --json-keys"
                    )
                yield record[json_key]
        return
    block: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
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
    print(f"wrote {count} documents to {args.output_prefix}.bin/.idx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
