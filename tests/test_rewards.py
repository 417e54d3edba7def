"""Prediction extraction, match rewards and reasoning length."""

import pytest

from rmt_megatron.config.sections import RewardConfig
from rmt_megatron.method.rewards import (
    exact_match_reward,
    extract_prediction,
    prefix_match_reward,
    reasoning_length,
    score_rollout,
)

# The true continuation " the area is" tokenised as [" the", " area", " is"].
CONTINUATION = [b" the", b" area", b" is"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>hmm</think> so \\boxed{ the}", " the"),
        ("<think>a</think>\\boxed{x} then \\boxed{ y}", " y"),
        ("<think>a</think>\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("<think>\\boxed{early}</think> no box after", None),
        ("<think>never closed \\boxed{x}", None),
        ("<think>a</think>\\boxed{unclosed", None),
        ("<think>a</think>\\boxed{ok} \\boxed{unclosed", "ok"),
        ("<think>a</think>\\boxed{}", ""),
    ],
)
def test_extract_prediction(response, expected):
    assert extract_prediction(response) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (b" the", 1.0),  # one correct token
        (b" the area", 1.0),  # correct multi-token prefix ending on a boundary
        (b" the area is", 1.0),  # the whole continuation
        (b" the ar", 0.0),  # correct bytes but ends mid-token
        (b"the", 0.0),  # leading-space mismatch
        (b" a", 0.0),  # wrong token
        (b"", 0.0),  # empty box
        (None, 0.0),  # invalid format
        (b" the area is now", 0.0),  # runs past the known continuation
    ],
)
def test_prefix_match_reward(prediction, expected):
    assert prefix_match_reward(prediction, CONTINUATION) == expected


def test_exact_match_reward_accepts_only_the_next_token():
    assert exact_match_reward(b" the", b" the") == 1.0
    assert exact_match_reward(b" the area", b" the") == 0.0
    assert exact_match_reward(b"the", b" the") == 0.0
    assert exact_match_reward(None, b" the") == 0.0
    assert exact_match_reward(b"", b"") == 0.0


def test_prefix_match_works_on_partial_utf8_tokens():
    # "é" = C3 A9 split over two byte-level tokens: only the full character is on a boundary.
    continuation = [b"\xc3", b"\xa9t"]
    assert prefix_match_reward(b"\xc3\xa9t", continuation) == 1.0
    assert prefix_match_reward(b"\xc3\xa9", continuation) == 0.0


def _tokens(*pieces: str) -> list[bytes]:
    return [piece.encode() for piece in pieces]


def test_reasoning_length_counts_tokens_inside_the_think_block():
    response = _tokens("<think>", "a", " b", " c", "</think>", " \\boxed{", " the", "}")
    assert reasoning_length(response) == 3


def test_reasoning_length_without_open_tag_counts_from_the_start():
    # The chat template opened <think> in the prompt.
    assert reasoning_length(_tokens("a", " b", "</think>", "\\boxed{x}")) == 2


def test_reasoning_length_without_close_tag_is_the_whole_response():
    assert reasoning_length(_tokens("<think>", "a", " b", " c")) == 4


def test_reasoning_length_with_tags_split_across_tokens():
    response = _tokens("<th", "ink>x", " y", "</", "think>", "\\boxed{z}")
    # "ink>x" holds reasoning text after the tag; " y" too; "</" starts the close tag.
    assert reasoning_length(response) == 2


def test_score_rollout_combines_match_and_length():
    config = RewardConfig(length_weight=0.2, match_rule="exact")
    response = _tokens("<think>", "a", " b", "</think>", "\\boxed{", " the", "}")
    on_budget = score_rollout(response, CONTINUATION, budget=2, config=config)
    assert (on_budget.match, on_budget.length, on_budget.reasoning_tokens) == (1.0, 1.0, 2)
    assert on_budget.total == pytest.approx(1.0)
    assert on_budget.valid_format
    over = score_rollout(response, CONTINUATION, budget=1, config=config)
    assert over.length == 0.0 and over.total == pytest.approx(0.8)


def test_score_rollout_without_budget_is_the_match_alone_and_prefix_rule_is_used():
    config = RewardConfig(match_rule="prefix")
    response = _tokens("<think>", "x", "</think>", "\\boxed{ the area}")
    scored = score_rollout(response, CONTINUATION, budget=None, config=config)
    assert (scored.total, scored.match, scored.length) == (1.0, 1.0, 0.0)
    exact = score_rollout(response, CONTINUATION, budget=None, config=RewardConfig())
    assert exact.total == 0.0


def test_score_rollout_missing_close_tag_earns_nothing_for_the_match():
    response = _tokens("<think>", "a", "\\boxed{ the}")
    scored = score_rollout(response, CONTINUATION, budget=3, config=RewardConfig())
    assert not scored.valid_format and scored.match == 0.0
    assert scored.reasoning_tokens == 3 and scored.length == pytest.approx(1.0)


def test_score_rollout_needs_a_continuation():
    with pytest.raises(ValueError, match="continuation"):
        score_rollout(_tokens("x"), [], budget=1, config=RewardConfig())
