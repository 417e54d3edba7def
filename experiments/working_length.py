"""How long the necessary reasoning for a sum digit is, against the final budget B_T, and what
happens when a policy reasons for less.

The necessary reasoning is the warm start's core for that digit (`warmstart.reasoning_core`:
the column working and which digit comes next), without any re-check; its length is counted in
the built-in tokenizer's tokens. Part 1 gives its distribution per split. Part 2 takes
evaluation reports (greedy, one rollout per position) on a built-in split and splits their sum
digits by whether the rollout's reasoning was shorter than that digit's necessary reasoning.

    python experiments/working_length.py SPLIT REPORT.json [REPORT.json ...]
"""

import json
import sys
from pathlib import Path

import numpy as np

from rmt_megatron.builtin.datasets import (
    ASSETS,
    TOKENIZER_FILE,
    builtin_documents,
    located_tokens,
    token_kind,
)
from rmt_megatron.builtin.warmstart import reasoning_core
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer

TOKENIZER = ASSETS / TOKENIZER_FILE


def necessary_lengths(tokenizer: SentencePieceTokenizer, split: str) -> dict[tuple[int, int], int]:
    """(document, target position) -> tokens of the necessary reasoning, for every sum digit."""
    lengths = {}
    for index, document in enumerate(builtin_documents(split)):
        for position, (text, where) in enumerate(located_tokens(tokenizer, document)):
            if token_kind(text, where) == "computed":
                lengths[index, position] = len(tokenizer.encode(reasoning_core(where, text)))
    return lengths


def main(split: str, reports: list[Path]) -> None:
    tokenizer = SentencePieceTokenizer(TOKENIZER)
    print("necessary reasoning for a sum digit, tokens (min / median / 90% / max; share above B):")
    for name in ("train", "valid", "test"):
        values = np.array(list(necessary_lengths(tokenizer, name).values()))
        shares = ", ".join(f"> {b}: {np.mean(values > b):.3f}" for b in (40, 48, 64))
        print(
            f"  {name}: {len(values)} digits, {values.min()} / {np.median(values):.0f} / "
            f"{np.percentile(values, 90):.0f} / {values.max()}; {shares}"
        )
    needed = necessary_lengths(tokenizer, split)
    print(f"\n{split} sum digits in each report: reasoning shorter than needed, and accuracy")
    for path in reports:
        outcomes = [o for o in json.loads(path.read_text())["outcomes"] if o["kind"] == "computed"]
        short = np.array(
            [o["mean_reasoning_length"] < needed[o["document"], o["position"]] for o in outcomes]
        )
        correct = np.array([o["reasoning_accuracy"] for o in outcomes])
        cells = [f"{path.stem}: {len(outcomes)} digits, {short.mean():.2f} shorter than needed"]
        for label, chosen in (("shorter", short), ("not shorter", ~short)):
            if chosen.any():
                cells.append(f"{label} {correct[chosen].mean():.3f} (n={chosen.sum()})")
        print("  " + "; ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1], [Path(p) for p in sys.argv[2:]])
