"""The data side of one RMT step: draw positions, roll out, score, and build micro-batches.

`StepBatchBuilder.build(step)` does one step's data work for this data-parallel replica (budget
and tier probabilities, curriculum draw, prompts, rollouts, rewards and advantages through
`method.group_scores`, NTP windows, packing; docs/method.md, "One step") and returns the
micro-batches for `mcore.forward_step.make_forward_step` plus the step's statistics. It needs a
rollout engine, the tokenizer, the training documents and, with RL, their proxy entropies, so the
trainer and a drop-in Megatron-LM loop share it. Every draw is seeded from
(seed, step, data-parallel rank); `state_dict()` holds the sampler, so a resumed run builds what an
uninterrupted one would have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError, DatasetError
from rmt_megatron.mcore import parallel
from rmt_megatron.method.budget import budget_or_none, rollout_token_cap
from rmt_megatron.method.curriculum import CurriculumSampler, assign_tiers, tier_probabilities
from rmt_megatron.method.group_scores import score_groups
from rmt_megatron.method.packing import (
    TrainingSequence,
    collate,
    ntp_sequence,
    rl_sequence,
    token_weights,
)
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.method.tallies import Tally
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.run.sharding import replica_share

ANSWER_ALLOWANCE = 16
"""Tokens allowed past 2·B_t for `</think>` and the boxed answer."""


def eligible_positions(
    documents: list[np.ndarray], tokenizer: Tokenizer, min_context: int
) -> np.ndarray:
    """Flat bool over all tokens: enough context and a target that has text (docs/method.md,
    "Which positions")."""
    empty = np.array([len(b) == 0 for b in tokenizer.token_bytes(range(tokenizer.vocab_size))])
    flags = []
    for tokens in documents:
        doc = ~empty[tokens]
        doc[:min_context] = False
        flags.append(doc)
    return np.concatenate(flags)


def document_window(
    document: np.ndarray, positions: list[int], seq_length: int
) -> tuple[np.ndarray, list[int]]:
    """At most `seq_length + 1` tokens of `document` that contain the last RL position, and the
    positions re-based to the window."""
    start = max(0, min(max(positions) + 1, len(document)) - seq_length - 1)
    window = document[start : start + seq_length + 1]
    return window, [p - start for p in positions if p - start >= 0]


def max_step_sequences(config: RMTConfig, dp_rank: int, dp_size: int) -> int:
    """The most training sequences `StepBatchBuilder.build` gives replica `dp_rank` of
    `dp_size` in a step: a rollout per prompt and group member, plus one NTP window per prompt
    with NTP on; without RL, one NTP window per prompt."""
    prompts = len(replica_share(config.rollout.prompts_per_step, dp_rank, dp_size))
    if config.loss.rl_weight == 0:
        return prompts
    return prompts * (config.rollout.group_size + int(config.loss.ntp_weight > 0))


@dataclass
class StepBatches:
    """What `StepBatchBuilder.build` returns for one step on this rank."""

    micro_batches: list[dict[str, torch.Tensor]]
    seq_length: int
    stats: Tally
    budget: int | None
    probs: tuple[float, float, float] | None
    loss_tokens: int
    """RL + NTP tokens of the step over all data-parallel ranks."""
    rollout_tokens: int
    rollout_seconds: float


class StepBatchBuilder:
    """Builds each step's micro-batches for data-parallel replica `dp_rank` of `dp_size`.

    engine: generates the rollouts (a `RolloutEngine` over this rank's stage of the policy, or
    anything with its `generate`). train_entropy: the proxy's entropy at every token of
    `documents` (flat, NaN where unscored); needed to draw RL positions (config.loss.rl_weight >
    0), unused otherwise. With RL on and None, the builder only serves evaluation (`budget`;
    --skip-train) and `build` refuses. The step's token counts are summed over the replicas'
    process group when there is one (`parallel.data_parallel_all_reduce`)."""

    def __init__(
        self,
        config: RMTConfig,
        engine,
        tokenizer: Tokenizer,
        documents: list[np.ndarray],
        train_entropy: np.ndarray | None,
        dp_rank: int = 0,
        dp_size: int = 1,
    ) -> None:
        self.config = config
        self.engine = engine
        self.tokenizer = tokenizer
        self.documents = documents
        self.rl = config.loss.rl_weight > 0
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])])
        self.dp_rank, self.dp_size = dp_rank, dp_size
        if config.rollout.prompts_per_step % self.dp_size:
            raise ConfigError(
                f"rollout.prompts_per_step={config.rollout.prompts_per_step} "
                f"must be divisible by the data-parallel size {self.dp_size}",
                field="rollout.prompts_per_step",
            )
        if self.rl and train_entropy is None:  # evaluation only: no positions to draw
            self.tiers = self.sampler = None
        elif self.rl:
            eligible = eligible_positions(documents, tokenizer, config.curriculum.min_context)
            if not eligible.any():
                raise DatasetError(
                    f"no training position has curriculum.min_context="
                    f"{config.curriculum.min_context} tokens of context before a target with "
                    f"text (the longest document has {max(len(d) for d in documents)} tokens): "
                    "use longer documents or lower --rmt-min-context"
                )
            if not (train_entropy[eligible] >= config.curriculum.tier_thresholds[0]).any():
                raise DatasetError(
                    "every eligible training position has a difficulty below the lowest tier "
                    f"threshold {config.curriculum.tier_thresholds[0]}: lower "
                    "--rmt-tier-thresholds (or score with another --rmt-proxy-checkpoint)"
                )
            self.tiers = assign_tiers(train_entropy, config.curriculum.tier_thresholds, eligible)
            self.sampler = CurriculumSampler(self.tiers, config.train.seed)
        else:  # NTP only: walk the documents without replacement
            self.tiers = None
            self.sampler = CurriculumSampler(
                np.zeros(len(documents), dtype=np.int8), config.train.seed
            )

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def budget(self, step: int) -> int | None:
        """B_t, or None when the dynamic budget is off (`budget.budget_or_none`)."""
        return budget_or_none(step, self.config.train.train_iters, self.config.budget)

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            self.config.train.seed * 1_000_003 + step * 7919 + self.dp_rank
        )

    def _locate(self, flat: np.ndarray) -> list[tuple[int, int]]:
        docs = np.searchsorted(self.offsets, flat, side="right") - 1
        return [(int(d), int(f - self.offsets[d])) for d, f in zip(docs, flat, strict=True)]

    def _draw(self, step: int) -> tuple[tuple[float, float, float] | None, np.ndarray, np.ndarray]:
        """Step `step`'s tier probabilities p_t (None without the curriculum) and its drawn
        positions and their tiers, over all replicas."""
        probs = (
            tier_probabilities(step, self.config.train.train_iters, self.config.curriculum)
            if self.rl and self.config.curriculum.enabled
            else None
        )
        return (probs, *self.sampler.sample(self.config.rollout.prompts_per_step, probs))

    def skip(self, step: int) -> None:
        """Draw step `step`'s positions and build nothing: replaying steps 0 … k−1 leaves the
        sampler as building them would (a resume whose checkpoint does not hold its state)."""
        self._draw(step)

    def build(self, step: int) -> StepBatches:
        if self.sampler is None:
            raise RuntimeError(
                "this builder was made without the training set's difficulty "
                "scores (evaluation only): it cannot draw RL positions"
            )
        config = self.config
        stats = Tally()
        budget = self.budget(step)
        probs, drawn, drawn_tiers = self._draw(step)
        mine = list(replica_share(len(drawn), self.dp_rank, self.dp_size))
        sequences: list[TrainingSequence] = []
        rollout_tokens, rollout_seconds = 0, 0.0
        if self.rl:
            sequences, rollout_tokens, rollout_seconds = self._rl_sequences(
                step, budget, self._locate(drawn[mine]), drawn_tiers[mine], stats
            )
        else:
            for doc in drawn[mine]:
                window, _ = document_window(self.documents[doc], [0], config.model.seq_length)
                sequences.append(ntp_sequence(window.tolist(), ()))
        counts = torch.tensor(
            [sum(s.rl_tokens for s in sequences), sum(s.ntp_tokens for s in sequences)],
            dtype=torch.float64,
        )
        parallel.data_parallel_all_reduce(counts)
        weights = token_weights(
            int(counts[0]), int(counts[1]), config.loss.rl_weight, config.loss.ntp_weight
        )
        if not sequences:  # every group filtered out: still join the collective step
            sequences = [TrainingSequence([self.tokenizer.eos_id] * 2, excluded={1})]
        width = max(len(s.tokens) for s in sequences) - 1
        micro = collate(
            sequences, config.train.micro_batch_size, width, self.tokenizer.eos_id, *weights
        )
        return StepBatches(
            micro, width, stats, budget, probs, int(counts.sum()), rollout_tokens, rollout_seconds
        )

    def _rl_sequences(self, step, budget, positions, tiers, stats):
        config, tokenizer = self.config, self.tokenizer
        prompts = [
            build_prompt(
                tokenizer, self.documents[d][:p].tolist(), budget, config.rollout.max_prompt_length
            )
            for d, p in positions
        ]
        cap = (
            config.rollout.max_response_length
            if budget is None
            else rollout_token_cap(budget, config.rollout.max_response_length, ANSWER_ALLOWANCE)
        )
        started = time.time()
        rollouts = self.engine.generate(
            prompts,
            group_size=config.rollout.group_size,
            max_new_tokens=cap,
            temperature=config.rollout.temperature,
            top_p=config.rollout.top_p,
            generator=self._generator(step),
        )
        seconds = time.time() - started
        scores = score_groups(
            [tokenizer.token_bytes(r.tokens) for r in rollouts],
            [r.finished for r in rollouts],
            [tokenizer.token_bytes(self.documents[d][p:].tolist()) for d, p in positions],
            [int(t) for t in tiers],
            budget,
            config,
            stats,
        )
        group = config.rollout.group_size
        sequences = [
            rl_sequence(
                prompts[r.prompt_index],
                r.tokens,
                float(scores.advantages[r.prompt_index, i % group]),
            )
            for i, r in enumerate(rollouts)
            if scores.keep[r.prompt_index]
        ]
        if config.loss.ntp_weight > 0:
            by_doc: dict[int, list[int]] = {}
            for doc, pos in positions:
                by_doc.setdefault(doc, []).append(pos)
            for doc, doc_positions in sorted(by_doc.items()):
                window, rebased = document_window(
                    self.documents[doc], doc_positions, config.model.seq_length
                )
                sequences.append(ntp_sequence(window.tolist(), rebased))
        return sequences, sum(len(r.tokens) for r in rollouts), seconds
