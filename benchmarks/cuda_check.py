"""The vocabulary kernels on a real GPU: Triton against the torch reference, then the timing run.

    python benchmarks/cuda_check.py            # on a CUDA machine; exits 1 on any mismatch
    TRITON_INTERPRET=1 python benchmarks/cuda_check.py --device cpu --small   # the script itself

The unit tests check the Triton kernels only under TRITON_INTERPRET=1 on CPU; this script runs the
compiled kernels on CUDA. For each case of `rmt_megatron.kernels.testing.GPU_CASES` and
`REALISTIC` (logits of standard deviation 3-10, as a trained model gives) it compares
`token_logprob_entropy` and `linear_logprob_entropy` (backend "triton") with the reference
evaluated in float64 on the same inputs, forward and gradients, and prints the largest errors:
fp32 to 1e-5 (relative to the largest reference gradient for the ±1e4-logit case), bf16 to 2^-6
relative plus 5e-2 absolute. For the linear op in bf16 the reference takes its logits from the
bf16 matmul `hidden @ weightᵀ` (rounded to bf16, as every bf16 output layer gives them): against
the exact products the statistics would carry bf16's rounding times |logit|, ~0.1 at logits of
standard deviation 10, which is the output layer's error, not the kernel's.
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
from rmt_megatron.kernels.testing import (
    GPU_CASES,
    REALISTIC,
    KernelCase,
    forward_backward,
    linear_inputs,
)


def check(name: str, case: KernelCase, dtype, device) -> list[str]:
    hidden, weight, labels, upstream = linear_inputs(case, dtype, device)
    logits = hidden @ weight.T

    def reference_logits(x, y, temperature):
        return token_logprob_entropy_reference(x.double(), y, temperature=temperature)

    def reference_linear(a, b, y, temperature):
        # fp32: the exact products. bf16: the logits of a bf16 output layer (cuBLAS, fp32
        # accumulation, rounded to bf16), as our tiles, Megatron's and Liger's have them.
        z = a.double() @ b.double().T if dtype == torch.float32 else (a @ b.T).double()
        return token_logprob_entropy_reference(z, y, temperature=temperature)

    pairs = {
        "logits": (
            lambda x, y, temperature: token_logprob_entropy(
                x, y, temperature=temperature, backend="triton"
            ),
            reference_logits,
            [logits],
        ),
        "linear": (
            lambda a, b, y, temperature: linear_logprob_entropy(
                a, b, y, temperature=temperature, backend="triton"
            ),
            reference_linear,
            [hidden, weight],
        ),
    }
    failures = []
    for op, (ours, reference, inputs) in pairs.items():
        got = forward_backward(ours, inputs, labels, case.temperature, upstream)
        want = forward_backward(reference, inputs, labels, case.temperature, upstream)
        floor = max(w.abs().max().item() for w in want[2:]) + 1.0
        rtol, atol = (1e-5, 1e-5 * floor) if dtype == torch.float32 else (2**-6, 5e-2 * floor)
        errors = [
            (g.double() - w.double()).abs().max().item() for g, w in zip(got, want, strict=True)
        ]
        ok = all(
            torch.allclose(g.double(), w.double(), rtol=rtol, atol=atol)
            for g, w in zip(got, want, strict=True)
        )
        line = (
            f"{op:6s} {name} N={case.n} H={case.hidden} V={case.vocab} "
            f"{str(dtype)[6:]:8s} max errors (logprob, entropy, grads) = "
            f"{', '.join(f'{e:.2e}' for e in errors)}"
        )
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
    cases = list(GPU_CASES.items())[:2] if args.small else [*GPU_CASES.items(), *REALISTIC.items()]
    failures = [
        f
        for name, case in cases
        for dtype in (torch.float32, torch.bfloat16)
        for f in check(name, case, dtype, args.device)
    ]
    print(f"{len(failures)} failing comparisons")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
