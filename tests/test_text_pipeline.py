"""Corpus, tokenizer, prompt and the rollout stop rule (no model needed)."""

import pytest
from helpers import byte_level_tokenizer

from rmt_megatron.builtin.corpus import (
    KINDS,
    PAIR_SPLITS,
    arithmetic_documents,
    column_working,
    document_text,
    pair_split,
    segment_at,
)
from rmt_megatron.errors import TokenizerError
from rmt_megatron.method.answer_format import FORMAT_SYMBOLS, AnswerStop
from rmt_megatron.method.prompt import THINK_START, build_prompt, prompt_header
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [document_text(d) for d in arithmetic_documents(300, seed=0, split="train")]
    texts += [prompt_header(b) for b in range(1, 50)]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "t.model", 320)


def test_corpus_is_deterministic_and_its_numbers_add_up():
    docs = arithmetic_documents(50, seed=3, split="train")
    assert [document_text(d) for d in docs] == [
        document_text(d) for d in arithmetic_documents(50, seed=3, split="train")
    ]
    sums = 0
    for doc in docs:
        numbers = [int(s.text) for s in doc if s.kind != "text"]
        for segment in doc:
            if segment.kind == "computed":
                sums += 1
                operands, working = segment.reasoning.split(": ")
                columns, total = working.split(" so ")
                assert int(total) == int(segment.text) == eval(operands)
                a, b = (str(int(x))[::-1] for x in operands.split("+"))
                carry = 0
                for place, column in enumerate(columns.split()):
                    digits = [int(n[place]) for n in (a, b) if place < len(n)]
                    assert int(column) == sum(digits) + carry
                    carry = int(column) // 10
        # each sum is the previous number (or the first operand) plus the next operand
        assert numbers[2] == numbers[0] + numbers[1]
    assert sums >= 50
    text = document_text(docs[0])
    computed = next(s for s in docs[0] if s.kind == "computed")
    offset = text.index(computed.text, text.index(" so "))
    assert segment_at(docs[0], offset + 2) == (computed, 2)


def test_column_working_carries_digit_by_digit():
    assert column_working(347, 586) == "347+586: 13 13 9 so 933"
    assert column_working(1890, 15) == "1890+15: 5 10 9 1 so 1905"
    assert column_working(999, 1) == "999+1: 10 10 10 so 1000"


def test_operand_pairs_of_a_split_never_appear_in_another():
    assert pair_split(347, 586) == pair_split(586, 347)
    counts = {split: 0 for split in PAIR_SPLITS}
    for a in range(100, 400):
        for b in range(100, 400):
            counts[pair_split(a, b)] += 1
    total = sum(counts.values())
    assert 0.75 < counts["train"] / total < 0.85 and 0.07 < counts["test"] / total < 0.13

    def pairs(split, seed):
        found = set()
        for doc in arithmetic_documents(200, seed, split):
            numbers = [int(s.text) for s in doc if s.kind != "text"]
            found.add(frozenset(numbers[:2]))
            if len(numbers) == 5:
                found.add(frozenset(numbers[2:4]))
        return found

    train, test = pairs("train", 0), pairs("test", 1)
    assert all(pair_split(min(p), max(p)) == "test" for p in test)
    assert not train & test
    with pytest.raises(ValueError, match="choose one of"):
        arithmetic_documents(1, 0, "heldout")


def test_token_kinds_label_each_digit_with_its_number(tokenizer):
    from rmt_megatron.builtin.datasets import encode_document, token_kinds

    doc = arithmetic_documents(1, seed=4, split="train")[0]
    ids = encode_document(tokenizer, doc)
    kinds = token_kinds(tokenizer, doc)
    assert len(kinds) == len(ids)
    pieces = [p.decode() for p in tokenizer.token_bytes(ids)]
    computed = "".join(p for p, k in zip(pieces, kinds, strict=True) if KINDS[k] == "computed")
    operands = "".join(p for p, k in zip(pieces, kinds, strict=True) if KINDS[k] == "operand")
    assert computed == "".join(s.text.strip() for s in doc if s.kind == "computed")
    assert operands == "".join(s.text.strip() for s in doc if s.kind == "operand")


