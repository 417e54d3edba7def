"""pytest-benchmark timings of the vocabulary ops (not part of the default test run):

    pytest benchmarks/ --benchmark-only [--benchmark-json out.json]
    RMT_BENCH_SHAPE=4096,512,32000 pytest benchmarks/ --benchmark-only

Times forward + backward per provider at one shape (N, H, V from RMT_BENCH_SHAPE; default a
quick 1024,256,8000) on CUDA when present, else CPU. Peak memory and the CSV/plot come from
`python benchmarks/vocab_ops.py`, which isolates each provider in its own process.
"""

import importlib.util
import os

import pytest
import torch
from vocab_ops import _provider_fn

N, H, V = (int(x) for x in os.environ.get("RMT_BENCH_SHAPE", "1024,256,8000").split(","))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROVIDERS = ["naive", "compile", "chunked", "objective"] + (
    ["matmul", "triton"]
    + [
        p
        for p, module in (("liger", "liger_kernel"), ("verl", "verl"))
        if importlib.util.find_spec(module)
    ]
    if DEVICE == "cuda"
    else []
)


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    hidden = torch.randn(N, H, device=DEVICE, generator=generator)
    weight = torch.randn(V, H, device=DEVICE, generator=generator) / H**0.5
    labels = torch.randint(0, V, (N,), device=DEVICE, generator=generator)
    return hidden, weight, labels


@pytest.mark.parametrize("provider", PROVIDERS)
def test_forward_backward(benchmark, inputs, provider):
    hidden, weight, labels = inputs
    fn = _provider_fn(provider)

    def run():
        h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
        logprob, entropy = fn(h, w, labels)
        (logprob.sum() + (0 if entropy is None else entropy.sum())).backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    run()
    benchmark.extra_info.update(provider=provider, n=N, h=H, v=V, device=DEVICE)
    benchmark.pedantic(run, rounds=3, iterations=1)
