"""Difficulty scoring: vocab-parallel entropies and a resumable scoring pass."""

import json

import numpy as np
import torch
from helpers import VOCAB, layout, save_small_model
from ranks import run_ranks

from rmt_megatron.kernels import topk_entropy_reference

LOGITS = torch.randn(5, 12, generator=torch.Generator().manual_seed(0)) * 3


def _sharded_entropies(world):
    import torch.distributed as dist

    from rmt_megatron.kernels.topk_entropy import vocab_parallel_topk_entropy

    dist.init_process_group("gloo")
    shard = LOGITS.chunk(world, dim=-1)[dist.get_rank()]
    result = vocab_parallel_topk_entropy(shard, 4, dist.group.WORLD)
    dist.destroy_process_group()
    return result


def test_vocab_parallel_topk_entropy_equals_the_single_rank_reference():
    top4 = topk_entropy_reference(LOGITS, 4)
    for topk in run_ranks(2, _sharded_entropies, 2):
        torch.testing.assert_close(topk, top4, rtol=1e-5, atol=1e-6)


DOCUMENTS = [np.arange(2, 2 + n) % VOCAB for n in (7, 3, 12, 5, 9, 4)]


def _score(checkpoint, output, tp):
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.run.difficulty import score_difficulty

    with parallel.process_group(layout(tp), seed=0):
        model = build_gpt_model(layout(tp), VOCAB)
        load_checkpoint(checkpoint, model)
        scores = score_difficulty(
            model,
            DOCUMENTS,
            output,
            top_k=0,
            seq_length=8,
            micro_batch_size=2,
            pad_id=0,
            chunk_documents=2,
            show_progress=False,
        )
    return scores


def test_scoring_windows_tp_dp_and_resume(tmp_path):
    run_ranks(1, save_small_model, str(tmp_path / "ck"))
    reference = run_ranks(1, _score, str(tmp_path / "ck"), str(tmp_path / "a.npy"), 1)[0]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in DOCUMENTS])])
    assert reference.shape == (offsets[-1],)
    assert np.isnan(reference[offsets[:-1]]).all()  # position 0 of each document: no context
    assert np.isfinite(np.delete(reference, offsets[:-1])).all()  # the 12-token doc spans 2 windows
    for rank_scores in run_ranks(2, _score, str(tmp_path / "ck"), str(tmp_path / "b.npy"), 2):
        np.testing.assert_allclose(rank_scores, reference, rtol=1e-5, atol=1e-6)
    # two data-parallel replicas split the windows and exchange their scores
    for rank_scores in run_ranks(2, _score, str(tmp_path / "ck"), str(tmp_path / "d.npy"), 1):
        np.testing.assert_allclose(rank_scores, reference, rtol=1e-5, atol=1e-6)

    # An interrupted pass: two documents done (marked with a sentinel), then part of a chunk a
    # crash cut short before its progress was recorded (dropped), the rest still to do.
    torn = np.concatenate([np.full(offsets[2], 123.0), np.full(3, 999.0)]).astype(np.float32)
    torn.tofile(tmp_path / "c.npy.partial")
    (tmp_path / "c.npy.progress").write_text(json.dumps({"documents": 2}))
    resumed = run_ranks(1, _score, str(tmp_path / "ck"), str(tmp_path / "c.npy"), 1)[0]
    assert (resumed[: offsets[2]] == 123.0).all()  # kept, not recomputed
    np.testing.assert_allclose(resumed[offsets[2] :], reference[offsets[2] :], rtol=1e-6)
    assert not (tmp_path / "c.npy.progress").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), resumed)


POOL_CORPUS = [np.arange(3 + n, 3 + 2 * n + 6) % VOCAB for n in range(20)]


def _pool_draws(checkpoint, scratch):
    """Candidate pools of 4 of 20 documents, each scored when filled (the replicas share the
    windows); the (document, position) pairs of 12 draws of 6."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.method.curriculum import assign_tiers
    from rmt_megatron.run.candidate_pool import CandidatePool
    from rmt_megatron.run.difficulty import score_difficulty

    scored = []
    with parallel.process_group(layout(), seed=0):
        model = build_gpt_model(layout(), VOCAB)
        load_checkpoint(checkpoint, model)

        def score(documents, part):
            scored.append(part["refill"])
            path = f"{scratch}/pool_{part['refill']}_rank{parallel.world_rank()}.npy"
            return score_difficulty(model, documents, path, 0, 8, 2, 0, show_progress=False)

        def tiers(documents, entropy):
            return assign_tiers(entropy, (0.0, 3.0, 4.0), ~np.isnan(entropy))

        pool = CandidatePool(POOL_CORPUS, 4, 7, score, tiers)
        draws = [pool.sample(6, (0.5, 0.3, 0.2))[0] for _ in range(12)]
        world = parallel.data_parallel_rank_and_size()[1]
    return draws, scored, world


def test_data_parallel_replicas_score_their_share_of_each_pool_and_draw_the_same(tmp_path):
    run_ranks(1, save_small_model, str(tmp_path / "ck"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_ranks(1, _pool_draws, str(tmp_path / "ck"), str(tmp_path / "one"))[0]
    first, second = run_ranks(2, _pool_draws, str(tmp_path / "ck"), str(tmp_path / "two"))
    assert first[2] == second[2] == 2  # two data-parallel replicas
    assert first[0] == second[0] == single[0]  # the same positions on every replica
    assert first[1] == single[1] and len(single[1]) > 1  # the same pools, refilled
