"""The memory plan (`run.memory_plan`): its parameter counts are the real per-rank models' under
TP and PP layouts; its rollout cache is the one the engine allocates for a step."""

from dataclasses import replace

import pytest
from helpers import SMALL, VOCAB
from ranks import run_ranks

from rmt_megatron.config.presets import qwen3_14b
from rmt_megatron.run.memory_plan import GIB, Layout, main, plan, stage_parameters

UNTIED_QK_NORM = replace(SMALL, qk_layernorm=True)
TIED_QKV_BIAS = replace(SMALL, untie_embeddings_and_output_weights=False, add_qkv_bias=True)


def _real_count(model):
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    with parallel.process_group(model, seed=0):
        built = build_gpt_model(model, VOCAB)
        return parallel.pipeline_stage(), sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize(
    ("model", "tp", "pp"),
    [(UNTIED_QK_NORM, 2, 1), (UNTIED_QK_NORM, 1, 2), (TIED_QKV_BIAS, 1, 2), (TIED_QKV_BIAS, 1, 1)],
)
def test_the_plan_counts_each_rank_s_parameters_as_built(model, tp, pp):
    model = replace(model, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    for stage, count in run_ranks(tp * pp, _real_count, model):
        assert stage_parameters(model, VOCAB, stage) == count


def test_the_14b_preset_fits_one_node_by_chunking_its_rollouts():
    config = qwen3_14b()
    one_node = plan(config, 151936, Layout(1, 8, True, 80.0))[0]
    # 8 TP ranks hold Qwen3-14B's 14,768,307,200 weights, the vocabulary padded to 152576 rows,
    # and each its own copy of the RMSNorm weights (2 x 5120 + 2 x 128 a layer, 5120 final)
    norms = 40 * (2 * 5120 + 2 * 128) + 5120
    padding = 2 * (152576 - 151936) * 5120
    assert 8 * one_node.parameters - 7 * norms == 14_768_307_200 + padding
    # 128 prompts x 8 rollouts, 4096 prompt + (2 x 800 + 16) response positions, 40 layers,
    # K and V of one of the 8 key/value heads per TP rank, 128 wide, bf16
    assert one_node.rollout_kv_cache == 40 * 2 * 1024 * (4096 + 1616) * 1 * 128 * 2
    # the whole step's cache does not fit beside the persistent state; the default budget holds
    # what does, in chunks
    assert one_node.persistent + one_node.rollout_kv_cache > 0.9 * 80 * GIB
    assert one_node.rollout_kv_chunk == int(0.9 * 80 * GIB) - one_node.persistent
    assert one_node.rollout_chunks == 3
    assert one_node.peak(recompute=True) <= 0.9 * 80 * GIB
    eight_nodes = plan(config, 151936, Layout(8, 8, True, 80.0))[0]
    assert eight_nodes.rollout_kv_cache == one_node.rollout_kv_cache // 8
    assert eight_nodes.rollout_chunks == 1
    assert eight_nodes.peak(recompute=True) < 0.9 * 80 * GIB
    whole_step = replace(config, rollout=replace(config.rollout, kv_cache_gib=120.0))
    assert plan(whole_step, 151936, Layout(1, 8, True, 80.0))[0].peak(True) > 80 * GIB


def test_the_plan_command_prints_the_table_and_refuses_a_bad_layout(capsys):
    assert main(["--rmt-preset", "qwen3_14b", "--nodes", "1", "--gpus-per-node", "8"]) == 0
    text = capsys.readouterr().out
    assert "TP 8, PP 1, DP 1" in text and "| 41.0 (3) |" in text and "| yes |" in text
    flags = ["--rmt-preset", "qwen3_14b", "--rmt-rollout-kv-cache-gib", "120"]
    assert main([*flags, "--nodes", "1", "--gpus-per-node", "8"]) == 0
    assert "| NO |" in capsys.readouterr().out
    assert main(["--rmt-preset", "qwen3_14b", "--gpus-per-node", "6"]) == 1
    assert "do not split into TP 8" in capsys.readouterr().err
    assert main(["--nodes", "1"]) == 1  # the tiny preset takes the tokenizer's vocabulary
    assert "give --vocab-size" in capsys.readouterr().err
    assert main(["--nodes", "1", "--gpus-per-node", "1", "--vocab-size", "1000"]) == 0
    tiny = capsys.readouterr().out.splitlines()[4]  # a ~1M-parameter model's sizes, not zeros
    assert tiny.startswith("| 0 | 919 K | 0.0034 |") and "| 0.0 |" not in tiny
