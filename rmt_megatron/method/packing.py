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

Packed (`pack=True`): several sequences share a row, placed first-fit in decreasing length order,
one after another; the label that would predict the next sequence's first token carries no loss
(it is in neither mask), `position_ids` restart at 0 for each sequence, and one more key,

    segments                       int64 (which sequence of the row an input belongs to, from 0;
                                          -1 for padding)

tells the forward step to let a token attend only to earlier tokens of its own sequence. Each
token then sees what it sees alone in a padded row, so the losses are those of the padded layout
(up to the rounding of RoPE's angles at other absolute positions), over fewer rows.
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
    pack: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of `micro_batch_size` rows, each padded to `seq_length` labels (sequences
    have at most `seq_length + 1` tokens): one sequence a row, or with `pack` as many as fit
    (`pack_rows`; module docstring). The last micro-batch is filled up with padding rows that
    carry no loss, so every micro-batch has one shape (pipeline stages exchange fixed shapes)."""
    rows = pack_rows(sequences, seq_length + 1) if pack else [[s] for s in sequences]
    return collate_rows(
        rows, micro_batch_size, seq_length, pad_id, rl_token_weight, ntp_token_weight
    )


def collate_rows(
    rows: Sequence[Sequence[TrainingSequence]],
    micro_batch_size: int,
    seq_length: int,
    pad_id: int,
    rl_token_weight: float,
    ntp_token_weight: float,
) -> list[dict[str, torch.Tensor]]:
    """`collate` of sequences already laid out in rows (one or several a row). A micro-batch
    with a row of several sequences carries `segments`."""
    lengths = [sum(len(s.tokens) for s in row) for row in rows]
    too_long = [n for n in lengths if n > seq_length + 1]  # pack_rows overfills only a lone one
    if too_long:
        raise ValueError(
            f"a sequence of {max(too_long)} tokens does not fit seq_length="
            f"{seq_length}: raise --seq-length or shorten prompts/responses"
        )
    batches = []
    for start in range(0, len(rows), micro_batch_size):
        chunk = rows[start : start + micro_batch_size]
        batch = _micro_batch(chunk, micro_batch_size, seq_length, pad_id)
        if all(len(row) == 1 for row in chunk):
            del batch["segments"]  # one sequence a row: the causal mask is all it needs
        rl_mask, ntp_mask = batch["rl_mask"], batch["ntp_mask"]
        batch["loss_weight"] = (rl_mask * rl_token_weight + ntp_mask * ntp_token_weight).float()
        batches.append(batch)
    return batches


def pack_rows(sequences: Sequence[TrainingSequence], capacity: int) -> list[list[TrainingSequence]]:
    """`sequences` grouped into rows of at most `capacity` tokens: first fit, longest first
    (ties in their given order)."""
    rows: list[list[TrainingSequence]] = []
    room: list[int] = []
    for sequence in sorted(sequences, key=lambda s: -len(s.tokens)):
        row = next((i for i, free in enumerate(room) if free >= len(sequence.tokens)), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(sequence)
        room[row] -= len(sequence.tokens)
    return rows


def _micro_batch(
    rows: Sequence[Sequence[TrainingSequence]], size: int, seq_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """The tensors of one micro-batch of `size` rows (missing rows are padding), without
    `loss_weight`."""
    tokens = torch.full((size, seq_length + 1), pad_id, dtype=torch.long)
    positions = torch.arange(seq_length + 1).repeat(size, 1)  # padding keeps counting
    segments = torch.full((size, seq_length + 1), -1, dtype=torch.long)
    rl_mask = torch.zeros(size, seq_length, dtype=torch.bool)
    ntp_mask = torch.zeros(size, seq_length, dtype=torch.bool)
    advantages = torch.zeros(size, seq_length)
    for row, packed in enumerate(rows):
        start = 0
        for segment, sequence in enumerate(packed):
            length = len(sequence.tokens)
            end = start + length
            tokens[row, start:end] = torch.tensor(sequence.tokens)
            positions[row, start:end] = torch.arange(length)
            segments[row, start:end] = segment
            if sequence.rl_from is not None:
                rl_mask[row, start + sequence.rl_from : end - 1] = True
                advantages[row, start + sequence.rl_from : end - 1] = sequence.advantage
            else:
                ntp_mask[row, start : end - 1] = True
                for pos in sequence.excluded:
                    if 1 <= pos < length:
                        ntp_mask[row, start + pos - 1] = False
            start = end
    return {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "position_ids": positions[:, :-1].contiguous(),
        "segments": segments[:, :-1].contiguous(),
        "rl_mask": rl_mask,
        "ntp_mask": ntp_mask,
        "advantages": advantages,
    }


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
