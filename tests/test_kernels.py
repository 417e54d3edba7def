"""Vocabulary ops against the unfused torch reference: forward and gradients, awkward shapes,
precisions, and the vocab-parallel path.

Tolerances: fp32 to 1e-5 (same math, different summation order). For bf16 inputs the backends
compute in fp32 and only round their outputs' gradients to bf16, so gradients are compared with
the reference evaluated on the same bf16 values upcast to fp32, at bf16's relative precision
(2^-8) plus a small absolute floor.
"""

from dataclasses import replace

import pytest
import torch
from helpers import LINEAR, fused_objective_against_reference, linear_against_reference
from ranks import run_ranks

from rmt_megatron.kernels import (
    chunked,
    linear,
    linear_logprob_entropy,
    linear_token_objective,
    token_logprob_entropy,
    token_logprob_entropy_reference,
)
from rmt_megatron.kernels.ops import resolve_backend
from rmt_megatron.kernels.testing import (
    CASES,
    REALISTIC,
    float64_reference,
    forward_backward,
    linear_inputs,
    logits_inputs,
)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """8-column vocabulary chunks, and 2 × 8 tiles in the linear ops (fp32), so every shape below
    spans several chunks and tiles with ragged last ones."""
    monkeypatch.setattr(chunked, "DEFAULT_V_CHUNK", 8)
    monkeypatch.setitem(linear.TILE_COLS, "cpu", 8)
    monkeypatch.setitem(linear.TILE_BYTES, "cpu", 2 * 8 * 4)


def _logits_op(name, dtype=torch.float32):
    """(ours, reference) on CASES[name]; the reference runs in fp32 on the same inputs."""
    case = CASES[name]
    logits, labels, upstream = logits_inputs(case, dtype)
    got = forward_backward(token_logprob_entropy, [logits], labels, case.temperature, upstream)
    want = forward_backward(
        token_logprob_entropy_reference, [logits.float()], labels, case.temperature, upstream
    )
    return got, want, labels


@pytest.mark.parametrize("name", CASES)
def test_logits_op_matches_the_reference_in_fp32(name):
    got, want, labels = _logits_op(name)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[0][labels == -100], torch.zeros(int((labels == -100).sum())))


@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_fp32_statistics_are_accurate_on_realistic_logits(name, backend, monkeypatch):
    """Against float64, with the backend's real chunk size: entropy to 1e-6 relative for std-3
    logits (1e-5 for std 10, whose rows are nearly one-hot and whose H is small), gradients to
    1e-5 of their largest entry. (The Triton kernels: tests/triton_interpreter_checks.py.)"""
    monkeypatch.setattr(chunked, "DEFAULT_V_CHUNK", 4096)
    case = REALISTIC[name]
    logits, labels, upstream = logits_inputs(case)

    def op(x, y, temperature):
        return token_logprob_entropy(x, y, temperature=temperature, backend=backend)

    got = forward_backward(op, [logits], labels, case.temperature, upstream)
    want = float64_reference(logits, labels, case.temperature, upstream)
    entropy_error = ((got[1].double() - want[1]).abs() / want[1].abs()).max().item()
    assert entropy_error <= (1e-6 if case.scale == 3.0 else 1e-5)
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-6, atol=1e-5)
    grad_error = (got[2].double() - want[2]).abs().max() / want[2].abs().max()
    assert grad_error <= 1e-5


@pytest.mark.parametrize("name", ["v_not_multiple_of_block", "huge_logits"])
def test_logits_op_in_bf16(name):
    got, want, _ = _logits_op(name, torch.bfloat16)
    assert got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2].float(), want[2], rtol=2**-8, atol=1e-3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_op_never_needs_logits_and_matches_the_reference(name):
    ours, reference = linear_against_reference(replace(CASES[name], hidden=6))
    scale = reference[2].abs().max().item() + 1.0  # huge logits: gradients of size ~1e3
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_linear_op_in_bf16():
    """bf16 inputs: logits blocks are bf16 matmul outputs (rounded, unlike the fp32 reference
    on the same inputs), so the statistics carry bf16's relative error times |logit| (≤ ~10
    here); gradients are rounded to bf16 and summed over tokens/vocabulary in bf16 blocks."""
    ours, reference = linear_against_reference(LINEAR, torch.bfloat16)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got.float(), want, rtol=2**-6, atol=5e-2)


