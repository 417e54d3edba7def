"""Which text tokens RMT and RPT differ on: reasoning accuracy per target token over the text
positions of the validation evaluations (seeds 1-5, B = 40 prompt), most frequent tokens first.

    python experiments/text_positions.py runs/budget_floor
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from paired_lines import load_reports

from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE, builtin_documents, located_tokens
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer

TOKENIZER = ASSETS / TOKENIZER_FILE
SEEDS = (1, 2, 3, 4, 5)


def main(out: Path) -> None:
    tokenizer = SentencePieceTokenizer(TOKENIZER)
    documents = [located_tokens(tokenizer, d) for d in builtin_documents("valid")]
    accuracy: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for arm in ("rmt", "rpt"):
        for report in load_reports(out, f"{arm}_seed{{s}}_p40", SEEDS):
            for o in report["outcomes"]:
                if o["kind"] == "text":
                    tokens = documents[o["document"]]
                    target = tokens[o["position"]][0] if o["position"] < len(tokens) else "EOS"
                    accuracy[target][arm].append(o["reasoning_accuracy"])
    print("| target | positions | RMT | RPT |")
    print("|---|---|---|---|")
    for target, arms in sorted(accuracy.items(), key=lambda item: -len(item[1]["rmt"])):
        count = len(arms["rmt"]) // len(SEEDS)
        print(f"| {target!r} | {count} | {np.mean(arms['rmt']):.2f} | {np.mean(arms['rpt']):.2f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
