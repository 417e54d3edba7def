"""Held-out next-token accuracy, as RPT and RMT report it (docs/method.md, "Evaluation").

A fixed sample of held-out positions (chosen once from --eval-seed, whatever the training seed,
among the positions training could draw: enough context, a target with text) is split by the
proxy entropy H into RPT's nested splits: easy H > 0.5, medium H > 1.0, hard H > 1.5 (thresholds
from the curriculum config). Per split:
- `reasoning_accuracy`: greedy next-token reasoning with the final budget B_T in the prompt;
  the share of positions whose boxed prediction matches (the configured match rule);
- `ntp_accuracy`: plain teacher-forced argmax next-token prediction, no reasoning;
- `mean_reasoning_length`, `valid_format`: over the reasoning rollouts.
"average" is the plain mean of the splits' accuracies (of those that hold any position; a split
without positions reports NaN). "reasoning_minus_argmax" is the paired difference of the two
accuracies over all sampled positions, with its standard error. Where the dataset labels its
positions (`model_io.position_kinds`, e.g. the built-in "computed" / "operand" / "text"), "kinds"
reports the same per kind. "outcomes" lists every position with its own results and the decoded
reasoning rollout (`response`), so that two reports on the same positions can be compared pair by
pair and a wrong answer read where it went wrong. Data-parallel replicas each evaluate every D-th
position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rmt_megatron.config.sections import TIER_NAMES, RMTConfig
from rmt_megatron.errors import DatasetError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.indexed_dataset import document_lengths
from rmt_megatron.mcore.rollout_engines import AnyRolloutEngine
from rmt_megatron.mcore.teacher_forcing import argmax_statistic, forward_statistics
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.method.rewards import score_rollout
from rmt_megatron.method.tallies import mean_of, paired_difference
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.position_kinds import load_position_kinds
from rmt_megatron.run.candidate_pool import Scores, pool_members
from rmt_megatron.run.sharding import replica_share
from rmt_megatron.run.step_builder import eligible_positions


@dataclass(frozen=True)
class EvalPosition:
    document: int
    position: int
    entropy: float
    kind: str | None = None


def sample_eval_positions(
    documents: list[np.ndarray],
    entropy: np.ndarray,
    eligible: np.ndarray,
    lowest: float,
    count: int,
    seed: int,
    kinds: tuple[list[str], np.ndarray] | None = None,
) -> list[EvalPosition]:
    """Up to `count` positions, fixed by `seed`, among those a training step could draw
    (`eligible`, flat over all tokens: enough context, a target with text, so never an
    end-of-text target that no boxed answer can match) whose entropy is above `lowest`.
    `kinds` (names, flat codes) labels each position with its kind."""
    candidates = []
    offset = 0
    for doc, tokens in enumerate(documents):
        for pos in range(len(tokens)):
            flat = offset + pos
            if eligible[flat] and entropy[flat] > lowest:
                kind = None if kinds is None else kinds[0][kinds[1][flat]]
                candidates.append(EvalPosition(doc, pos, float(entropy[flat]), kind))
        offset += len(tokens)
    if not candidates:
        raise DatasetError(
            "no held-out position is above the lowest entropy threshold: lower "
            "--rmt-tier-thresholds or use a larger --valid-data-path"
        )
    order = np.random.default_rng(seed).permutation(len(candidates))[:count]
    return [candidates[i] for i in sorted(order)]


def held_out_positions(
    prefix: Path,
    documents: Sequence[np.ndarray],
    score: Scores,
    tokenizer: Tokenizer,
    config: RMTConfig,
    count: int,
    seed: int,
) -> list[EvalPosition]:
    """`sample_eval_positions` over the held-out dataset at `prefix`, drawn as training draws:
    from a candidate pool of `curriculum.pool_documents` documents of the split (its first pool
    under `seed`, `candidate_pool.pool_members`; the whole split when it is no larger), scored with
    `score` (`candidate_pool.Scores`): the positions a training step could draw there
    (`step_builder.eligible_positions`) above the lowest tier threshold, labelled with the
    dataset's position kinds where it has them."""
    ids, part = pool_members(len(documents), config.curriculum.pool_documents, seed, 0)
    pool = [documents[int(i)] for i in ids]
    lengths = document_lengths(documents)
    kinds = load_position_kinds(prefix, int(lengths.sum()))
    if kinds is not None and part is not None:
        starts = np.concatenate([[0], np.cumsum(lengths)])[ids]
        kinds = (
            kinds[0],
            np.concatenate([kinds[1][a : a + len(d)] for a, d in zip(starts, pool, strict=True)]),
        )
    positions = sample_eval_positions(
        pool,
        score(pool, part),
        eligible_positions(pool, tokenizer, config.curriculum.min_context),
        config.curriculum.tier_thresholds[0],
        count,
        seed,
        kinds,
    )
    return [replace(p, document=int(ids[p.document])) for p in positions]


EVAL_DIR = "eval"
"""A run's evaluations: `<save>/eval/iter_XXXXXXX.json` for each step evaluated, and
`latest.json`."""


def write_eval_report(save: str | Path, step: int, report: dict) -> None:
    """Store the evaluation `report` of step `step` under the run's `save` directory (the main
    rank writes)."""
    directory = Path(save) / EVAL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name in (f"iter_{step:07d}.json", "latest.json"):
        atomic_write(directory / name, json.dumps(report, indent=1))


