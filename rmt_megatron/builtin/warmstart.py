"""Warm start: build the built-in tokenizer and a small base model that writes the RMT format.

RL earns signal only from a policy that already answers in the think-then-box format, so the
default run starts from a base model trained here with plain next-token prediction on

- the built-in corpus documents (train operand pairs only: `corpus.pair_split`), and
- worked examples: a next-token-reasoning prompt for a position of a corpus document, then
  reasoning and the boxed next token. Half the prompts carry the budget clause (a budget B drawn
  from [B_T, B_0] of the preset), half none, so every method's prompt form starts from the same
  base. Where the next token is a digit of a sum the reasoning is the sum's column working and
  which digit comes next ("347+586: 7+6=13 4+8+1=13 3+5+1=9 so 933, after 9 comes 3"); elsewhere
  it names the token. Verbosity varies: redundant re-checks of the reasoning pad it to a length
  drawn around B (uniform in [0.4·B, 1.6·B] tokens), so the base model follows the budget only
  loosely and a shrinking budget has reasoning to cut.

`rmt-warmstart --output DIR` writes DIR/tokenizer.model, DIR/checkpoint/ and
DIR/base.json (what was trained, how long it took, the final loss). The shipped
`rmt_megatron/builtin/assets/tiny_base/` is this command's output with its defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from rmt_megatron.builtin.corpus import Segment, document_text
from rmt_megatron.builtin.datasets import (
    CHECKPOINT_DIR,
    TOKENIZER_FILE,
    builtin_documents,
    encode_document,
    located_tokens,
    token_kind,
)
from rmt_megatron.cli import command
from rmt_megatron.config.presets import get_preset
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import save_checkpoint
from rmt_megatron.mcore.forward_step import make_forward_step
from rmt_megatron.mcore.optimizer import build_training, report_mean, train_step
from rmt_megatron.method.budget import final_budget
from rmt_megatron.method.packing import ntp_batches, ntp_sequence
from rmt_megatron.method.prompt import INSTRUCTION, build_prompt, prompt_header
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer, train_sentencepiece

CHECKS = ("Check:", "Let me check again:", "Once more:", "To be sure:")
"""Openings of a redundant re-check in the worked examples."""
VOCAB_SIZE = 512
"""Built-in tokenizer size: a multiple of 256, so TP 1, 2 and 4 pad it alike (checkpoints
reshard across those TP sizes)."""


def tokenizer_texts(documents: list[list[Segment]], config: RMTConfig) -> list[str]:
    """Everything the built-in tokenizer should encode compactly."""
    budgets = range(1, config.budget.initial + 1)
    return (
        [document_text(doc) for doc in documents]
        + [prompt_header(b) for b in [None, *budgets]]
        + [INSTRUCTION, "\n<think>", "</think>\\boxed{", "}"]
        + list(CHECKS) * 50
        + [segment.reasoning for doc in documents for segment in doc if segment.reasoning]
    )


def reasoning_core(located: tuple[Segment, int] | None, answer: str) -> str:
    """The reasoning a worked example needs for the token `answer` found at `located` (segment,
    offset in it): the column working and which digit comes next for a digit of a sum; the
    token itself elsewhere."""
    if located is None or located[0].reasoning is None or not answer.isdigit():
        return f"next: {answer.strip() or 'space'}"
    segment, offset = located
    written = segment.text[:offset].strip()
    where = f"after {written} comes" if written else "first"
    return f"{segment.reasoning}, {where} {answer}"


def worked_response(
    tokenizer: SentencePieceTokenizer,
    core: str,
    answer: str,
    target_length: int,
    rng: random.Random,
) -> list[int]:
    """The reasoning `core`, then redundant re-checks of it until about `target_length` tokens,
    then the boxed answer. The re-checks are the over-thinking a budget can cut: they repeat
    work already done and change nothing."""
    parts = [core]
    while len(tokenizer.encode(" ".join(parts))) < target_length:
        parts.append(f"{rng.choice(CHECKS)} {core}.")
    return tokenizer.encode(" ".join(parts) + f"</think>\\boxed{{{answer}}}")


def worked_examples(
    tokenizer: SentencePieceTokenizer,
    documents: list[list[Segment]],
    config: RMTConfig,
    seed: int,
    others_per_document: int = 2,
) -> list[list[int]]:
    """Prompt ⊕ response sequences: every digit of a computed number, plus a few other
    positions, of each document. Half the prompts carry a budget clause (a budget drawn from
    [B_T, B_0]), half none, so both prompt forms start from the same base."""
    rng = random.Random(seed)
    low = final_budget(config.budget)
    high = config.budget.initial
    min_context = config.curriculum.min_context
    examples = []
    for doc in documents:
        ids = encode_document(tokenizer, doc)[:-1]
        tokens = located_tokens(tokenizer, doc)
        computed = [
            pos for pos in range(min_context, len(ids)) if token_kind(*tokens[pos]) == "computed"
        ]
        others = [pos for pos in range(min_context, len(ids)) if pos not in computed]
        for pos in computed + rng.sample(others, min(others_per_document, len(others))):
            text, where = tokens[pos]
            core = reasoning_core(where, text)
            budget = rng.randint(low, high)
            target = rng.randint(max(1, int(0.4 * budget)), int(1.6 * budget))
            shown = budget if rng.random() < 0.5 else None
            prompt = build_prompt(tokenizer, ids[:pos], shown, config.rollout.max_prompt_length)
            examples.append(prompt + worked_response(tokenizer, core, text, target, rng))
    return examples


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", required=True, help="Directory for the tokenizer, the checkpoint and base.json."
    )
    parser.add_argument("--preset", default="tiny_cpu", help="Model shape and budget range.")
    parser.add_argument("--train-iters", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--sequences-per-step", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    started = time.time()
    config = get_preset(args.preset)
    output = Path(args.output)
    documents = builtin_documents("train")
    tokenizer = train_sentencepiece(
        tokenizer_texts(documents, config), output / TOKENIZER_FILE, VOCAB_SIZE
    )
    examples = worked_examples(tokenizer, documents, config, args.seed)
    sequences = examples + [encode_document(tokenizer, doc) for doc in documents]
    longest = max(len(s) for s in sequences)
    print(
        f"warm start: {len(examples)} worked examples + {len(documents)} documents, "
        f"longest {longest} tokens, vocab {tokenizer.vocab_size}",
        flush=True,
    )

    train = replace(
        config.train,
        train_iters=args.train_iters,
        lr=args.lr,
        lr_warmup_iters=min(20, args.train_iters // 10),
    )
    rng = random.Random(args.seed)
    losses = []
    with parallel.process_group(config.model, args.seed):
        state = build_training(config.model, train, tokenizer.vocab_size)
        forward_step = make_forward_step(config.loss)
        order: list[int] = []
        for step in range(args.train_iters):
            if len(order) < args.sequences_per_step:
                order += rng.sample(range(len(sequences)), len(sequences))
            batch = [ntp_sequence(sequences[i], ()) for i in order[: args.sequences_per_step]]
            del order[: args.sequences_per_step]
            micro, width = ntp_batches(batch, args.micro_batch_size, tokenizer.eos_id)
            result = train_step(state, forward_step, micro, width)
            losses.append(report_mean(result.reports, "loss_ntp"))
            if step % 50 == 0 or step == args.train_iters - 1:
                print(
                    f"warm start step {step + 1}/{args.train_iters} loss {losses[-1]:.3f} "
                    f"({time.time() - started:.0f} s)",
                    flush=True,
                )
        save_checkpoint(
            output / CHECKPOINT_DIR,
            args.train_iters,
            state.module,
            state={
                "config": config.to_dict(),
                "vocab_size": tokenizer.vocab_size,
                "prompt_budget": final_budget(config.budget),
                "prompt_forms": "with and without the budget clause",
            },
        )
    summary = {
        "preset": args.preset,
        "train_iters": args.train_iters,
        "lr": args.lr,
        "sequences_per_step": args.sequences_per_step,
        "seed": args.seed,
        "worked_examples": len(examples),
        "documents": len(documents),
        "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": "rmt-warmstart " + " ".join(argv or sys.argv[1:]),
    }
    atomic_write(output / "base.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
