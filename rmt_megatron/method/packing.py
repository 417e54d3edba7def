"""Training sequences of one RMT step, and their micro-batches for Megatron's schedule.

Two kinds of sequence share one packed batch:
- an RL sequence, prompt ⊕ response: the response tokens are RL tokens carrying the rollout's
  advantage;
- an NTP sequence, a document that owns some of the step's RL positions: every token is an NTP
  token except the RL positions (the per-document mask).

Layout: the model reads `tokens[:, :-1]` and predicts `labels = tokens[:, 1:]`, so label index j
is the prediction of token j+1. A micro-batch is a dict of `[b, s]` tensors (batch-first, as
`GPTModel` takes input ids), right-padded to the step's common length `s`:

    tokens, labels, position_ids   int64
    rl_mask, ntp_mask              bool  (disjoint; padding is in neither)
    advantages                     fp32  (the rollout's A on RL tokens, 0 elsewhere)
    loss_weight                    fp32  (w_RL·T/N_RL on RL tokens, λ·T/N_NTP on NTP tokens)

with N_RL, N_NTP the step's token counts over all data-parallel ranks and T = N_RL + N_NTP.
Megatron divides the summed gradient by T (per-token loss mode), which leaves exactly
∇(w_RL·L_RL + λ·L_NTP) with each term a token mean over the whole step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class TrainingSequence:
    """One sequence and which of its labels are RL or NTP tokens."""

    tokens: list[int]
    rl_from: int | None = None
    """RL sequences: the first label index that predicts a response token."""
    advantage: float = 0.0
    excluded: set[int] = field(default_factory=set)
    """NTP sequences: token positions drawn for RL, kept out of the NTP loss."""

    @property
    def rl_tokens(self) -> int:
        return 0 if self.rl_from is None else len(self.tokens) - 1 - self.rl_from

    @property
    def ntp_tokens(self) -> int:
        if self.rl_from is not None:
            return 0
        return len(self.tokens) - 1 - sum(1 for pos in self.excluded if pos >= 1)


def rl_sequence(
    prompt: Sequence[int], response: Sequence[int], advantage: float
) -> TrainingSequence:
    """prompt ⊕ response, with the response's tokens as RL tokens."""
    if not prompt or not response:
        raise ValueError("an RL sequence needs a non-empty prompt and response")
    return TrainingSequence(
        list(prompt) + list(response), rl_from=len(prompt) - 1, advantage=float(advantage)
    )


def ntp_sequence(document: Sequence[int], rl_positions: Iterable[int]) -> TrainingSequence:
    """A document whose tokens at `rl_positions` are left out of the NTP loss."""
    if len(document) < 2:
        raise ValueError("an NTP sequence needs at least two tokens")
    return TrainingSequence(list(document), excluded=set(rl_positions))


def collate(
    sequences: Sequence[TrainingSequence],
    micro_batch_size: int,
    seq_length: int,
    pad_id: int,
    rl_token_weight: float,
    ntp_token_weight: float,
) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of `micro_batch_size` rows, each padded to `seq_length` labels (sequences
    have at most `seq_length + 1` tokens). The last micro-batch is filled up with padding rows
    that carry no loss, so every micro-batch has one shape (pipeline stages exchange fixed
    shapes)."""
    too_long = [len(s.tokens) for s in sequences if len(s.tokens) > seq_length + 1]
    if too_long:
        raise ValueError(
            f"a sequence of {max(too_long)} tokens does not fit seq_length="
            f"{seq_length}: raise --seq-length or shorten prompts/responses"
        )
    batches = []
    for start in range(0, len(sequences), micro_batch_size):
        chunk = sequences[start : start + micro_batch_size]
        rows = micro_batch_size
        tokens = torch.full((rows, seq_length + 1), pad_id, dtype=torch.long)
        rl_mask = torch.zeros(rows, seq_length, dtype=torch.bool)
        ntp_mask = torch.zeros(rows, seq_length, dtype=torch.bool)
        advantages = torch.zeros(rows, seq_length)
        for row, sequence in enumerate(chunk):
            length = len(sequence.tokens)
            tokens[row, :length] = torch.tensor(sequence.tokens)
            if sequence.rl_from is not None:
                rl_mask[row, sequence.rl_from : length - 1] = True
                advantages[row, sequence.rl_from : length - 1] = sequence.advantage
            else:
                ntp_mask[row, : length - 1] = True
                for pos in sequence.excluded:
                    if 1 <= pos < length:
                        ntp_mask[row, pos - 1] = False
        weight = rl_mask * rl_token_weight + ntp_mask * ntp_token_weight
        batches.append(
            {
                "tokens": tokens[:, :-1].contiguous(),
                "labels": tokens[:, 1:].contiguous(),
                "position_ids": torch.arange(seq_length)[None]
                .expand(rows, seq_length)
                .contiguous(),
                "rl_mask": rl_mask,
                "ntp_mask": ntp_mask,
                "advantages": advantages,
                "loss_weight": weight.float(),
            }
        )
    return batches


def token_weights(
    rl_tokens: int, ntp_tokens: int, rl_weight: float, ntp_weight: float
) -> tuple[float, float]:
    """(w_RL·T/N_RL, λ·T/N_NTP) for step-wide counts; an empty set gets weight 0."""
    total = rl_tokens + ntp_tokens
    rl = rl_weight * total / rl_tokens if rl_tokens else 0.0
    ntp = ntp_weight * total / ntp_tokens if ntp_tokens else 0.0
    return rl, ntp


def ntp_batches(
    sequences: Sequence[TrainingSequence], micro_batch_size: int, pad_id: int
) -> tuple[list[dict[str, torch.Tensor]], int]:
    """Micro-batches of a plain next-token-prediction step (no RL tokens, every kept label
    weighted 1, so the loss is the mean over the step's NTP tokens), and their label width: the
    longest sequence's length − 1."""
    width = max(len(s.tokens) for s in sequences) - 1
    tokens = sum(s.ntp_tokens for s in sequences)
    weights = token_weights(0, tokens, 0.0, 1.0)
    return collate(sequences, micro_batch_size, width, pad_id, *weights), width
