"""The kernels' case matrix, in one place: the unit tests, the Triton interpreter checks and the
GPU check (`benchmarks/cuda_check.py`) all draw their inputs from it.

A `KernelCase` is N token rows over a vocabulary of V columns (and, for the linear ops, a hidden
size H), logits of about `scale` in size, a temperature and the rows whose label is ignored.
`CASES` are the awkward shapes every backend must handle (V not a multiple of the block or tile,
V below it, one row, every label ignored, logits of ±1e4); `GPU_CASES` add shapes that only a
GPU runs in reasonable time. `logits_inputs` / `linear_inputs` draw seeded inputs
(`logits: [N, V]`, or `hidden: [N, H]` and `weight: [V, H]`, with `labels: [N]` and an upstream
gradient `[2, N]` for (logprob, entropy)); `forward_backward` runs an op and returns its outputs
and input gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KernelCase:
    n: int
    vocab: int
    hidden: int = 6
    temperature: float = 1.0
    scale: float = 1.0
    """About the size of the logits (their standard deviation)."""
    ignored: tuple[int, ...] = ()
    """Rows whose label is the ignore index (-100)."""


CASES = {
    "v_not_multiple_of_block": KernelCase(6, 23, temperature=1.0, scale=3.0, ignored=(1,)),
    "v_below_block": KernelCase(4, 5, temperature=0.7, scale=2.0),
    "one_row": KernelCase(1, 19, temperature=1.3),
    "all_ignored": KernelCase(3, 11, ignored=(0, 1, 2)),
    "huge_logits": KernelCase(5, 17, scale=1e4, ignored=(2,)),
}
"""Small enough for CPU tests and the Triton interpreter (with small blocks and tiles)."""

GPU_CASES = {
    "v_not_multiple_of_block": KernelCase(7, 1000, hidden=64, ignored=(3,)),
    "one_row_v_below_block": KernelCase(1, 300, hidden=32, temperature=0.7),
    "all_ignored": KernelCase(5, 2051, hidden=64, ignored=(0, 1, 2, 3, 4)),
    "huge_logits": KernelCase(6, 4099, hidden=16, scale=1e4, ignored=(2,)),
    "realistic_tile": KernelCase(512, 32000, hidden=1024, temperature=1.3, ignored=(5,)),
}
"""Shapes at the compiled kernels' block sizes, for a GPU."""


REALISTIC = {
    f"std{scale:g}_v{vocab}_t{temperature:g}": KernelCase(
        4, vocab, temperature=temperature, scale=scale
    )
    for vocab in (4099, 32000)
    for scale, temperature in ((3.0, 0.6), (3.0, 1.0), (3.0, 1.2), (10.0, 1.0))
}
"""Logits of the size a trained model produces (standard deviation 3–10) over real vocabulary
sizes, for the accuracy checks against float64 (`float64_reference`)."""


def float64_reference(logits, labels, temperature, upstream) -> list[torch.Tensor]:
    """`[logprob, entropy, grad]` in float64, the ground truth for fp32 accuracy."""

    def in_float64(x, y, temperature):
        z = x.double() / temperature
        log_p = torch.log_softmax(z, dim=-1)
        logprob = log_p.gather(1, y.clamp_min(0)[:, None]).squeeze(1).masked_fill(y < 0, 0.0)
        return logprob, -(log_p.exp() * log_p).sum(dim=-1)

    return forward_backward(in_float64, [logits.double()], labels, temperature, upstream.double())


def _generator(case: KernelCase, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(case.n * 1009 + case.vocab)


def _labels_and_upstream(case: KernelCase, generator, device):
    labels = torch.randint(0, case.vocab, (case.n,), device=device, generator=generator)
    labels[list(case.ignored)] = -100
    return labels, torch.randn(2, case.n, device=device, generator=generator)


def logits_inputs(case: KernelCase, dtype=torch.float32, device="cpu"):
    """(logits [N, V], labels [N], upstream [2, N]) for the logits op."""
    generator = _generator(case, device)
    logits = torch.randn(case.n, case.vocab, device=device, generator=generator) * case.scale
    return (logits.to(dtype), *_labels_and_upstream(case, generator, device))


def linear_inputs(case: KernelCase, dtype=torch.float32, device="cpu"):
    """(hidden [N, H], weight [V, H], labels [N], upstream [2, N]) for the linear ops, scaled so
    that the logits `hidden @ weight.T` are about `case.scale` in size."""
    generator = _generator(case, device)
    hidden = torch.randn(case.n, case.hidden, device=device, generator=generator)
    weight = torch.randn(case.vocab, case.hidden, device=device, generator=generator)
    hidden = hidden * case.scale / case.hidden**0.5
    return (hidden.to(dtype), weight.to(dtype), *_labels_and_upstream(case, generator, device))


def forward_backward(
    fn: Callable, inputs, labels: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> list[torch.Tensor]:
    """`[logprob, entropy, *input gradients]` of `fn(*inputs, labels, temperature=...)` under the
    loss Σ upstream[0]·logprob + upstream[1]·entropy."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    logprob, entropy = fn(*leaves, labels, temperature=temperature)
    (logprob * upstream[0] + entropy * upstream[1]).sum().backward()
    return [logprob, entropy, *(x.grad for x in leaves)]