def read_eval_reports(save: str | Path) -> list[dict]:
    """The evaluations a run stored under `save`, in step order."""
    return [json.loads(p.read_text()) for p in sorted((Path(save) / EVAL_DIR).glob("iter_*"))]


def evaluate(
    model,
    engine: AnyRolloutEngine,
    tokenizer: Tokenizer,
    documents: list[np.ndarray],
    positions: list[EvalPosition],
    config: RMTConfig,
    budget: int | None,
    seed: int,
) -> dict:
    """Accuracy and reasoning length per nested split (see module docstring), as a dict.
    Collective over data-parallel replicas: each evaluates its share of `positions`."""
    rank, size = parallel.data_parallel_rank_and_size()
    mine = [positions[i] for i in replica_share(len(positions), rank, size)]
    outcomes = _outcomes(model, engine, tokenizer, documents, mine, config, budget, seed)
    results: list[dict] = [{} for _ in positions]
    for replica, share in enumerate(parallel.data_parallel_all_gather_object(outcomes)):
        for index, outcome in zip(replica_share(len(positions), replica, size), share, strict=True):
            results[index] = outcome
    thresholds = dict(zip(TIER_NAMES, config.curriculum.tier_thresholds, strict=True))
    report: dict = {"positions": len(positions), "budget": budget, "splits": {}}
    for name, threshold in thresholds.items():
        members = [r for r, p in zip(results, positions, strict=True) if p.entropy > threshold]
        report["splits"][name] = {
            "positions": len(members),
            **{key: mean_of(r[key] for r in members) for key in OUTCOMES},
        }
    present = [s for s in report["splits"].values() if s["positions"]]
    report["average"] = {
        key: mean_of(s[key] for s in present) for key in ("reasoning_accuracy", "ntp_accuracy")
    }
    report["mean_reasoning_length"] = mean_of(r["mean_reasoning_length"] for r in results)
    report["reasoning_minus_argmax"] = _reasoning_minus_argmax(results)
    report["outcomes"] = [
        {"document": p.document, "position": p.position, "kind": p.kind, "entropy": p.entropy, **r}
        for p, r in zip(positions, results, strict=True)
    ]
    labels = sorted({p.kind for p in positions if p.kind is not None})
    if labels:
        report["kinds"] = {}
        for kind in labels:
            members = [r for r, p in zip(results, positions, strict=True) if p.kind == kind]
            report["kinds"][kind] = {
                "positions": len(members),
                **{key: mean_of(r[key] for r in members) for key in OUTCOMES},
                "reasoning_minus_argmax": _reasoning_minus_argmax(members),
            }
    return report


def _reasoning_minus_argmax(results: list[dict]) -> dict[str, float]:
    return paired_difference(
        (r["reasoning_accuracy"] for r in results), (r["ntp_accuracy"] for r in results)
    )


OUTCOMES = ("reasoning_accuracy", "ntp_accuracy", "mean_reasoning_length", "valid_format")
"""What `evaluate` measures at each position (then averages per split)."""


def _outcomes(model, engine, tokenizer, documents, positions, config, budget, seed) -> list[dict]:
    """`OUTCOMES` at each of `positions` (greedy reasoning rollout and plain argmax), and the
    rollout's text as `response`."""
    if not positions:
        return []
    prompts = [
        build_prompt(
            tokenizer, documents[p.document][: p.position], budget, config.rollout.max_prompt_length
        )
        for p in positions
    ]
    rollouts = engine.generate(
        prompts,
        group_size=1,
        max_new_tokens=config.rollout.max_response_length,
        temperature=0.0,
        top_p=1.0,
        generator=torch.Generator().manual_seed(seed),
    )
    predicted = _argmax_predictions(model, documents, positions, tokenizer)
    outcomes = []
    for p, rollout, argmax in zip(positions, rollouts, predicted, strict=True):
        target = documents[p.document][p.position :]
        score = score_rollout(
            tokenizer.token_bytes(rollout.tokens),
            tokenizer.token_bytes(target),
            budget,
            config.reward,
        )
        outcomes.append(
            {
                "reasoning_accuracy": score.match,
                "ntp_accuracy": float(argmax == target[0]),
                "mean_reasoning_length": float(score.reasoning_tokens),
                "valid_format": float(score.valid_format),
                "response": tokenizer.decode(rollout.tokens),
            }
        )
    return outcomes


def _argmax_predictions(model, documents, positions, tokenizer) -> list[int]:
    """Teacher-forced argmax token at each position (one forward row per position)."""
    width = max(p.position for p in positions)
    rows = len(positions)
    tokens = torch.full((rows, width), tokenizer.eos_id, dtype=torch.long)
    for row, p in enumerate(positions):
        tokens[row, : p.position] = torch.as_tensor(documents[p.document][: p.position])
    batch = {"tokens": tokens, "position_ids": torch.arange(width)[None].expand(rows, width)}
    argmax = parallel.share_from_last_stage(
        forward_statistics(model, [batch], argmax_statistic(tokenizer.vocab_size))
    )[0]
    return [int(argmax[row, p.position - 1]) for row, p in enumerate(positions)]
