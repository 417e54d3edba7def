"""The candidate pool: the documents the curriculum draws RL positions from, scored where used.

A corpus of N documents is walked in a seeded pseudo-random order (`DocumentOrder`, a bijection
of range(N) computed per index: nothing per document is stored). The pool holds the next
D = `pool_documents` documents of that order: their tokens' difficulty is scored by the proxy
(`score(documents, part)`, which caches each pool's scores), their eligible positions are tiered,
and a `CurriculumSampler` draws from the pool's tiers as it would from the whole corpus: each
slot's tier with probability p_t[k] renormalised over the tiers with positions left, positions
without replacement. Before a step could empty a tier it asks for (fewer positions left in a
tier with p_t[k] > 0 than the step draws), the next D documents replace the pool (refill r of
epoch e covers order positions r·D … (r+1)·D − 1; after the last, epoch e + 1 starts a new
order), so each tier keeps its share p_t[k] of the draws. Memory and scoring therefore grow
with D, not with N (docs/method.md, "Where positions come from").

A corpus of at most D documents is one pool that never refills: its documents in corpus order,
scored in one piece (the dataset's cache file), and the sampler's own epochs continue when its
tiers run out — the draws of a sampler over the whole corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rmt_megatron.errors import DatasetError
from rmt_megatron.mcore.indexed_dataset import document_lengths
from rmt_megatron.method.curriculum import CurriculumSampler

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 values (a bijective integer hash)."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


class DocumentOrder:
    """A pseudo-random permutation of range(`count`) per (seed, epoch), computed per index.

    A 4-round Feistel network over the smallest domain of 2^(2h) ≥ count values (round keys from
    seed, epoch and round), with cycle walking: an index that lands outside range(count) is
    permuted again until it lands inside, which keeps the map a bijection of range(count). The
    domain is under 4·count, so a walk takes under 4 rounds of the network on average."""

    def __init__(self, count: int, seed: int) -> None:
        if count < 1:
            raise ValueError("a document order needs at least one document")
        self.count, self.seed = count, seed
        self.half_bits = max(1, ((count - 1).bit_length() + 1) // 2)
        self.half_mask = np.uint64((1 << self.half_bits) - 1)

    def _network(self, values: np.ndarray, epoch: int) -> np.ndarray:
        half = np.uint64(self.half_bits)
        left, right = values >> half, values & self.half_mask
        for round_ in range(4):
            key = _mix(np.array([self.seed, epoch, round_], dtype=np.uint64)).sum(dtype=np.uint64)
            with np.errstate(over="ignore"):
                left, right = right, left ^ (_mix(right + key) & self.half_mask)
        return (left << half) | right

    def documents(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """The documents at order positions [start, stop) of `epoch` (int64)."""
        values = np.arange(start, stop, dtype=np.uint64)
        values = self._network(values, epoch)
        outside = values >= np.uint64(self.count)
        while outside.any():
            values[outside] = self._network(values[outside], epoch)
            outside = values >= np.uint64(self.count)
        return values.astype(np.int64)


def pool_members(
    count: int, pool_documents: int, seed: int, refill: int
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The documents (sorted int64 ids) of pool `refill` of a corpus of `count` documents walked
    `pool_documents` at a time in the `DocumentOrder` of `seed`, and the part that names the pool
    for the scores' cache. A corpus of at most `pool_documents` documents is one pool: all of
    them in corpus order, and part None (the whole dataset's cache)."""
    if pool_documents >= count:
        return np.arange(count, dtype=np.int64), None
    epoch, index = divmod(refill, -(-count // pool_documents))
    stop = min((index + 1) * pool_documents, count)
    ids = DocumentOrder(count, seed).documents(epoch, index * pool_documents, stop)
    return np.sort(ids), {"seed": seed, "documents": pool_documents, "refill": refill}


Scores = Callable[[Sequence[np.ndarray], dict[str, Any] | None], np.ndarray]
"""`score(documents, part)`: the proxy's entropy at every token of `documents` (flat float32,
NaN where unscored); `part` names the pool for the cache (None: the whole corpus)."""

Tiering = Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]
"""`tiers(documents, entropy)`: the tier of every token of `documents` (flat int8, −1 where not
a candidate), or a `DatasetError` saying why none is."""


def _no_refill(documents, part):
    raise AssertionError("a pool of the whole corpus never refills")


class CandidatePool:
    """RL positions for the steps, drawn from a pool of the corpus (module docstring)."""

    def __init__(
        self,
        documents: Sequence[np.ndarray],
        pool_documents: int,
        seed: int,
        score: Scores,
        tiers: Tiering,
    ) -> None:
        self.documents, self.seed = documents, seed
        self.score, self.tiering = score, tiers
        self.size = min(pool_documents, len(documents))
        self.whole_corpus = self.size == len(documents)
        self.pools_per_epoch = -(-len(documents) // self.size)
        self.refills = 0
        self._fill(0)

    # ---- which documents -----------------------------------------------------------------

    def _fill(self, refill: int) -> None:
        """Make pool `refill` or, where it has no candidate, the next one that has; after a
        whole epoch of pools without one, the tiering's `DatasetError`."""
        error: DatasetError | None = None
        for attempt in range(refill, refill + self.pools_per_epoch):
            ids, part = pool_members(len(self.documents), self.size, self.seed, attempt)
            docs = [self.documents[int(i)] for i in ids]
            try:
                tiers = self.tiering(docs, self.score(docs, part))
            except DatasetError as no_candidate:
                error = no_candidate
                continue
            self.refills, self.ids = attempt, ids
            self.offsets = np.concatenate([[0], np.cumsum(document_lengths(docs))])
            self.sampler = CurriculumSampler(tiers, self._sampler_seed(attempt))
            if self.whole_corpus:  # never refills: let the proxy behind `score` go
                self.score = _no_refill
            return
        assert error is not None
        raise error

    def _sampler_seed(self, refill: int) -> int:
        if self.whole_corpus:
            return self.seed
        return int(np.random.SeedSequence([self.seed, refill]).generate_state(1)[0])

    # ---- drawing -----------------------------------------------------------------------------

    @property
    def tier_sizes(self) -> list[int]:
        """Candidate positions per tier in the current pool."""
        return self.sampler.pool_sizes

    def sample(
        self, count: int, probs: Sequence[float] | None
    ) -> tuple[list[tuple[int, int]], np.ndarray]:
        """`count` (document, position) pairs and their tiers (int8 `[count]`); refills first
        when the pool has fewer than `count` positions left."""
        if not self.whole_corpus and self._runs_short(count, probs):
            self._fill(self.refills + 1)
        flat, tiers = self.sampler.sample(count, probs)
        local = np.searchsorted(self.offsets, flat, side="right") - 1
        pairs = [
            (int(self.ids[d]), int(f - self.offsets[d])) for d, f in zip(local, flat, strict=True)
        ]
        return pairs, tiers

    def _runs_short(self, count: int, probs: Sequence[float] | None) -> bool:
        """Whether a draw of `count` could empty a tier the draw asks for (p_t[k] > 0) that
        this pool holds; without p_t, whether fewer than `count` positions are left. Refilling
        then keeps each tier's share at p_t: a tier emptied mid-pool would hand its slots to
        the others until the pool ran out."""
        left = self.sampler.left_this_epoch
        if probs is None:
            return sum(left) < count
        return any(
            p > 0 and size > 0 and remaining < count
            for p, size, remaining in zip(probs, self.sampler.pool_sizes, left, strict=True)
        )

    def state_dict(self) -> dict[str, Any]:
        return {"refills": self.refills, "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`: the same pool (its scores come from the cache) and sampler."""
        if "refills" not in state:  # a checkpoint from before pools: the sampler's state alone
            state = {"refills": 0, "sampler": state}
        if state["refills"] != self.refills:
            self._fill(int(state["refills"]))
        self.sampler.load_state_dict(state["sampler"])
