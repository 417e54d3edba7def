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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError, DatasetError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.indexed_dataset import document_lengths
from rmt_megatron.method.budget import budget_or_none, rollout_token_cap
from rmt_megatron.method.curriculum import CurriculumSampler, assign_tiers, tier_probabilities
from rmt_megatron.method.group_scores import score_groups
from rmt_megatron.method.packing import (
    TrainingSequence,
    collate_rows,
    ntp_sequence,
    pack_rows,
    rl_sequence,
    token_weights,
)
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.method.tallies import Tally
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.run.candidate_pool import CandidatePool, Scores
from rmt_megatron.run.sharding import replica_share

ANSWER_ALLOWANCE = 16
"""Tokens allowed past 2·B_t for `</think>` and the boxed answer."""


def eligible_positions(
    documents: Sequence[np.ndarray], tokenizer: Tokenizer, min_context: int
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


def rl_candidates(
    documents: Sequence[np.ndarray],
    entropy: np.ndarray,
    *,
    tokenizer: Tokenizer,
    min_context: int,
    thresholds: Sequence[float],
) -> np.ndarray:
    """The tier of every token of `documents` (flat int8, −1 where not a candidate: not
    eligible, or easier than the lowest threshold); a `DatasetError` naming the cause when no
    token is a candidate."""
    eligible = eligible_positions(documents, tokenizer, min_context)
    if not eligible.any():
        raise DatasetError(
            f"no training position has curriculum.min_context={min_context} tokens of context "
            f"before a target with text (the longest document has "
            f"{int(document_lengths(documents).max())} tokens): use longer documents or lower "
            "--rmt-min-context"
        )
    if not (entropy[eligible] >= thresholds[0]).any():
        raise DatasetError(
            "every eligible training position has a difficulty below the lowest tier "
            f"threshold {thresholds[0]}: lower --rmt-tier-thresholds (or score with another "
            "--rmt-proxy-checkpoint)"
        )
    return assign_tiers(entropy, thresholds, eligible)


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

    engine: generates the rollouts (`rollout_engines.build_rollout_engine`'s over this rank's
    stage of the policy, or anything with its `generate`). train_entropy: the proxy's entropy at
    every token of `documents` (flat, NaN where unscored); needed to draw RL positions
    (config.loss.rl_weight > 0), unused otherwise. With RL on and None, the builder only serves
    evaluation (`budget`; --skip-train) and `build` refuses. The step's token counts are summed
    over the replicas' process group when there is one (`parallel.data_parallel_all_reduce`)."""

    def __init__(
        self,
        config: RMTConfig,
        engine,
        tokenizer: Tokenizer,
        documents: Sequence[np.ndarray],
        score: Scores | None,
        dp_rank: int = 0,
        dp_size: int = 1,
    ) -> None:
        self.config = config
        self.engine = engine
        self.tokenizer = tokenizer
        self.documents = documents
        self.rl = config.loss.rl_weight > 0
        self.dp_rank, self.dp_size = dp_rank, dp_size
        if config.rollout.prompts_per_step % self.dp_size:
            raise ConfigError(
                f"rollout.prompts_per_step={config.rollout.prompts_per_step} "
                f"must be divisible by the data-parallel size {self.dp_size}",
                field="rollout.prompts_per_step",
            )
        self.pool: CandidatePool | None = None
        self.ntp_sampler: CurriculumSampler | None = None
        if self.rl and score is not None:  # without scores: evaluation only, nothing to draw
            self.pool = CandidatePool(
                documents,
                config.curriculum.pool_documents,
                config.train.seed,
                score,
                partial(
                    rl_candidates,
                    tokenizer=tokenizer,
                    min_context=config.curriculum.min_context,
                    thresholds=config.curriculum.tier_thresholds,
                ),
            )
        elif not self.rl:  # NTP only: walk the documents without replacement
            self.ntp_sampler = CurriculumSampler(
                np.zeros(len(documents), dtype=np.int8), config.train.seed
            )

    def state_dict(self) -> dict:
        return self.pool.state_dict() if self.pool else self.ntp_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.pool:
            self.pool.load_state_dict(state)
        else:
            self.ntp_sampler.load_state_dict(state)

    def budget(self, step: int) -> int | None:
        """B_t, or None when the dynamic budget is off (`budget.budget_or_none`)."""
        return budget_or_none(step, self.config.train.train_iters, self.config.budget)

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            self.config.train.seed * 1_000_003 + step * 7919 + self.dp_rank
        )

    def _draw(self, step: int):
        """Step `step`'s tier probabilities p_t (None without the curriculum), and its draw over
        all replicas: (document, position) pairs and their tiers with RL on, else documents."""
        if self.pool is None and self.ntp_sampler is None:
            raise RuntimeError(
                "this builder was made without the training set's difficulty "
                "scores (evaluation only): it cannot draw RL positions"
            )
        probs = (
            tier_probabilities(step, self.config.train.train_iters, self.config.curriculum)
            if self.rl and self.config.curriculum.enabled
            else None
        )
        count = self.config.rollout.prompts_per_step
        if self.pool is not None:
            return (probs, *self.pool.sample(count, probs))
        return (probs, *self.ntp_sampler.sample(count, None))

    def skip(self, step: int) -> None:
        """Draw step `step`'s positions and build nothing: replaying steps 0 … k−1 leaves the
        sampler as building them would (a resume whose checkpoint does not hold its state)."""
        self._draw(step)

    def build(self, step: int) -> StepBatches:
        config = self.config
        stats = Tally()
        budget = self.budget(step)
        probs, drawn, drawn_tiers = self._draw(step)
        mine = list(replica_share(len(drawn), self.dp_rank, self.dp_size))
        sequences: list[TrainingSequence] = []
        rollout_tokens, rollout_seconds = 0, 0.0
        if self.rl:
            sequences, rollout_tokens, rollout_seconds = self._rl_sequences(
                step, budget, [drawn[i] for i in mine], drawn_tiers[mine], stats
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
        if config.loss.pack_sequences:  # rows as long as the model's (or the longest sequence)
            longest = max(len(s.tokens) for s in sequences)
            rows = pack_rows(sequences, max(longest, config.model.seq_length + 1))
        else:
            rows = [[s] for s in sequences]
        width = max(sum(len(s.tokens) for s in row) for row in rows) - 1  # the fullest row
        micro = collate_rows(
            rows, config.train.micro_batch_size, width, self.tokenizer.eos_id, *weights
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
