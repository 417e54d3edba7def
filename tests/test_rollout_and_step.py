"""The rollout engine and the RMT optimizer step on a small random model, across layouts."""

from dataclasses import replace

import pytest
import torch
from helpers import VOCAB, layout, save_small_model
from ranks import run_ranks

from rmt_megatron.config.sections import LossConfig, TrainConfig
from rmt_megatron.mcore import dynamic_generation
from rmt_megatron.mcore.cpu import uses_transformer_engine

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


def _generate(directory, tp, pp, use_kv_cache, temperature, prompts=PROMPTS, options=None):
    """The rollouts of `prompts` (G = 2, 10 new tokens, top-p 0.9, seed 0), with the engine
    built with `options`; with `options`, also its peak KV cache and its chunks."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.generation import RolloutEngine
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    config = layout(tp, pp)
    with parallel.process_group(config, seed=1):
        model = build_gpt_model(config, VOCAB)
        load_checkpoint(directory, model)
        engine = RolloutEngine(
            model,
            VOCAB - 6,
            token_bytes=lambda ids: [b"}" if i == 3 else b"x" for i in ids],
            hidden_size=config.hidden_size,
            **{"eos_id": 1, **(options or {})},
        )
        rollouts = engine.generate(
            prompts,
            group_size=2,
            max_new_tokens=10,
            temperature=temperature,
            top_p=0.9,
            generator=torch.Generator().manual_seed(0),
            use_kv_cache=use_kv_cache,
        )
    result = [(r.prompt_index, r.tokens, r.finished) for r in rollouts]
    if options is None:
        return result
    return result, engine.peak_kv_cache_bytes, engine.chunks(prompts, 2, 10, engine.kv_budget())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    run_ranks(1, save_small_model, str(directory))
    return str(directory)


def _frequent_token(rollouts) -> int:
    """A token the greedy rollouts emit at several different steps (made the EOS, rows stop at
    different times)."""
    steps: dict[int, set[int]] = {}
    for _, tokens, _ in rollouts:
        for step, token in enumerate(tokens[:-1]):
            steps.setdefault(token, set()).add(step)
    return max(steps, key=lambda token: len(steps[token]))


def test_kv_cache_and_full_recompute_sample_the_same_tokens(checkpoint):
    cached = run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0)[0]
    recomputed = run_ranks(1, _generate, checkpoint, 1, 1, False, 1.0)[0]
    assert cached == recomputed
    assert [index for index, _, _ in cached] == [0, 0, 1, 1, 2, 2]
    assert all(max(tokens) < VOCAB - 6 for _, tokens, _ in cached)  # padded vocab masked


def test_the_cache_compacted_as_rows_finish_samples_what_recompute_samples(checkpoint):
    eos = {"eos_id": _frequent_token(run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0)[0])}
    cached = run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0, PROMPTS, eos)[0][0]
    recomputed = run_ranks(1, _generate, checkpoint, 1, 1, False, 1.0, PROMPTS, eos)[0][0]
    assert len({len(tokens) for _, tokens, _ in cached}) > 1  # rows left at different steps
    assert cached == recomputed


def test_left_padding_does_not_change_a_prompt_s_greedy_continuation(checkpoint):
    batched = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0)[0]
    alone = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, [PROMPTS[1]])[0]
    assert batched[2][1] == alone[0][1]


UNEVEN = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17], [18, 19, 20, 21, 22, 23], [24]]


def test_chunks_under_a_kv_budget_stay_within_it_and_keep_greedy_tokens(checkpoint):
    whole = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN)[0]
    per_position = 2 * layout().num_layers * layout().query_groups * layout().head_dim * 4
    budget = 2 * 2 * (6 + 10) * per_position  # two prompts of the longest length at most
    options = {"kv_cache_bytes": budget, "kv_bytes_per_position": per_position}
    chunked, peak, chunks = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN, options)[0]
    assert chunks == [[0, 1], [2, 3], [4, 5]]  # a third prompt would pass the budget
    assert 0 < peak <= budget
    assert chunked == whole


def test_one_chunk_under_a_budget_that_holds_the_step_draws_the_same_tokens(checkpoint):
    whole = run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0, UNEVEN)[0]
    options = {"kv_cache_bytes": 2**30, "kv_bytes_per_position": 1}
    same, _, chunks = run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0, UNEVEN, options)[0]
    assert chunks == [list(range(len(UNEVEN)))]
    assert same == whole


def test_equal_length_chunks_give_each_prompt_its_unpadded_continuation(checkpoint):
    """What Transformer Engine's attention (which ignores the padding mask) needs, checked with
    the local layers: chunks without padding, each prompt's greedy tokens as if alone."""
    options = {"equal_length_chunks": True}
    batched, _, chunks = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN, options)[0]
    assert chunks == [[5], [1, 3], [2], [0, 4]]
    for index, prompt in enumerate(UNEVEN):
        alone = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, [prompt])[0]
        assert [tokens for i, tokens, _ in batched if i == index] == [t for _, t, _ in alone]


