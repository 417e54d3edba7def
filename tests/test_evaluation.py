"""Which held-out positions are evaluated."""

import numpy as np

from rmt_megatron.run.evaluation import sample_eval_positions


def test_eval_positions_are_eligible_above_the_threshold_and_fixed_by_their_own_seed():
    documents = [np.arange(10), np.arange(6)]
    entropy = np.linspace(0.0, 3.0, 16)
    eligible = np.ones(16, dtype=bool)
    eligible[[9, 15]] = False  # e.g. the end-of-text target of each document
    eligible[:3] = False  # too little context
    positions = sample_eval_positions(documents, entropy, eligible, 0.5, 100, seed=0)
    flat = [p.position + (10 if p.document else 0) for p in positions]
    assert flat == [i for i in range(16) if eligible[i] and entropy[i] > 0.5]
    some = sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=0)
    assert some == sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=0)
    assert some != sample_eval_positions(documents, entropy, eligible, 0.5, 4, seed=1)


def test_held_out_positions_come_from_a_pool_of_the_split_when_it_is_larger(tmp_path):
    """A held-out split of 30 documents and pools of 8: positions are drawn from the split's
    first pool (its documents' ids in the split), scored pool-wise; a pool of 30 is the split."""
    from dataclasses import replace

    from rmt_megatron.builtin.corpus import arithmetic_documents
    from rmt_megatron.builtin.datasets import ASSETS, TOKENIZER_FILE, encode_document
    from rmt_megatron.config.presets import get_preset
    from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
    from rmt_megatron.run.candidate_pool import DocumentOrder
    from rmt_megatron.run.evaluation import held_out_positions

    tokenizer = SentencePieceTokenizer(ASSETS / TOKENIZER_FILE)
    documents = [np.asarray(encode_document(tokenizer, d)) for d in arithmetic_documents(30, 3)]
    scored = []

    def score(docs, part):
        scored.append((len(docs), part))
        return np.full(sum(len(d) for d in docs), 1.2)

    config = get_preset("tiny_cpu")
    pooled = replace(config, curriculum=replace(config.curriculum, pool_documents=8))
    positions = held_out_positions(tmp_path / "valid", documents, score, tokenizer, pooled, 20, 4)
    pool = set(DocumentOrder(30, 4).documents(0, 0, 8).tolist())
    assert len(positions) == 20 and {p.document for p in positions} <= pool
    assert scored == [(8, {"seed": 4, "documents": 8, "refill": 0})]
    assert all(p.position < len(documents[p.document]) for p in positions)
    held_out_positions(tmp_path / "valid", documents, score, tokenizer, config, 20, 4)
    assert scored[-1] == (30, None)  # the whole split, keyed as before
