"""Per-token logprob + entropy from a hidden state and the output layer, forward + backward:
time and peak extra memory of each implementation, measured in one run.

    python benchmarks/vocab_ops.py                      # CPU target shape N=4096 H=512 V=32000
    python benchmarks/vocab_ops.py --n 512 --v 4000     # quicker
    python benchmarks/vocab_ops.py --device cuda --n 8192 --h 4096 --v 131072 --dtype bfloat16

Providers: `naive` (logits = h·Wᵀ, log_softmax, gather + entropy, autograd), `compile`
(torch.compile of naive, where it compiles), `chunked` (our `linear_logprob_entropy`, torch
tiles), `objective` (our `linear_token_objective` on the same loss, Σ logprob + Σ entropy:
gradients formed in the forward; Triton tiles on CUDA), and on CUDA `matmul` (the three
matmuls alone: the bound), `triton` (our linear op with its Triton tile kernels) and, when
importable, `liger` (Liger-Kernel's fused linear cross-entropy, logprob only) and `verl`
(verl's linear_cross_entropy: logprob and entropy; importing verl needs its package
dependencies, e.g. ray and tensordict, beside the wheel).
Each provider runs in its own subprocess: after the inputs exist its memory is recorded, then
the op runs `--repeats` times; the median time and the peak memory above that baseline are
reported (CPU: sampled anonymous RSS during the timed runs, `peak_memory.py`; CUDA:
torch.cuda.max_memory_allocated). Rows go to benchmarks/results/vocab_ops_<device>.csv, with
time and memory ratios against `naive`, and a plot next to it when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_csv import RESULTS, write_results

PROVIDERS = ("matmul", "naive", "compile", "chunked", "objective", "triton", "liger", "verl")
"""All providers; on CPU the default run measures naive, compile, chunked and objective."""


def _naive(hidden, weight, labels):
    import torch

    log_probs = torch.log_softmax((hidden @ weight.T).float(), dim=-1)
    logprob = log_probs.gather(1, labels[:, None]).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logprob, entropy


def _provider_fn(name: str):
    import torch

    if name == "naive":
        return _naive
    if name == "compile":
        return torch.compile(_naive)
    if name == "chunked":
        from rmt_megatron.kernels import linear_logprob_entropy

        return lambda h, w, y: linear_logprob_entropy(h, w, y, backend="chunked")
    if name == "objective":  # the same loss, gradients formed in the forward (3 matmuls)
        from rmt_megatron.kernels import linear_token_objective

        def objective(h, w, y):
            loss, _, _ = linear_token_objective(h, w, y, lambda lp, ent: lp.sum() + ent.sum())
            return loss[None], None

        return objective
    if name == "triton":
        from rmt_megatron.kernels import linear_logprob_entropy

        return lambda h, w, y: linear_logprob_entropy(h, w, y, backend="triton")
    if name == "matmul":  # the bound: h·Wᵀ forward, ∂h and ∂W backward, nothing else
        return lambda h, w, y: ((h @ w.T).sum(-1), None)
    if name == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        return lambda h, w, y: (-liger_fused_linear_cross_entropy(h, w, y, reduction="none"), None)
    if name == "verl":
        from verl.utils.kernel.linear_cross_entropy import linear_cross_entropy

        return lambda h, w, y: linear_cross_entropy(h, w, y, 1.0, "none")
    raise ValueError(name)


def _measure(args) -> dict:
    """Runs in the child process: one provider, JSON result on stdout."""
    import torch

    dtype = getattr(torch, args.dtype)
    generator = torch.Generator(device=args.device).manual_seed(0)
    hidden = torch.randn(args.n, args.h, device=args.device, dtype=dtype, generator=generator)
    weight = (
        torch.randn(args.v, args.h, device=args.device, dtype=dtype, generator=generator)
        / args.h**0.5
    )
    labels = torch.randint(0, args.v, (args.n,), device=args.device, generator=generator)
    fn = _provider_fn(args.provider)

    def run():
        h = hidden.detach().requires_grad_()
        w = weight.detach().requires_grad_()
        logprob, entropy = fn(h, w, labels)
        loss = logprob.sum() + (entropy.sum() if entropy is not None else 0)
        loss.backward()
        return h.grad, w.grad

    run()  # warm-up (and compilation)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        from peak_memory import AnonPeak, rss_anon

        baseline = rss_anon()
        sampler = AnonPeak()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        grads = run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        del grads
    peak = torch.cuda.max_memory_allocated() if cuda else sampler.stop()
    return {"seconds": statistics.median(times), "extra_bytes": max(peak - baseline, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--h", type=int, default=512)
    parser.add_argument("--v", type=int, default=32000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--providers", default=None, help="comma-separated subset of " + ",".join(PROVIDERS)
    )
    parser.add_argument("--provider", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.provider:
        print(json.dumps(_measure(args)))
        return
    wanted = (
        args.providers.split(",")
        if args.providers
        else (
            list(PROVIDERS)
            if args.device == "cuda"
            else ["naive", "compile", "chunked", "objective"]
        )
    )
    device_name = _device_name(args.device)
    rows = []
    for provider in wanted:
        command = [
            sys.executable,
            __file__,
            "--provider",
            provider,
            "--n",
            str(args.n),
            "--h",
            str(args.h),
            "--v",
            str(args.v),
            "--dtype",
            args.dtype,
            "--device",
            args.device,
            "--repeats",
            str(args.repeats),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        row = {
            "provider": provider,
            "device": device_name,
            "n": args.n,
            "h": args.h,
            "v": args.v,
            "dtype": args.dtype,
        }
        if result.returncode == 0:
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            row.update(
                seconds=round(measured["seconds"], 4),
                extra_mib=round(measured["extra_bytes"] / 2**20, 1),
            )
        else:
            row["error"] = result.stderr.strip().splitlines()[-1][:200]
        rows.append(row)
        print(row, flush=True)
    naive = next((r for r in rows if r["provider"] == "naive" and "seconds" in r), None)
    for row in rows:
        if naive and "seconds" in row:
            row["time_vs_naive"] = round(row["seconds"] / naive["seconds"], 3)
            row["memory_vs_naive"] = round(row["extra_mib"] / max(naive["extra_mib"], 1e-9), 3)
    stem = f"vocab_ops_{device_name.replace(' ', '_')}_{args.n}x{args.h}x{args.v}_{args.dtype}"
    fields = [
        "provider",
        "device",
        "n",
        "h",
        "v",
        "dtype",
        "seconds",
        "extra_mib",
        "time_vs_naive",
        "memory_vs_naive",
        "error",
    ]
    write_results(f"{stem}.csv", rows, fields)
    _plot(rows, RESULTS / f"{stem}.png")


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    import torch

    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    measured = [r for r in rows if "seconds" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["provider"] for r in measured]
    left.bar(names, [r["seconds"] * 1000 for r in measured])
    left.set_ylabel("fwd+bwd time (ms)")
    right.bar(names, [r["extra_mib"] for r in measured])
    right.set_ylabel("peak extra memory (MiB)")
    figure.suptitle(
        f"{measured[0]['device']}  N={measured[0]['n']} H={measured[0]['h']} "
        f"V={measured[0]['v']} {measured[0]['dtype']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