def test_fused_objective_forms_its_gradients_in_the_forward():
    for got, want in zip(*fused_objective_against_reference(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fused_objective_refuses_an_objective_that_couples_tokens():
    h, w, labels, _ = linear_inputs(LINEAR)
    with pytest.raises(ValueError, match="sum of per-token terms"):
        linear_token_objective(h, w, labels, lambda logprob, entropy: logprob.sum() ** 2)


def _vocab_parallel(world):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    h, w, labels, upstream = linear_inputs(replace(LINEAR, vocab=24))
    logits = (h @ w.T).detach()
    shard = logits.chunk(world, dim=1)[rank].clone().requires_grad_()
    logprob, entropy = token_logprob_entropy(
        shard, labels, temperature=0.8, tp_group=dist.group.WORLD
    )
    (logprob * upstream[0] + entropy * upstream[1]).sum().backward()
    w_shard = w.chunk(world, dim=0)[rank].clone().requires_grad_()
    h_local = h.clone().requires_grad_()
    lin_lp, lin_h = linear_logprob_entropy(
        h_local, w_shard, labels, temperature=0.8, tp_group=dist.group.WORLD
    )
    (lin_lp * upstream[0] + lin_h * upstream[1]).sum().backward()
    dist.all_reduce(h_local.grad)  # what ColumnParallelLinear's input copy does in backward
    dist.destroy_process_group()
    return logprob, entropy, shard.grad, lin_lp, w_shard.grad, h_local.grad


def test_vocab_parallel_ops_equal_the_single_rank_result():
    h, w, labels, upstream = linear_inputs(replace(LINEAR, vocab=24))
    logits = (h @ w.T).requires_grad_()
    ref_lp, ref_h = token_logprob_entropy_reference(logits, labels, temperature=0.8)
    (ref_lp * upstream[0] + ref_h * upstream[1]).sum().backward()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    lp2, e2 = token_logprob_entropy_reference(h2 @ w2.T, labels, temperature=0.8)
    (lp2 * upstream[0] + e2 * upstream[1]).sum().backward()
    for rank, result in enumerate(run_ranks(2, _vocab_parallel, 2)):
        logprob, entropy, grad_shard, lin_lp, grad_w_shard, grad_h = result
        torch.testing.assert_close(logprob, ref_lp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropy, ref_h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            grad_shard, logits.grad.chunk(2, dim=1)[rank], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(lin_lp, ref_lp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            grad_w_shard, w2.grad.chunk(2, dim=0)[rank], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(grad_h, h2.grad, rtol=1e-5, atol=1e-5)


def test_backend_switch_and_bad_input(monkeypatch):
    assert resolve_backend(None) == "chunked"
    monkeypatch.setenv("RMT_KERNEL_BACKEND", "reference")
    assert resolve_backend(None) == "reference"
    with pytest.raises(ValueError, match="unknown"):
        resolve_backend("cuda-magic")
    with pytest.raises(ValueError, match="vocabularies disagree"):
        token_logprob_entropy(torch.zeros(2, 4), torch.tensor([0, 4]), backend="chunked")
    with pytest.raises(ValueError, match=r"\[N, H\]"):
        linear_logprob_entropy(torch.zeros(2, 3), torch.zeros(4, 5), torch.tensor([0, 1]))


def test_triton_kernels_under_the_interpreter():
    import os
    import subprocess
    import sys
    from pathlib import Path

    checks = Path(__file__).with_name("triton_interpreter_checks.py")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(checks)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        cwd=checks.parent.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "14 passed" in result.stdout