def _greedy_batched_and_alone(prompts):
    """On one rank, a freshly built model's greedy rollouts of `prompts` together and of each
    prompt alone (the engine's own chunking: equal lengths under Transformer Engine)."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.generation import RolloutEngine
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    with parallel.process_group(layout(), seed=3):
        engine = RolloutEngine(
            build_gpt_model(layout(), VOCAB), VOCAB - 6, 1, lambda ids: [b"x"] * len(ids), 32
        )
        settings = dict(
            group_size=2, max_new_tokens=8, temperature=0.0, top_p=1.0, use_kv_cache=True
        )
        generator = torch.Generator().manual_seed(0)
        batched = engine.generate(prompts, generator=generator, **settings)
        alone = [engine.generate([p], generator=generator, **settings) for p in prompts]
    return [r.tokens for r in batched], [r.tokens for rs in alone for r in rs]


@pytest.mark.skipif(
    not uses_transformer_engine(),
    reason="runs where Transformer Engine and a GPU are present (benchmarks/gpu_check.sh); "
    "the same check with the local layers is the test above",
)
def test_under_transformer_engine_prompts_continue_as_if_alone():
    batched, alone = run_ranks(1, _greedy_batched_and_alone, UNEVEN)[0]
    assert batched == alone


def _greedy_dynamic_rollouts_and_their_logits(prompts):
    """On one rank, a fresh bf16 model's greedy rollouts of `prompts` from megatron-core's dynamic
    engine, and for each the model's logits (no cache) at the positions that chose its tokens."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.dynamic_generation import DynamicRolloutEngine
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    config = replace(layout(), params_dtype="bfloat16")
    with parallel.process_group(config, seed=3):
        model = build_gpt_model(config, VOCAB)
        engine = DynamicRolloutEngine(
            model, VOCAB - 6, 1, lambda ids: [b"x"] * len(ids), 64, kv_cache_bytes=2**28
        )
        rollouts = engine.generate(
            prompts,
            group_size=2,
            max_new_tokens=8,
            temperature=0.0,
            top_p=1.0,
            generator=torch.Generator().manual_seed(0),
        )
        model.eval()
        checked = []
        with torch.no_grad():
            for rollout in rollouts:
                prompt = prompts[rollout.prompt_index]
                tokens = torch.tensor([[*prompt, *rollout.tokens]], device="cuda")
                positions = torch.arange(tokens.shape[1], device="cuda")[None]
                logits = model(tokens, positions, None)[0, len(prompt) - 1 : -1, : VOCAB - 6]
                checked.append((rollout.tokens, logits.float().cpu()))
    return checked


