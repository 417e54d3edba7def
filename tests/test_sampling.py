"""Seeded sampling from vocab-parallel logits (`mcore.sampling`): the tokens torch's own sampler
draws, the top-p nucleus of its definition, and at TP=2 exactly the tokens of the gathered
logits."""

import pytest
import torch
from ranks import run_ranks

from rmt_megatron.mcore import sampling

SETTINGS = [(0.0, 1.0), (0.8, 1.0), (1.0, 0.9), (0.7, 0.5), (1.3, 0.97)]


def _logits(rows: int, padded: int, seed: int) -> torch.Tensor:
    """Realistic rows: a few dominant tokens over a long tail (Zipf-like), shuffled ids."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, padded + 1, dtype=torch.float)
    base = -1.1 * torch.log(ranks) + 0.5 * torch.randn(rows, padded, generator=generator)
    order = torch.stack([torch.randperm(padded, generator=generator) for _ in range(rows)])
    return 4 * base.gather(1, order)


def _draw(logits, vocab_size, temperature, top_p, seed, start=0):
    return sampling.sample(
        logits,
        vocab_start=start,
        vocab_size=vocab_size,
        temperature=temperature,
        top_p=top_p,
        generator=torch.Generator().manual_seed(seed),
    )


def _nucleus(logits: torch.Tensor, vocab_size: int, temperature: float, top_p: float):
    """The definition in float64: ids by (probability descending, id ascending), kept while the
    mass before them is below top_p."""
    probs = torch.softmax(logits[:, :vocab_size].double() / temperature, dim=-1)
    kept = []
    for row in probs:
        order = sorted(range(vocab_size), key=lambda i: (-row[i].item(), i))
        before, inside = 0.0, set()
        for i in order:
            if before >= top_p:
                break
            inside.add(i)
            before += row[i].item()
        kept.append(inside)
    return kept


def test_without_top_p_it_draws_what_torch_multinomial_draws():
    logits = _logits(24, 515, seed=1)
    logits[:, 500:] = float("-inf")  # what the engine sees past the real vocabulary
    for temperature in (0.6, 0.8, 1.0):
        want = torch.multinomial(
            torch.softmax(logits / temperature, dim=-1),
            1,
            generator=torch.Generator().manual_seed(3),
        ).squeeze(-1)
        got = _draw(logits, 500, temperature, 1.0, seed=3)
        assert torch.equal(got, want)


def test_padding_ids_are_never_drawn_and_temperature_zero_is_argmax():
    logits = _logits(16, 130, seed=2)
    logits[:, 120:] = 50.0  # padding columns that would win if they were read
    assert int(_draw(logits, 120, 1.0, 1.0, seed=0).max()) < 120
    assert torch.equal(_draw(logits, 120, 0.0, 1.0, seed=0), logits[:, :120].argmax(dim=-1))


def test_top_p_draws_only_inside_the_nucleus_and_covers_it(monkeypatch):
    monkeypatch.setattr(sampling, "FIRST_CANDIDATES", 3)  # the search widens several times
    logits = _logits(6, 200, seed=4)
    nucleus = _nucleus(logits, 200, 1.0, 0.8)
    seen: list[set[int]] = [set() for _ in nucleus]
    for seed in range(400):
        for row, token in enumerate(_draw(logits, 200, 1.0, 0.8, seed).tolist()):
            assert token in nucleus[row]
            seen[row].add(token)
    # every token of a small nucleus turns up in 400 draws
    assert all(seen[row] == nucleus[row] for row in range(len(nucleus)) if len(nucleus[row]) < 8)


def test_the_search_width_does_not_change_the_draw(monkeypatch):
    logits = _logits(12, 300, seed=5)
    wide = _draw(logits, 300, 1.0, 0.9, seed=7)
    monkeypatch.setattr(sampling, "FIRST_CANDIDATES", 1)
    assert torch.equal(_draw(logits, 300, 1.0, 0.9, seed=7), wide)


def _on_two_ranks(logits, vocab_size, temperature, top_p, seed, candidates):
    from rmt_megatron.config.sections import ParallelConfig
    from rmt_megatron.mcore import parallel

    sampling.FIRST_CANDIDATES = candidates
    with parallel.process_group(ParallelConfig(tensor_model_parallel_size=2), seed=0):
        shard = logits.shape[1] // 2
        start = parallel.tensor_parallel_rank() * shard
        return _draw(logits[:, start : start + shard], vocab_size, temperature, top_p, seed, start)


@pytest.mark.parametrize("candidates", [256, 2])
def test_two_tensor_parallel_ranks_draw_the_gathered_logits_tokens(candidates):
    """Same seeded noise per vocabulary entry: every rank returns the tokens that one process
    draws from the whole row, for greedy, temperature and top-p, with padding in the last shard."""
    logits = _logits(20, 512, seed=6)
    for temperature, top_p in SETTINGS:
        for seed in (0, 1):
            want = _draw(logits, 509, temperature, top_p, seed)
            got = run_ranks(2, _on_two_ranks, logits, 509, temperature, top_p, seed, candidates)
            assert torch.equal(got[0], want), (temperature, top_p, seed)
            assert torch.equal(got[1], want), (temperature, top_p, seed)
