"""The golden run: the tiny_cpu preset's first steps and an evaluation, stored as a test asset.

A silent numerical change anywhere in the method (rewards, advantages, loss weighting, budget,
sampling, the kernels) moves these numbers; `tests/test_golden.py` compares a fresh run with
`tests/golden/tiny_cpu_first_steps.json` tightly. Regenerate the file, after a change that is
meant to move the numbers, with

    python tests/golden_run.py --write

and say in the commit message why they moved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_cpu_first_steps.json"
STEP_KEYS = (
    "budget",
    "loss_rl",
    "loss_ntp",
    "grad_norm",
    "match_reward",
    "match_reward/easy",
    "match_reward/medium",
    "match_reward/hard",
    "length_reward",
    "reasoning_length",
    "response_length",
)
"""Per-step metrics kept in the golden file."""


def data_args(data: Path, start: tuple[str, ...] | None = None) -> list[str]:
    """Flags naming `data/train`, `data/valid`, the shipped tokenizer and where the run starts
    (default: the shipped base model)."""
    from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR, TOKENIZER_FILE

    start = start or ("--pretrained-checkpoint", str(ASSETS / CHECKPOINT_DIR))
    return [
        "--train-data-path",
        str(data / "train"),
        "--valid-data-path",
        str(data / "valid"),
        "--tokenizer-model",
        str(ASSETS / TOKENIZER_FILE),
        *start,
    ]


def golden_argv(data: Path) -> list[str]:
    """The run: shipped tokenizer and base model, tiny_cpu preset, three RMT steps, saved
    beside its data."""
    return [
        *data_args(data),
        *("--save", str(data / "checkpoints"), "--tensorboard-dir", str(data / "tensorboard")),
        *(
            "--train-iters 3 --lr-warmup-iters 0 --rmt-prompts-per-step 4 --rmt-group-size "
            "4 --eval-positions 12 --micro-batch-size 4 --rmt-max-response-length 112 "
            "--log-interval 1 --eval-interval 100"
        ).split(),
    ]


def write_data(directory: Path) -> Path:
    """48 training and 16 held-out corpus documents (seeds 10 and 11) as indexed datasets."""
    from rmt_megatron.builtin.corpus import arithmetic_documents
    from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE, encode_document
    from rmt_megatron.mcore.indexed_dataset import write_indexed_dataset
    from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer(ASSETS / TOKENIZER_FILE)
    for name, count, seed in (("train", 48, 10), ("valid", 16, 11)):
        write_indexed_dataset(
            directory / name,
            [encode_document(tokenizer, d) for d in arithmetic_documents(count, seed, name)],
            tokenizer.vocab_size,
        )
    return directory


def golden_numbers(argv: list[str]) -> dict:
    """Train with `argv` in this process (call it in a forked rank) and keep the golden part."""
    from rmt_megatron.config.flags import config_from_args
    from rmt_megatron.run import pretrain
    from rmt_megatron.run.trainer import run_training

    config = config_from_args(pretrain.build_parser().parse_args(argv), "tiny_cpu")
    result = run_training(config)
    return {
        "steps": [{key: m[key] for key in STEP_KEYS} for m in result["metrics"]],
        "evaluation": result["evaluations"][-1],
    }


def main() -> int:
    import tempfile

    sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
    from ranks import run_ranks

    if sys.argv[1:] != ["--write"]:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        numbers = run_ranks(1, golden_numbers, golden_argv(write_data(Path(directory))))[0]
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
