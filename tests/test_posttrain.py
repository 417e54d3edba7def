"""Post-training's question-answer problems, reward and input checks (the run itself is covered
by the replication smoke test)."""

import pytest

from rmt_megatron.builtin.corpus import pair_split
from rmt_megatron.builtin.datasets import ASSETS, CHECKPOINT_DIR, TOKENIZER_FILE
from rmt_megatron.builtin.questions import (
    Problem,
    addition_problems,
    answer_kind,
    answer_reward,
    question_prompt,
    worked_solution,
)
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.study.posttrain import build_parser
from rmt_megatron.study.posttrain import main as posttrain_main


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceTokenizer(ASSETS / TOKENIZER_FILE)


def test_problems_are_distinct_deterministic_and_of_their_split():
    problems = addition_problems(300, seed=5, split="test")
    assert problems == addition_problems(300, seed=5, split="test")
    assert len({(p.a, p.b) for p in problems}) == 300
    assert all(pair_split(p.a, p.b) == "test" for p in problems)
    train = {frozenset((p.a, p.b)) for p in addition_problems(2000, seed=5, split="train")}
    assert not train & {frozenset((p.a, p.b)) for p in problems}
    with pytest.raises(ValueError, match="choose one of"):
        addition_problems(1, 0, "heldout")


def test_the_worked_solution_earns_the_reward_and_near_misses_do_not(tokenizer):
    problem = Problem(347, 586)
    prompt = tokenizer.decode(question_prompt(tokenizer, problem))
    assert prompt.endswith("What is 347 + 586?\n<think>")
    solution = tokenizer.decode(worked_solution(tokenizer, problem))
    assert solution == "347+586: 7+6=13 4+8+1=13 3+5+1=9 so 933</think>\\boxed{933}"
    assert answer_reward(solution, problem) == 1.0
    assert answer_reward("so 933</think>\\boxed{ 933 }", problem) == 1.0
    for wrong in ("so 933</think>\\boxed{9}", "\\boxed{933}", "</think>\\boxed{9330}", "933"):
        assert answer_reward(wrong, problem) == 0.0


@pytest.mark.parametrize(
    "response, kind",
    [
        ("347+586: 7+6=13 4+8+1=13 3+5+1=9 so 933</think>\\boxed{933}", "correct"),
        ("347+586: 7+6=13 4+8+1=13 3+5+1=9 so 933</think>\\boxed{923}", "copy"),
        ("347+586: 7+6=13 4+8=12 3+5+1=9 so 923</think>\\boxed{923}", "working"),
        ("347+586: 7+6=13 4+8=12 3+5+1=9 so 923</think>\\boxed{933}", "correct"),
        ("347+586: 7+6=13</think>\\boxed{933", "format"),
        ("347+586: 7+6=13 so 933", "format"),
    ],
)
def test_a_wrong_answer_is_classified_by_where_it_went_wrong(response, kind):
    assert answer_kind(response, Problem(347, 586)) == kind


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group-size", "1"], "--group-size must be >= 2"),
        (["--eval-problems", "0"], "eval problems >= 1"),
        (["--temperature", "0"], "--temperature > 0"),
    ],
)
def test_post_training_refuses_bad_settings_with_a_message(tmp_path, capsys, flags, message):
    load = str(ASSETS / CHECKPOINT_DIR)
    code = posttrain_main(["--load", load, "--output", str(tmp_path / "r.json"), *flags])
    assert code == 1 and message in capsys.readouterr().err


def test_every_post_training_flag_says_what_it_sets_and_its_default():
    for action in build_parser()._actions:
        if action.dest not in ("help", "load", "output"):
            assert action.help and f"(default: {action.default})" in action.help, action.dest


def test_post_training_never_overwrites_a_report(tmp_path, capsys):
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    code = posttrain_main(["--load", str(ASSETS / CHECKPOINT_DIR), "--output", str(existing)])
    assert code == 1 and "never overwritten" in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_post_training_needs_a_checkpoint(tmp_path, capsys):
    code = posttrain_main(["--load", str(tmp_path), "--output", str(tmp_path / "r.json")])
    assert code == 1 and "holds no checkpoint" in capsys.readouterr().err