def test_tokenizer_round_trips_and_knows_the_bytes_of_each_token(tokenizer):
    text = "Ben has 12 apples.\n<think>7+5=12</think>\\boxed{ 1} é"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(ids)) == text.encode()
    assert all(tokenizer.piece_id(symbol) > 0 for symbol in FORMAT_SYMBOLS)
    assert tokenizer.token_bytes([tokenizer.eos_id]) == [b""]
    digits = [tokenizer.token_bytes([i])[0] for i in tokenizer.encode("1234")]
    assert digits == [b"1", b"2", b"3", b"4"]


def test_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match=r"missing\.model"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a valid sentencepiece model"):
        SentencePieceTokenizer(bad)


def test_prompt_has_the_budget_clause_and_keeps_the_latest_context(tokenizer):
    context = tokenizer.encode("Ben has 7 apples. Ana gives Ben 5 more, so Ben has ")
    prompt = build_prompt(tokenizer, context, budget=37, max_prompt_length=10_000)
    text = tokenizer.decode(prompt)
    assert "Think for exactly 37 tokens" in text and "### Context\n" in text
    assert text.endswith("so Ben has \n<think>")
    assert "exactly" not in tokenizer.decode(build_prompt(tokenizer, context, None, 10_000))
    fixed = len(build_prompt(tokenizer, [], 37, 10_000))  # instruction and "\n<think>"
    tail = len(tokenizer.encode(THINK_START))
    short = build_prompt(tokenizer, context, 37, fixed + 3)
    assert len(short) == fixed + 3 and short[-tail - 3 : -tail] == context[-3:]
    with pytest.raises(ValueError, match="no room"):
        build_prompt(tokenizer, context, 37, fixed)


@pytest.mark.parametrize(
    ("pieces", "stops_at"),
    [
        ([b"a", b"</th", b"ink>", b"\\boxed{", b" 1", b"}", b"x"], 5),
        ([b"\\boxed{1}", b"</think>", b"\\boxed{", b"{", b"}", b"}"], 5),
        ([b"</think>\\boxed{ 1}"], 0),
        ([b"\\boxed{1}", b"more"], None),
    ],
)
def test_answer_stop(pieces, stops_at):
    stop = AnswerStop()
    done = [stop.feed(piece) for piece in pieces]
    assert (done.index(True) if True in done else None) == stops_at


def test_the_shipped_tokenizer_is_what_the_warm_start_recipe_trains(tmp_path):
    from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE, builtin_documents
    from rmt_megatron.builtin.warmstart import VOCAB_SIZE, tokenizer_texts
    from rmt_megatron.config.presets import tiny_cpu

    texts = tokenizer_texts(builtin_documents("train"), tiny_cpu())
    rebuilt = train_sentencepiece(texts, tmp_path / "t.model", VOCAB_SIZE)
    assert rebuilt.path.read_bytes() == (ASSETS / TOKENIZER_FILE).read_bytes()


def test_hf_byte_level_tokenizer_gives_exact_token_bytes(tmp_path):
    from rmt_megatron.method.rewards import prefix_match_reward
    from rmt_megatron.model_io.checkpoints import load_tokenizer
    from rmt_megatron.model_io.tokenizers import HFTokenizer

    tokenizer = load_tokenizer(byte_level_tokenizer(tmp_path))
    assert isinstance(tokenizer, HFTokenizer)
    text = "Ben has 12 apples. é 日本<think>"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(ids)) == text.encode()
    assert tokenizer.token_bytes([tokenizer.eos_id]) == [b"<|endoftext|>"]
    # "ж" never occurs in the training text: it stays two byte tokens, neither valid UTF-8
    pieces = tokenizer.token_bytes(tokenizer.encode("ж"))
    assert pieces == [b"\xd0", b"\xb6"]
    assert prefix_match_reward("ж".encode(), pieces) == 1.0
    assert prefix_match_reward(b"\xd0", pieces) == 1.0  # a boundary, though half a character
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path / "missing")
