"""Triton logits kernels against the reference, run by test_kernels.py in a subprocess with
TRITON_INTERPRET=1 (the interpreter must be on before triton is imported). Tiny shapes: the
interpreter runs kernel loops in Python."""

import os

import pytest
import torch

from rmt_megatron.kernels import (
    token_logprob_entropy,
    token_logprob_entropy_reference,
    triton_logits,
)
from rmt_megatron.kernels.testing import (
    CASES,
    REALISTIC,
    float64_reference,
    forward_backward,
    logits_inputs,
)

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"


@pytest.fixture(autouse=True)
def small_block(monkeypatch):
    monkeypatch.setattr(triton_logits, "BLOCK", 16)  # several tiles and a ragged last one


@pytest.mark.parametrize(
    "name", ["v_not_multiple_of_block", "v_below_block", "huge_logits", "all_ignored"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_logits_op(name, dtype):
    case = CASES[name]
    logits, labels, upstream = logits_inputs(case, dtype)

    def triton(x, y, temperature):
        return token_logprob_entropy(x, y, temperature=temperature, backend="triton")

    lp, h, g = forward_backward(triton, [logits], labels, case.temperature, upstream)
    ref_lp, ref_h, ref_g = forward_backward(
        token_logprob_entropy_reference, [logits.float()], labels, case.temperature, upstream
    )
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
    # bf16 gradients: the interpreter casts fp32 to bf16 by truncation (checked: every gradient
    # equals the fp32 reference with its low 16 bits cleared), so allow one bf16 ulp (2^-7
    # relative), not the half ulp of round-to-nearest on a GPU (benchmarks/cuda_check.py)
    tolerance = (
        {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2**-7, "atol": 1e-3}
    )
    torch.testing.assert_close(g.float(), ref_g, **tolerance)


@pytest.mark.parametrize("name", ["std3_v4099_t0.6", "std10_v4099_t1"])
def test_triton_statistics_are_accurate_on_realistic_logits(name, monkeypatch):
    monkeypatch.setattr(triton_logits, "BLOCK", 1024)
    case = REALISTIC[name]
    logits, labels, upstream = logits_inputs(case)

    def triton(x, y, temperature):
        return token_logprob_entropy(x, y, temperature=temperature, backend="triton")

    got = forward_backward(triton, [logits], labels, case.temperature, upstream)
    want = float64_reference(logits, labels, case.temperature, upstream)
    entropy_error = ((got[1].double() - want[1]).abs() / want[1].abs()).max().item()
    assert entropy_error <= (1e-6 if case.scale == 3.0 else 1e-5)
    assert (got[2].double() - want[2]).abs().max() / want[2].abs().max() <= 1e-5


@pytest.fixture
def gpu_like_tiles(monkeypatch):
    """As on a GPU, one tile spans the vocabulary; blocks of 2 tokens (fp32, V = 21)."""
    from rmt_megatron.kernels import linear

    monkeypatch.setitem(linear.TILE_COLS, "cpu", None)
    monkeypatch.setitem(linear.TILE_BYTES, "cpu", 2 * 21 * 4)


@pytest.mark.parametrize("name", ["v_not_multiple_of_block", "all_ignored", "huge_logits"])
def test_triton_linear_op(name, gpu_like_tiles):
    from helpers import linear_against_reference

    ours, reference = linear_against_reference(CASES[name], backend="triton")
    scale = reference[2].abs().max().item() + 1.0
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_triton_fused_objective(gpu_like_tiles):
    from helpers import fused_objective_against_reference

    for got, want in zip(*fused_objective_against_reference(backend="triton"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
