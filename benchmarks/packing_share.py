"""How much of a training step's compute falls on loss tokens, padded vs. packed.

    python benchmarks/packing_share.py [--steps 3] [--seq-length 320]

Runs the built-in default (`pretrain_rmt.py`, tiny_cpu) for `--steps` steps twice, one sequence
per row padded to the step's longest (as before) and with `--rmt-pack-sequences`, from the same
seeds; `--seq-length` sets the model's sequence length, which bounds a packed row (the padded
rows stay as long as the step's longest sequence). Each step logs `loss_tokens` (RL + NTP
tokens) and `input_tokens` (micro-batch rows × sequence length, padding included: what the
forward and backward run over). A transformer's
matmul FLOPs are proportional to the input tokens (about 6 · parameters per token for forward
and backward; attention's quadratic term aside), so loss_tokens / input_tokens is the share of
the step's FLOPs that fall on loss tokens. Both runs draw the same rollouts at step 1, whose
losses must agree (the script exits 1 otherwise); later steps start from slightly different
weights (another order of floating-point sums). The prompt of every RL row is still recomputed
once per rollout (G copies): packing removes padding, not that.
Writes benchmarks/results/packing_<device>_seq<seq_length>.csv and prints it.
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from results_csv import write_results

from rmt_megatron.run.metrics_log import read_metrics

FIELDS = [
    "layout",
    "device",
    "seq_length",
    "steps",
    "loss_tokens",
    "input_tokens",
    "loss_token_share",
    "train_seconds",
    "step1_loss_rl",
    "step1_loss_ntp",
]


def run(save: Path, steps: int, seq_length: int, *flags: str) -> list[dict]:
    command = [
        sys.executable,
        "pretrain_rmt.py",
        "--train-iters",
        str(steps),
        "--seq-length",
        str(seq_length),
        "--max-position-embeddings",
        str(max(512, seq_length)),
        "--eval-interval",
        "1000",
        "--eval-positions",
        "8",
        "--save",
        str(save),
        *flags,
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return read_metrics(save)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-length", type=int, default=320)
    args = parser.parse_args()
    device = f"cpu-{platform.machine()}" if not torch.cuda.is_available() else "cuda"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for layout, flags in (("padded", ()), ("packed", ("--rmt-pack-sequences",))):
            metrics = run(Path(scratch) / layout, args.steps, args.seq_length, *flags)
            loss_tokens = sum(m["loss_tokens"] for m in metrics)
            input_tokens = sum(m["input_tokens"] for m in metrics)
            rows.append(
                {
                    "layout": layout,
                    "device": device,
                    "seq_length": args.seq_length,
                    "steps": len(metrics),
                    "loss_tokens": loss_tokens,
                    "input_tokens": int(input_tokens),
                    "loss_token_share": round(loss_tokens / input_tokens, 4),
                    "train_seconds": round(
                        sum(m["loss_tokens"] / m["train_tokens_per_s"] for m in metrics), 3
                    ),
                    "step1_loss_rl": metrics[0]["loss_rl"],
                    "step1_loss_ntp": metrics[0]["loss_ntp"],
                }
            )
    padded, packed = rows
    rows.append(
        {
            "layout": "ratio packed/padded",
            "device": device,
            "seq_length": args.seq_length,
            "input_tokens": round(packed["input_tokens"] / padded["input_tokens"], 4),
            "train_seconds": round(packed["train_seconds"] / padded["train_seconds"], 4),
        }
    )
    write_results(f"packing_{device}_seq{args.seq_length}.csv", rows, FIELDS)
    same = all(
        math.isclose(packed[key], padded[key], rel_tol=1e-5, abs_tol=1e-6)
        for key in ("step1_loss_rl", "step1_loss_ntp")
    )
    if not same:
        print("packing: step 1's losses differ between the layouts: the packing is wrong")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