@pytest.mark.skipif(
    dynamic_generation.unavailable_reason() is not None,
    reason="megatron-core's dynamic engine needs a CUDA device and flash-attn; the checks up to "
    "the engine call are tests/test_dynamic_generation.py",
)
def test_the_dynamic_engine_s_greedy_tokens_are_the_model_s_argmax():
    """Each greedy token of the dynamic engine is the argmax of the model's own logits at its
    position, up to bf16 rounding: flash-attn and the local attention round differently, so a
    near-tie may go either way; 0.05 is a few bf16 steps at these logits' magnitudes (< 8)."""
    for tokens, logits in run_ranks(1, _greedy_dynamic_rollouts_and_their_logits, UNEVEN)[0]:
        chosen = logits[torch.arange(len(tokens)), torch.tensor(tokens)]
        assert bool((chosen >= logits.max(dim=1).values - 0.05).all())


@pytest.mark.parametrize("interval", [3, 10])
def test_checking_stops_every_k_steps_keeps_greedy_tokens_and_stops(checkpoint, interval):
    eos = _frequent_token(run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN)[0])
    every_step = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN, {"eos_id": eos})[0]
    options = {"eos_id": eos, "stop_check_interval": interval}
    sparse = run_ranks(1, _generate, checkpoint, 1, 1, True, 0.0, UNEVEN, options)[0]
    lengths = {len(tokens) for _, tokens, _ in every_step[0]}
    assert len(lengths) > 1 and any(finished for _, _, finished in every_step[0])
    assert sparse[0] == every_step[0]


def test_a_budget_that_cannot_hold_one_prompt_s_group_is_refused():
    from rmt_megatron.errors import ConfigError
    from rmt_megatron.mcore.generation import RolloutEngine

    engine = RolloutEngine(
        None, 10, 1, lambda ids: [b"x"] * len(ids), 8, kv_cache_bytes=100, kv_bytes_per_position=1
    )
    with pytest.raises(ConfigError, match="--rmt-rollout-kv-cache-gib"):
        engine.chunks([[1, 2, 3]], group_size=8, max_new_tokens=10, budget=100)


@pytest.mark.parametrize(("tp", "pp"), [(2, 1), (1, 2)])
def test_rollouts_are_identical_under_tensor_and_pipeline_parallelism(checkpoint, tp, pp):
    reference = run_ranks(1, _generate, checkpoint, 1, 1, True, 1.0)[0]
    for ranks_result in run_ranks(tp * pp, _generate, checkpoint, tp, pp, True, 1.0):
        assert ranks_result == reference


def _train(directory, tp, pp, steps, fused=False, pack=False):
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.forward_step import make_forward_step
    from rmt_megatron.mcore.optimizer import build_training, report_mean, train_step
    from rmt_megatron.method.packing import collate, ntp_sequence, rl_sequence, token_weights

    config = layout(tp, pp)
    generator = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(2, VOCAB, (n,), generator=generator).tolist()

    sequences = [rl_sequence(ids(9), ids(5), a) for a in (1.0, -0.5, 0.25, -0.75)]
    sequences += [ntp_sequence(ids(14), [4, 9]), ntp_sequence(ids(11), [6])]
    weights = token_weights(
        sum(s.rl_tokens for s in sequences), sum(s.ntp_tokens for s in sequences), 1.0, 0.1
    )
    micro = collate(sequences, 2, 32 if pack else 16, 0, *weights, pack=pack)
    results = []
    with parallel.process_group(config, seed=1):
        state = build_training(config, TrainConfig(train_iters=10, lr=1e-2), VOCAB)
        load_checkpoint(directory, state.module)
        forward_step = make_forward_step(LossConfig(fused_output_layer=fused))
        for _ in range(steps):
            out = train_step(state, forward_step, micro, micro[0]["tokens"].shape[1])
            results.append(
                (
                    report_mean(out.reports, "loss_rl"),
                    report_mean(out.reports, "loss_ntp"),
                    out.grad_norm,
                    len(micro),
                )
            )
    return results


