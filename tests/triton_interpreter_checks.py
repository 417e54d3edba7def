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

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

CASES = [(3, 37, 1.0, 3.0, [1]), (1, 5, 0.6, 1.0, []), (2, 9, 1.0, 1e4, [0]),
         (2, 13, 1.0, 1.0, [0, 1])]


@pytest.fixture(autouse=True)
def small_block(monkeypatch):
    monkeypatch.setattr(triton_logits, "BLOCK", 16)  # several tiles and a ragged last one


@pytest.mark.parametrize(("n", "v", "temperature", "scale", "ignored"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_logits_op(n, v, temperature, scale, ignored, dtype):
    generator = torch.Generator().manual_seed(v)
    logits = (torch.randn(n, v, generator=generator) * scale).to(dtype)
    labels = torch.randint(0, v, (n,), generator=generator)
    labels[ignored] = -100
    upstream = torch.randn(2, n, generator=generator)
    results = []
    for fn, x in ((lambda *a, **k: token_logprob_entropy(*a, backend="triton", **k), logits),
                  (token_logprob_entropy_reference, logits.float())):
        x = x.detach().clone().requires_grad_()
        logprob, entropy = fn(x, labels, temperature=temperature)
        (logprob * upstream[0] + entropy * upstream[1]).sum().backward()
        results.append((logprob, entropy, x.grad.float()))
    (lp, h, g), (ref_lp, ref_h, ref_g) = results
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {
        "rtol": 2 ** -8, "atol": 1e-3}
    torch.testing.assert_close(g, ref_g, **tolerance)


@pytest.fixture
def gpu_like_tiles(monkeypatch):
    """As on a GPU, one tile spans the vocabulary; blocks of 2 tokens (fp32, V = 21)."""
    from rmt_megatron.kernels import linear

    monkeypatch.setitem(linear.TILE_COLS, "cpu", None)
    monkeypatch.setitem(linear.TILE_BYTES, "cpu", 2 * 21 * 4)


@pytest.mark.parametrize("name", ["ragged_blocks", "all_ignored", "huge_logits"])
def test_triton_linear_op(name, gpu_like_tiles):
    from test_kernels import LINEAR_CASES, linear_against_reference

    ours, reference = linear_against_reference(LINEAR_CASES[name], backend="triton")
    scale = reference[2].abs().max().item() + 1.0
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_triton_fused_objective(gpu_like_tiles):
    from test_kernels import fused_objective_against_reference

    for got, want in zip(*fused_objective_against_reference(backend="triton"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
