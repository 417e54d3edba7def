"""Post-training on the built-in world's questions: SFT, then GRPO, from any checkpoint of ours,
with the held-out answer accuracy before, after SFT and after GRPO.

    python -m rmt_megatron.posttrain --load CKPT --output REPORT.json [--seed 1]
        [--sft-iters 180] [--grpo-iters 30] [--eval-problems 200] [--eval-split test]

The question format (`builtin.questions`: "What is 347 + 586?", the whole sum boxed) is one no
mid-training run uses, so a checkpoint first learns it from a short supervised phase on worked
solutions (`--sft-iters` steps of `--sft-batch` problems, loss on the solution tokens only), then
GRPO rewards the whole answer (1 when the boxed text is the sum, else 0; `--group-size` samples
per problem, `--prompts-per-step` problems a step, groups with equal rewards carry no signal and
are dropped). Every source checkpoint gets the same phases, problems and seeds: the comparison
is of what mid-training left in the weights. Training problems come from the train operand
pairs, the evaluation's from `--eval-split` (fixed problems from `EVAL_SEED`, greedy decoding),
so no evaluated sum was ever trained on.

The report (JSON) holds the settings, per phase the accuracy, mean response length and each
problem's outcome (so two reports pair up), and the GRPO steps' mean reward and kept groups.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE
from rmt_megatron.builtin.questions import (
    ANSWER_KINDS,
    Problem,
    addition_problems,
    answer_kind,
    answer_reward,
    question_prompt,
    worked_solution,
)
from rmt_megatron.cli import command
from rmt_megatron.config.sections import LossConfig, field_docs
from rmt_megatron.errors import ConfigError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import load_checkpoint
from rmt_megatron.mcore.forward_step import make_forward_step
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.mcore.optimizer import TrainingState, build_training, train_step
from rmt_megatron.method.advantages import grpo_advantages, informative_groups
from rmt_megatron.method.packing import (
    collate,
    ntp_batches,
    ntp_sequence,
    rl_sequence,
    token_weights,
)
from rmt_megatron.model_io.own_checkpoint import own_checkpoint_state
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer

EVAL_SEED = 0
"""Seed of the evaluation problems: the same for every source checkpoint and training seed."""
TRAIN_PROBLEMS = 4000
"""Distinct training problems drawn from the train operand pairs."""


@dataclass(frozen=True)
class PostTrainSettings:
    seed: int = 1
    """Seed of the training problems drawn, their order and the GRPO samples."""
    sft_iters: int = 180
    """Supervised steps on worked solutions before GRPO (0: none)."""
    sft_batch: int = 32
    """Problems per supervised step."""
    sft_lr: float = 1e-3
    """Learning rate of the supervised phase."""
    grpo_iters: int = 30
    """GRPO steps after the supervised phase (0: none)."""
    grpo_lr: float = 1e-4
    """Learning rate of the GRPO phase."""
    prompts_per_step: int = 16
    """Problems per GRPO step."""
    group_size: int = 8
    """Sampled answers per problem in a GRPO step."""
    temperature: float = 1.0
    """Sampling temperature of the GRPO answers (evaluation is greedy)."""
    max_new_tokens: int = 48
    """The longest answer generated, in tokens."""
    eval_problems: int = 200
    """Held-out problems each evaluation answers."""
    eval_split: str = "test"
    """Operand-pair split of the evaluation problems: valid (for choosing settings) or test."""


def build_parser() -> argparse.ArgumentParser:
    defaults = PostTrainSettings()
    parser = argparse.ArgumentParser(
        prog="python -m rmt_megatron.posttrain",
        description=" ".join(__doc__.split("\n\n")[0].split()),
        allow_abbrev=False,
    )
    parser.add_argument("--load", required=True, help="A checkpoint directory of ours.")
    parser.add_argument("--output", required=True, help="Report file (JSON); never overwritten.")
    docs = field_docs(PostTrainSettings)
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        helped = f"{docs[name]} (default: {value})"
        if name == "eval_split":
            parser.add_argument(flag, choices=("valid", "test"), default=value, help=helped)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=helped)
    return parser


def _checked(settings: PostTrainSettings) -> PostTrainSettings:
    counts = {
        "sft_iters": settings.sft_iters,
        "grpo_iters": settings.grpo_iters,
        "eval_problems": settings.eval_problems,
    }
    if any(v < 0 for v in counts.values()) or settings.eval_problems < 1:
        raise ConfigError(f"post-training counts must be >= 0 (eval problems >= 1): {counts}")
    if settings.group_size < 2 or settings.prompts_per_step < 1 or settings.sft_batch < 1:
        raise ConfigError(
            "--group-size must be >= 2 (GRPO compares samples of one problem) and "
            "--prompts-per-step, --sft-batch >= 1"
        )
    if settings.max_new_tokens < 1 or settings.temperature <= 0:
        raise ConfigError("--max-new-tokens must be >= 1 and --temperature > 0")
    return settings


def evaluate_answers(
    engine: RolloutEngine, tokenizer, problems: list[Problem], max_new_tokens: int
) -> dict:
    """Greedy answers to `problems`: accuracy, mean response length, how many answers are of
    each `ANSWER_KINDS` (right, copied wrong into the box, wrong working, no answer), and per
    problem its outcome and the response's text."""
    rollouts = engine.generate(
        [question_prompt(tokenizer, p) for p in problems],
        group_size=1,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        top_p=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    texts = [tokenizer.decode(r.tokens) for r in rollouts]
    kinds = [answer_kind(t, problems[r.prompt_index]) for t, r in zip(texts, rollouts, strict=True)]
    correct = [float(kind == "correct") for kind in kinds]  # answer_kind applies the reward
    return {
        "accuracy": sum(correct) / len(correct),
        "mean_response_length": sum(len(r.tokens) for r in rollouts) / len(rollouts),
        "outcomes": correct,
        "answer_kinds": {kind: kinds.count(kind) for kind in ANSWER_KINDS},
        "responses": texts,
    }


def _sft_step(state, forward_step, tokenizer, problems: list[Problem], micro: int) -> float:
    """One supervised step on worked solutions; loss on the solution tokens only."""
    sequences = []
    for problem in problems:
        prompt = question_prompt(tokenizer, problem)
        sequences.append(
            ntp_sequence(prompt + worked_solution(tokenizer, problem), range(1, len(prompt)))
        )
    batches, width = ntp_batches(sequences, micro, tokenizer.eos_id)
    output = train_step(state, forward_step, batches, width)
    total, count = (float(v) for v in output.reports["loss_ntp"])
    return total / count


def _grpo_step(state, forward_step, engine, tokenizer, problems, settings, step, micro) -> dict:
    """One GRPO step: sample, reward the whole answer, train on informative groups."""
    prompts = [question_prompt(tokenizer, p) for p in problems]
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    rollouts = engine.generate(
        prompts,
        group_size=settings.group_size,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=1.0,
        generator=generator,
    )
    rewards = torch.zeros(len(problems), settings.group_size)
    for index, rollout in enumerate(rollouts):
        rewards[index // settings.group_size, index % settings.group_size] = answer_reward(
            tokenizer.decode(rollout.tokens), problems[rollout.prompt_index]
        )
    advantages = grpo_advantages(rewards)
    keep = informative_groups(rewards)
    sequences = [
        rl_sequence(
            prompts[r.prompt_index],
            r.tokens,
            float(advantages[r.prompt_index, i % settings.group_size]),
        )
        for i, r in enumerate(rollouts)
        if keep[r.prompt_index] and r.tokens
    ]
    if sequences:
        width = max(len(s.tokens) for s in sequences) - 1
        rl_tokens = sum(s.rl_tokens for s in sequences)
        batches = collate(
            sequences, micro, width, tokenizer.eos_id, *token_weights(rl_tokens, 0, 1, 0)
        )
        train_step(state, forward_step, batches, width)
    return {"reward": float(rewards.mean()), "kept_groups": float(keep.float().mean())}


def post_train(load: Path, settings: PostTrainSettings) -> dict:
    """Post-train the checkpoint at `load` (see the module docstring); returns the report."""
    settings = _checked(settings)
    step, state_dict, recorded = own_checkpoint_state(load)
    model = recorded.model
    tokenizer = SentencePieceTokenizer(ASSETS / TOKENIZER_FILE)
    vocab = model.vocab_size or state_dict.get("vocab_size") or tokenizer.vocab_size
    train = replace(
        recorded.train,
        train_iters=max(1, settings.sft_iters + settings.grpo_iters),
        lr=settings.sft_lr,
        lr_warmup_iters=0,
        seed=settings.seed,
    )
    training_problems = addition_problems(TRAIN_PROBLEMS, settings.seed, "train")
    eval_problems = addition_problems(settings.eval_problems, EVAL_SEED, settings.eval_split)
    rng = random.Random(settings.seed)
    micro = recorded.train.micro_batch_size
    started = time.time()
    report: dict = {"checkpoint": str(load), "step": step, "settings": asdict(settings)}
    with parallel.process_group(model, settings.seed):
        state: TrainingState = build_training(model, train, vocab, initialize=False)
        load_checkpoint(load, state.module, step=step, restore_rng=False, require_state=False)
        state.weights_loaded()
        engine = RolloutEngine.for_model(state.module, tokenizer, model, recorded.rollout)
        forward_step = make_forward_step(LossConfig(rl_weight=1.0, ntp_weight=0.0))

        def phase(name: str) -> None:
            result = evaluate_answers(engine, tokenizer, eval_problems, settings.max_new_tokens)
            report[name] = result
            print(
                f"{name}: accuracy {result['accuracy']:.3f} on {len(eval_problems)} "
                f"{settings.eval_split} problems ({time.time() - started:.0f} s)",
                flush=True,
            )

        phase("before")
        losses = [
            _sft_step(
                state,
                forward_step,
                tokenizer,
                rng.sample(training_problems, settings.sft_batch),
                micro,
            )
            for _ in range(settings.sft_iters)
        ]
        report["sft_loss"] = losses
        phase("after_sft")
        state.set_constant_lr(settings.grpo_lr)
        steps = []
        for index in range(settings.grpo_iters):
            chosen = rng.sample(training_problems, settings.prompts_per_step)
            steps.append(
                _grpo_step(state, forward_step, engine, tokenizer, chosen, settings, index, micro)
            )
            if (index + 1) % 10 == 0:
                print(f"grpo step {index + 1}: reward {steps[-1]['reward']:.3f}", flush=True)
        report["grpo_steps"] = steps
        phase("after_grpo")
    report["seconds"] = round(time.time() - started, 1)
    return report


def settings_from_args(args: argparse.Namespace) -> PostTrainSettings:
    """The settings `build_parser`'s `args` give."""
    values = vars(args)
    return PostTrainSettings(**{k: values[k] for k in asdict(PostTrainSettings())})


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.exists():
        raise ConfigError(f"{output} exists: post-training reports are never overwritten")
    settings = settings_from_args(args)
    report = post_train(Path(args.load), settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, json.dumps(report, indent=1))
    print(f"report: {output}", flush=True)
    return 0
