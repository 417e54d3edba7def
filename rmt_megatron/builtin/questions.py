"""Question-answer problems of the built-in world, for post-training (`study.posttrain`).

Mid-training reads stories and predicts their next token; post-training asks questions and wants
the whole answer, a format no mid-training run sees:

    QUESTION_INSTRUCTION + "\\n### Question\\nWhat is 347 + 586?\\n<think>"
    -> "347+586: 7+6=13 4+8+1=13 3+5+1=9 so 933</think>\\boxed{933}"

The answer is the full sum (three or four digit tokens in one box); the reward is 1 when the boxed
text is exactly the sum's digits, else 0. Problems draw operand pairs of one split
(`corpus.pair_split`), so held-out problems ask sums that neither the warm start nor any training
run has seen. The worked solution is the same column working the warm start taught
(`corpus.column_working`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rmt_megatron.builtin.corpus import PAIR_SPLITS, column_working, pair_split
from rmt_megatron.method.answer_format import (
    BOXED_CLOSE,
    BOXED_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    extract_prediction,
    worked_answer,
)
from rmt_megatron.method.tokenizer import Tokenizer

QUESTION_INSTRUCTION = (
    "Answer the question under ### Question. Reason step by step inside "
    f"{THINK_OPEN}{THINK_CLOSE}, then put the whole answer in {BOXED_OPEN}{BOXED_CLOSE}."
)
QUESTION_HEADING = "\n### Question\n"
ANSWER_KINDS = ("correct", "copy", "working", "format")
"""`answer_kind` values: right; the working's sum right but a different number boxed; the
working's sum wrong; no sum at the end of the working or no box after it."""
_WORKING_SUM = re.compile(r"so (\d+)\s*$")


@dataclass(frozen=True)
class Problem:
    """An addition question and its verifiable answer."""

    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def addition_problems(count: int, seed: int, split: str) -> list[Problem]:
    """`count` distinct problems whose operand pairs belong to `split`; the same for the same
    (count, seed, split)."""
    if split not in PAIR_SPLITS:
        raise ValueError(f"split={split!r}: choose one of {PAIR_SPLITS}")
    rng = random.Random(seed)
    problems: dict[tuple[int, int], Problem] = {}
    while len(problems) < count:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        if pair_split(a, b) == split:
            problems.setdefault((a, b), Problem(a, b))
    return list(problems.values())


def question_prompt(tokenizer: Tokenizer, problem: Problem) -> list[int]:
    """Token ids of the question prompt; it ends by opening the think block."""
    text = QUESTION_INSTRUCTION + QUESTION_HEADING + problem.question + "\n" + THINK_OPEN
    return tokenizer.encode(text)


def worked_solution(tokenizer: Tokenizer, problem: Problem) -> list[int]:
    """Token ids of the solution that follows `question_prompt`: the column working, then the
    boxed sum."""
    return tokenizer.encode(worked_answer(column_working(problem.a, problem.b), problem.answer))


def answer_reward(response: str, problem: Problem) -> float:
    """1 if the response boxes exactly the sum's digits after `</think>`, else 0."""
    prediction = extract_prediction(response)
    return float(prediction is not None and prediction.strip() == problem.answer)


def answer_kind(response: str, problem: Problem) -> str:
    """Which of `ANSWER_KINDS` a response is: where a wrong answer went wrong."""
    if answer_reward(response, problem):
        return "correct"
    working, closed, _ = response.partition(THINK_CLOSE)
    found = _WORKING_SUM.search(working.strip())
    if not closed or found is None or extract_prediction(response) is None:
        return "format"
    return "copy" if found.group(1) == problem.answer else "working"
