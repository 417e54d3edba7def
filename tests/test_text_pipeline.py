"""Corpus, tokenizer, prompt and the rollout stop rule (no model needed)."""

import pytest
from helpers import byte_level_tokenizer

from rmt_megatron.builtin.corpus import arithmetic_documents, document_text, reasoning_at
from rmt_megatron.errors import TokenizerError
from rmt_megatron.method.answer_format import FORMAT_SYMBOLS, AnswerStop
from rmt_megatron.method.prompt import THINK_START, build_prompt, prompt_header
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [document_text(d) for d in arithmetic_documents(300, seed=0)]
    texts += [prompt_header(b) for b in range(1, 50)]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "t.model", 320)


def test_corpus_is_deterministic_and_its_numbers_add_up():
    docs = arithmetic_documents(50, seed=3)
    assert [document_text(d) for d in docs] == [
        document_text(d) for d in arithmetic_documents(50, seed=3)
    ]
    for doc in docs:
        for segment in doc:
            if segment.reasoning:
                expression, result = segment.reasoning.split("=")
                assert eval(expression) == int(result) == int(segment.text)
    text = document_text(docs[0])
    computed = next(s for s in docs[0] if s.reasoning)
    offset = text.index(computed.text, text.index(" so "))
    assert reasoning_at(docs[0], offset + 1) == computed.reasoning


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
