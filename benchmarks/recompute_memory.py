"""Activation recomputation on CPU: peak memory and time of one training step, with and without.

    python benchmarks/recompute_memory.py [--layers 8] [--hidden 256] [--seq-length 512]
                                          [--micro-batch-size 8] [--repeats 3]

One process, one model (a Llama-shape GPTModel of the given size, random weights), one
micro-batch of random tokens trained with the NTP loss through megatron-core's schedule and the
optimizer, for each setting of Megatron-LM's flags: none, `--recompute-granularity selective`
(core attention) and `--recompute-granularity full --recompute-method uniform
--recompute-num-layers 1`. Peak anonymous memory (RssAnon, sampled every 5 ms: the process's own
pages) above the level before the step (glibc's freed memory handed back first, `malloc_trim`),
and the step's seconds, medians over the repeats after the first; the
ratio columns compare each setting with none, measured in the same run. The losses of the three
settings are printed: they must be equal. Writes benchmarks/results/recompute_cpu.csv.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import replace

import torch
from peak_memory import AnonPeak, rss_anon  # this folder: the script's own directory
from results_csv import write_results

from rmt_megatron.config.presets import tiny_cpu
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.forward_step import make_forward_step
from rmt_megatron.mcore.optimizer import build_training, report_mean, train_step
from rmt_megatron.method.packing import collate, ntp_sequence

LIBC = ctypes.CDLL("libc.so.6")
SETTINGS = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {
        "recompute_granularity": "full",
        "recompute_method": "uniform",
        "recompute_num_layers": 1,
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = tiny_cpu()
    vocab = 512
    model = replace(
        base.model,
        num_layers=args.layers,
        hidden_size=args.hidden,
        ffn_hidden_size=3 * args.hidden,
        num_attention_heads=args.hidden // 32,
        num_query_groups=None,
        seq_length=args.seq_length,
        max_position_embeddings=args.seq_length,
    )
    tokens = torch.randint(0, vocab, (args.micro_batch_size, args.seq_length + 1),
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    batch = collate(
        [ntp_sequence(row.tolist(), ()) for row in tokens],
        args.micro_batch_size,
        args.seq_length,
        0,
        0.0,
        1.0,
    )
    rows = []
    with parallel.process_group(model, base.train.seed):
        for name, flags in SETTINGS.items():
            config = replace(model, **flags)
            torch.manual_seed(0)
            state = build_training(config, base.train, vocab)
            forward = make_forward_step(base.loss)
            peaks, seconds, losses = [], [], []
            for _ in range(args.repeats + 1):  # the first step allocates the optimizer state
                gc.collect()
                LIBC.malloc_trim(0)  # hand freed memory back, or "before" counts it as in use
                before = rss_anon()
                sampler = AnonPeak()
                started = time.perf_counter()
                output = train_step(state, forward, batch, args.seq_length)
                seconds.append(time.perf_counter() - started)
                peaks.append(sampler.stop() - before)
                losses.append(report_mean(output.reports, "loss_ntp"))
            rows.append(
                {
                    "setting": name,
                    "peak_step_mib": statistics.median(peaks[1:]) / 2**20,
                    "step_seconds": statistics.median(seconds[1:]),
                    "first_loss": losses[0],
                }
            )
            print(rows[-1], flush=True)
            del state
    none = rows[0]
    for row in rows:
        row["memory_ratio"] = row["peak_step_mib"] / none["peak_step_mib"]
        row["time_ratio"] = row["step_seconds"] / none["step_seconds"]
        row["shape"] = (
            f"{args.layers} layers, hidden {args.hidden}, seq {args.seq_length}, "
            f"micro-batch {args.micro_batch_size}"
        )
        row["machine"] = (
            f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads"
        )
    write_results("recompute_cpu.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
