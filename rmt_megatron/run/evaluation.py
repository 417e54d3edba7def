"""Held-out next-token accuracy, as RPT and RMT report it (spec §8.1, §11 #15).

A fixed sample of held-out positions (chosen once from a seed) is split by the proxy entropy H into
RPT's nested splits: easy H > 0.5, medium H > 1.0, hard H > 1.5 (thresholds from the curriculum
config). Per split:
- `reasoning_accuracy`: greedy next-token reasoning with the final budget B_T in the prompt;
  the share of positions whose boxed prediction matches (the configured match rule);
- `ntp_accuracy`: plain teacher-forced argmax next-token prediction, no reasoning;
- `mean_reasoning_length`, `valid_format`: over the reasoning rollouts.
"average" is the plain mean of the three splits' accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rmt_megatron.config.sections import TIER_NAMES, RMTConfig
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.mcore.parallel import share_from_last_stage
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.method.rewards import score_rollout
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.difficulty import forward_statistics


@dataclass(frozen=True)
class EvalPosition:
    document: int
    position: int
    entropy: float


def sample_eval_positions(documents: list[np.ndarray], entropy: np.ndarray, lowest: float,
                          min_context: int, count: int, seed: int) -> list[EvalPosition]:
    """Up to `count` positions with entropy > `lowest` and enough context, fixed by `seed`."""
    candidates = []
    offset = 0
    for doc, tokens in enumerate(documents):
        for pos in range(min_context, len(tokens)):
            if entropy[offset + pos] > lowest:
                candidates.append(EvalPosition(doc, pos, float(entropy[offset + pos])))
        offset += len(tokens)
    if not candidates:
        raise ValueError("no held-out position is above the lowest entropy threshold")
    order = np.random.default_rng(seed).permutation(len(candidates))[:count]
    return [candidates[i] for i in sorted(order)]


def _argmax_statistic(vocab_size: int):
    """Teacher-forced argmax over the real vocabulary (TP shards gathered first)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    def statistic(logits: torch.Tensor, batch) -> torch.Tensor:
        full = gather_from_tensor_model_parallel_region(logits)
        return full[..., :vocab_size].argmax(dim=-1)

    return statistic


def evaluate(model, engine: RolloutEngine, tokenizer: SentencePieceTokenizer,
             documents: list[np.ndarray], positions: list[EvalPosition], config: RMTConfig,
             budget: int | None, seed: int) -> dict:
    """Accuracy and reasoning length per nested split (see module docstring), as a dict."""
    prompts = [build_prompt(tokenizer, documents[p.document][:p.position], budget,
                            config.rollout.max_prompt_length) for p in positions]
    cap = config.rollout.max_response_length
    rollouts = engine.generate(prompts, 1, cap, temperature=0.0, top_p=1.0,
                               generator=torch.Generator().manual_seed(seed))
    scores = [score_rollout(tokenizer.token_bytes(r.tokens),
                            tokenizer.token_bytes(documents[p.document][p.position:]),
                            budget, config.reward) for r, p in zip(rollouts, positions,
                                                                   strict=True)]
    predicted = _argmax_predictions(model, documents, positions, tokenizer)
    thresholds = dict(zip(TIER_NAMES, config.curriculum.tier_thresholds, strict=True))
    report: dict = {"positions": len(positions), "budget": budget, "splits": {}}
    for name, threshold in thresholds.items():
        members = [i for i, p in enumerate(positions) if p.entropy > threshold]
        report["splits"][name] = {
            "positions": len(members),
            "reasoning_accuracy": _mean([scores[i].match for i in members]),
            "ntp_accuracy": _mean([float(predicted[i] == documents[positions[i].document][
                positions[i].position]) for i in members]),
            "mean_reasoning_length": _mean([scores[i].reasoning_tokens for i in members]),
            "valid_format": _mean([float(scores[i].valid_format) for i in members]),
        }
    splits = report["splits"].values()
    report["average"] = {key: _mean([s[key] for s in splits])
                         for key in ("reasoning_accuracy", "ntp_accuracy")}
    report["mean_reasoning_length"] = _mean([s.reasoning_tokens for s in scores])
    return report


def _argmax_predictions(model, documents, positions, tokenizer) -> list[int]:
    """Teacher-forced argmax token at each position (one forward row per position)."""
    width = max(p.position for p in positions)
    rows = len(positions)
    tokens = torch.full((rows, width), tokenizer.eos_id, dtype=torch.long)
    for row, p in enumerate(positions):
        tokens[row, :p.position] = torch.as_tensor(documents[p.document][:p.position])
    batch = {"tokens": tokens, "position_ids": torch.arange(width)[None].expand(rows, width)}
    result = share_from_last_stage(forward_statistics(model, [batch],
                                                         _argmax_statistic(tokenizer.vocab_size)))
    argmax = result[0]
    return [int(argmax[row, p.position - 1]) for row, p in enumerate(positions)]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
