"""The vocabulary kernels on a real GPU: Triton against the torch reference, then the timing run.

    python benchmarks/cuda_check.py            # on a CUDA machine; exits 1 on any mismatch
    TRITON_INTERPRET=1 python benchmarks/cuda_check.py --device cpu --small   # the script itself

The unit tests check the Triton kernels only under TRITON_INTERPRET=1 on CPU; this script runs
the compiled kernels on CUDA. For each case it compares `token_logprob_entropy` and
`linear_logprob_entropy` (backend "triton") with the reference evaluated in fp32 on the same
inputs, forward and gradients, and prints the largest errors: fp32 to 1e-5 (relative to the
largest reference gradient for the ±1e4-logit case), bf16 to 2^-6 relative plus 5e-2 absolute
(the bf16 logits tiles carry bf16's rounding times |logit|, as in tests/test_kernels.py).
`benchmarks/gpu_check.sh` runs it before the benchmark.
"""

from __future__ import annotations

import argparse
import sys

import torch

from rmt_megatron.kernels import (
    linear_logprob_entropy,
    token_logprob_entropy,
    token_logprob_entropy_reference,
)

CASES = [  # (N, H, V, logit scale, ignored rows, temperature)
    (7, 64, 1000, 1.0, [3], 1.0),        # V not a multiple of the block
    (1, 32, 300, 1.0, [], 0.7),          # one row, V below the block
    (5, 64, 2051, 1.0, [0, 1, 2, 3, 4], 1.0),  # every label ignored
    (6, 16, 4099, 1e4, [2], 1.0),        # huge logits
    (512, 1024, 32000, 1.0, [5], 1.3),   # a realistic tile
]


def _compare(fn, inputs, labels, temperature, upstream):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    logprob, entropy = fn(*leaves, labels, temperature)
    (logprob * upstream[0] + entropy * upstream[1]).sum().backward()
    return [logprob, entropy, *(x.grad for x in leaves)]


def check(n, h, v, scale, ignored, temperature, dtype, device) -> list[str]:
    generator = torch.Generator(device=device).manual_seed(n + v)
    hidden = (torch.randn(n, h, device=device, generator=generator) * scale / h ** 0.5)
    weight = torch.randn(v, h, device=device, generator=generator)
    labels = torch.randint(0, v, (n,), device=device, generator=generator)
    labels[ignored] = -100
    upstream = torch.randn(2, n, device=device, generator=generator)
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    logits = hidden @ weight.T

    def reference_logits(x, y, t):
        return token_logprob_entropy_reference(x.float(), y, temperature=t)

    def reference_linear(a, b, y, t):
        return token_logprob_entropy_reference(a.float() @ b.float().T, y, temperature=t)

    pairs = {
        "logits": (lambda x, y, t: token_logprob_entropy(x, y, temperature=t, backend="triton"),
                   reference_logits, [logits]),
        "linear": (lambda a, b, y, t: linear_logprob_entropy(a, b, y, temperature=t,
                                                             backend="triton"),
                   reference_linear, [hidden, weight]),
    }
    failures = []
    for name, (ours, reference, inputs) in pairs.items():
        got = _compare(ours, inputs, labels, temperature, upstream)
        want = _compare(reference, inputs, labels, temperature, upstream)
        floor = max(w.abs().max().item() for w in want[2:]) + 1.0
        rtol, atol = (1e-5, 1e-5 * floor) if dtype == torch.float32 else (2 ** -6, 5e-2 * floor)
        errors = [(g.float() - w.float()).abs().max().item() for g, w in zip(got, want,
                                                                                strict=True)]
        ok = all(torch.allclose(g.float(), w.float(), rtol=rtol, atol=atol)
                 for g, w in zip(got, want, strict=True))
        line = (f"{name:6s} N={n} H={h} V={v} scale={scale:g} {str(dtype)[6:]:8s} max errors "
                f"(logprob, entropy, grads) = {', '.join(f'{e:.2e}' for e in errors)}")
        print(("ok    " if ok else "FAIL  ") + line, flush=True)
        if not ok:
            failures.append(line)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="the first two cases only")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this check runs on a GPU", file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"device: {name}", flush=True)
    cases = CASES[:2] if args.small else CASES
    failures = [f for case in cases for dtype in (torch.float32, torch.bfloat16)
                for f in check(*case, dtype, args.device)]
    print(f"{len(failures)} failing comparisons")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