@pytest.mark.parametrize(
    ("tp", "pp", "fused"), [(2, 1, False), (1, 2, False), (1, 1, True), (2, 1, True), (1, 2, True)]
)
def test_training_steps_match_the_single_process_run(checkpoint, tp, pp, fused):
    """Under TP/PP, and with the fused output layer (no logits), the steps equal the plain
    single-process run's."""
    reference = run_ranks(1, _train, checkpoint, 1, 1, 3)[0]
    results = run_ranks(tp * pp, _train, checkpoint, tp, pp, 3, fused)
    last_stage = results[-1]
    for (rl, ntp, norm, _), (rl_ref, ntp_ref, norm_ref, _) in zip(
        last_stage, reference, strict=True
    ):
        assert ntp == pytest.approx(ntp_ref, rel=1e-5)
        assert rl == pytest.approx(rl_ref, abs=1e-6)
        assert norm == pytest.approx(norm_ref, rel=1e-4)
    assert reference[2][1] < reference[0][1]  # the NTP loss goes down


def test_packed_rows_train_the_steps_of_one_sequence_per_row(checkpoint):
    """Six sequences of 11-14 tokens in three rows of 32 (each attending only to itself) instead
    of six of 16: the same losses and gradients, step after step."""
    padded = run_ranks(1, _train, checkpoint, 1, 1, 3)[0]
    packed = run_ranks(1, _train, checkpoint, 1, 1, 3, False, True)[0]
    assert [p[3] for p in padded] == [3] * 3 and [p[3] for p in packed] == [2] * 3
    for (rl, ntp, norm, _), (rl_ref, ntp_ref, norm_ref, _) in zip(packed, padded, strict=True):
        assert ntp == pytest.approx(ntp_ref, rel=1e-5)
        assert rl == pytest.approx(rl_ref, abs=1e-6)
        assert norm == pytest.approx(norm_ref, rel=1e-4)


def test_dual_loss_gradient_in_megatron_matches_the_reference_objective(checkpoint):
    """The weighted per-token sum Megatron differentiates (kernel op on vocab-parallel logits)
    equals dual_loss's objective on the reference log-probabilities."""
    result = run_ranks(1, _compare_objectives, checkpoint)[0]
    torch.testing.assert_close(result[0], result[1], rtol=1e-5, atol=1e-6)


def _compare_objectives(directory):
    from rmt_megatron.kernels import token_logprob_entropy_reference
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import load_checkpoint
    from rmt_megatron.mcore.forward_step import causal_mask, dual_loss_func
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.method.dual_loss import TokenRoles, dual_loss
    from rmt_megatron.method.packing import collate, ntp_sequence, rl_sequence, token_weights

    config = layout()
    with parallel.process_group(config, seed=1):
        model = build_gpt_model(config, VOCAB)
        load_checkpoint(directory, model)
        sequences = [
            rl_sequence([3, 4, 5], [6, 7, 8], 0.8),
            rl_sequence([9, 10], [11], -0.8),
            ntp_sequence([12, 13, 14, 15, 16], [2]),
        ]
        n_rl = sum(s.rl_tokens for s in sequences)
        n_ntp = sum(s.ntp_tokens for s in sequences)
        (batch,) = collate(sequences, 3, 5, 0, *token_weights(n_rl, n_ntp, 1.0, 0.1))
        grads = []
        for use_megatron_sum in (True, False):
            model.zero_grad()
            logits = model(batch["tokens"], batch["position_ids"], causal_mask(5))
            if use_megatron_sum:
                loss_sum, tokens, _ = dual_loss_func(batch, LossConfig(), logits)
                objective = loss_sum / tokens
            else:
                logprob, _ = token_logprob_entropy_reference(
                    logits.reshape(-1, logits.shape[-1]), batch["labels"].flatten()
                )
                objective = dual_loss(
                    logprob,
                    TokenRoles(
                        rl_mask=batch["rl_mask"].flatten(),
                        ntp_mask=batch["ntp_mask"].flatten(),
                        advantages=batch["advantages"].flatten(),
                    ),
                    LossConfig(),
                ).loss
            objective.backward()
            grads.append(
                torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            )
    return grads
