"""The candidate pool: a bijective document order, pools that partition it, draws equal to the
whole-corpus sampler's when the corpus fits one pool, tier frequencies within sampling error of
p_t when it does not, a state that continues the same draws, and no-candidate pools skipped."""

import numpy as np
import pytest

from rmt_megatron.errors import DatasetError
from rmt_megatron.method.curriculum import CurriculumSampler
from rmt_megatron.run.candidate_pool import CandidatePool, DocumentOrder

THRESHOLDS = (0.5, 1.0, 2.0)


def corpus(count: int, seed: int = 0) -> list[np.ndarray]:
    """Documents of 5–40 'tokens' whose values are their difficulty ×100 (0–3 nats)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 300, rng.integers(5, 40)) for _ in range(count)]


def difficulty(documents, part) -> np.ndarray:
    return np.concatenate(documents).astype(np.float32) / 100


def tiers_by_threshold(documents, entropy) -> np.ndarray:
    tiers = np.searchsorted(THRESHOLDS, entropy, side="right").astype(np.int8) - 1
    if not (tiers >= 0).any():
        raise DatasetError("no candidate")
    return tiers


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 1000, 4097])
def test_the_document_order_is_a_permutation_and_changes_with_the_epoch(count):
    order = DocumentOrder(count, seed=3)
    first = order.documents(0, 0, count)
    assert sorted(first.tolist()) == list(range(count))
    assert (order.documents(0, 5, count) == first[5:]).all()  # per index, any slice
    if count >= 64:
        assert (order.documents(1, 0, count) != first).any()
        assert (DocumentOrder(count, seed=4).documents(0, 0, count) != first).any()


def test_a_corpus_that_fits_the_pool_draws_as_the_whole_corpus_sampler():
    docs = corpus(30)
    pool = CandidatePool(docs, 30, 11, difficulty, tiers_by_threshold)
    reference = CurriculumSampler(tiers_by_threshold(docs, difficulty(docs, None)), 11)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    for probs in [(0.6, 0.3, 0.1)] * 40:  # past the sampler's own epochs
        pairs, tiers = pool.sample(8, probs)
        flat, ref_tiers = reference.sample(8, probs)
        assert [offsets[d] + p for d, p in pairs] == flat.tolist()
        assert (tiers == ref_tiers).all() and pool.refills == 0


def test_pools_partition_the_order_and_only_pool_documents_are_scored():
    docs = corpus(50)
    scored: list[int] = []

    def counting(documents, part):
        scored.append(len(documents))
        return difficulty(documents, part)

    pool = CandidatePool(docs, 8, 5, counting, tiers_by_threshold)
    seen = set(pool.ids.tolist())
    while pool.refills < pool.pools_per_epoch - 1:
        pool.sample(sum(pool.sampler.left_this_epoch) + 1, None)  # forces the next pool
        seen |= set(pool.ids.tolist())
    assert seen == set(range(50)) and pool.pools_per_epoch == 7
    assert max(scored) == 8 and sum(scored) == 50  # one epoch: every document scored once


def test_tier_frequencies_follow_p_t_within_sampling_error():
    """10 000 draws of p_t = (0.5, 0.3, 0.2) from pools of 40 of 400 documents: each tier's
    share is within 4 standard errors of its probability (the pools hold every tier)."""
    pool = CandidatePool(corpus(400, seed=1), 40, 2, difficulty, tiers_by_threshold)
    probs = (0.5, 0.3, 0.2)
    drawn = np.concatenate([pool.sample(50, probs)[1] for _ in range(200)])
    assert pool.refills > 3
    for tier, p in enumerate(probs):
        share = (drawn == tier).mean()
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / len(drawn)), (tier, share)


def test_a_pool_restored_from_its_state_continues_the_same_draws():
    docs = corpus(200)
    pool = CandidatePool(docs, 16, 9, difficulty, tiers_by_threshold)
    for _ in range(30):
        pool.sample(12, (0.2, 0.5, 0.3))
    assert pool.refills > 0
    restored = CandidatePool(docs, 16, 9, difficulty, tiers_by_threshold)
    restored.load_state_dict(pool.state_dict())
    for _ in range(30):
        assert pool.sample(12, (0.2, 0.5, 0.3))[0] == restored.sample(12, (0.2, 0.5, 0.3))[0]


def test_pools_without_a_candidate_are_skipped_and_a_corpus_without_any_is_named():
    docs = corpus(40)
    easy = [np.zeros(len(d), dtype=np.int64) for d in docs]  # difficulty 0: below every tier
    mixed = easy[:30] + docs[30:]
    pool = CandidatePool(mixed, 10, 0, difficulty, tiers_by_threshold)
    pairs, _ = pool.sample(5, None)
    assert all(d >= 30 for d, _ in pairs)  # only the hard documents hold candidates
    with pytest.raises(DatasetError, match="no candidate"):
        CandidatePool(easy, 10, 0, difficulty, tiers_by_threshold)
