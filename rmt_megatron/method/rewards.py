"""Verifiable next-token rewards.

A response is `<think> reasoning </think> ... \\boxed{prediction}`. Everything here works on
token *bytes*, the tokenizer-independent truth: byte-level BPE tokens need not be valid UTF-8 on
their own, and a leading space is part of a token. Text is decoded with `surrogateescape`, so a
prediction re-encodes to exactly the bytes the model produced.

- prediction: `answer_format.extract_prediction`; an invalid answer (None) earns no match reward.
- exact match (RMT): prediction bytes == the next token's bytes.
- prefix match (RPT Eq. 3): prediction bytes == the first l bytes of the true continuation, and l
  is a token boundary of that continuation (so multi-token predictions count).
- reasoning length ℓ: tokens strictly inside `<think>...</think>`; the whole response when
  `</think>` is missing (docs/method.md, "The answer format"). A response that starts inside the
  think block (the chat template opened it) counts from its first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from rmt_megatron.config.sections import RewardConfig
from rmt_megatron.method.answer_format import (
    THINK_CLOSE,
    THINK_OPEN,
    decode_bytes,
    encode_text,
    extract_prediction,
)
from rmt_megatron.method.budget import combined_reward, length_reward


def exact_match_reward(prediction: bytes | None, next_token: bytes) -> float:
    """1 if the prediction is exactly the next token's bytes, else 0 (None scores 0)."""
    return float(prediction is not None and len(prediction) > 0 and prediction == next_token)


def prefix_match_reward(prediction: bytes | None, continuation: Sequence[bytes]) -> float:
    """RPT's reward: 1 if `prediction` equals the continuation's first l bytes and l ends on one
    of its token boundaries; `continuation` is the true tokens from the position on, as bytes."""
    if not prediction:
        return 0.0
    boundaries = set(accumulate(len(token) for token in continuation))
    return float(len(prediction) in boundaries and b"".join(continuation).startswith(prediction))


def reasoning_length(response_tokens: Sequence[bytes]) -> int:
    """ℓ: how many response tokens hold reasoning text between `<think>` and `</think>`.

    A token counts if any of its bytes lie strictly between the end of the first `<think>` (or
    the response start) and the start of the first `</think>` after it. Without `</think>` the
    whole response counts."""
    text = b"".join(response_tokens)
    open_at = text.find(THINK_OPEN.encode())
    inner_start = 0 if open_at < 0 else open_at + len(THINK_OPEN)
    close_at = text.find(encode_text(THINK_CLOSE), inner_start)
    if close_at < 0:
        return len(response_tokens)
    count, offset = 0, 0
    for token in response_tokens:
        end = offset + len(token)
        if end > inner_start and offset < close_at:
            count += 1
        offset = end
    return count


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward of one rollout and its parts."""

    total: float
    """r = (1 - w) * match + w * length (w = 0 when the budget is off)."""
    match: float
    """Match reward, 0 or 1."""
    length: float
    """Triangular length reward (0 when the budget is off)."""
    reasoning_tokens: int
    """ℓ, see `reasoning_length`."""
    valid_format: bool
    """Whether a boxed prediction followed `</think>`."""


def score_rollout(
    response_tokens: Sequence[bytes],
    continuation: Sequence[bytes],
    budget: int | None,
    config: RewardConfig,
) -> RewardBreakdown:
    """Reward one rollout.

    response_tokens: the generated tokens, as bytes. continuation: the true tokens from the
    predicted position on, as bytes (its first entry is the next token; "exact" uses only that).
    budget: B_t, or None when the dynamic budget is off (the reward is then the match alone)."""
    if not continuation:
        raise ValueError("continuation is empty: the true next token is needed to score")
    text = decode_bytes(b"".join(response_tokens))
    predicted = extract_prediction(text)
    prediction = None if predicted is None else encode_text(predicted)
    if config.match_rule == "exact":
        match = exact_match_reward(prediction, continuation[0])
    else:
        match = prefix_match_reward(prediction, continuation)
    ell = reasoning_length(response_tokens)
    if budget is None:
        return RewardBreakdown(match, match, 0.0, ell, prediction is not None)
    r_len = length_reward(ell, budget, config.length_reward_max)
    return RewardBreakdown(
        combined_reward(match, r_len, config), match, r_len, ell, prediction is not None
    )
