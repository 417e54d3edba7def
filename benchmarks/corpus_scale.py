"""Corpus scale: the same two RMT steps on corpora of the built-in world of growing size.

    python benchmarks/corpus_scale.py [--tokens 2e6 2e7 2e8] [--pool-documents 4096]

Each corpus is the built-in training documents, shuffled and repeated (seeded) up to the token
count, written as an indexed dataset in a scratch directory (generated, never committed). On
each, `pretrain_rmt.py` runs 2 steps of the tiny_cpu preset from the shipped base model (4
prompts × 4 rollouts, 8 held-out positions, one thread), in its own process, measured from
outside: peak resident memory (the process's ru_maxrss), wall time to the end of step 1 and of
the run, the mean step time, and the difficulty scoring it did (tokens in the scores files it
wrote beside the corpus; proxy FLOPs ≈ 2 × parameters × tokens, forward only). The last column
gives each figure as a ratio to the smallest corpus's, measured in the same invocation.
Writes benchmarks/results/corpus_scale_cpu.csv and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import (
    DType,
    IndexedDatasetBuilder,
    get_bin_path,
    get_idx_path,
)
from results_csv import write_results  # this folder: the script's own directory

from rmt_megatron.builtin.datasets import (
    ASSETS,
    CHECKPOINT_DIR,
    TOKENIZER_FILE,
    prepare_builtin_data,
)
from rmt_megatron.config.presets import tiny_cpu
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.run.memory_plan import stage_parameters

ROOT = Path(__file__).resolve().parents[1]
RUN_FLAGS = [
    "--rmt-preset",
    "tiny_cpu",
    "--train-iters",
    "2",
    "--lr-warmup-iters",
    "0",
    "--rmt-prompts-per-step",
    "4",
    "--rmt-group-size",
    "4",
    "--micro-batch-size",
    "4",
    "--rmt-max-response-length",
    "112",
    "--eval-positions",
    "8",
    "--eval-interval",
    "100",
    "--log-interval",
    "1",
]


def write_corpus(prefix: Path, source: list[np.ndarray], tokens: int, vocab: int) -> int:
    """`source` documents, shuffled and repeated up to `tokens` tokens, as `prefix.bin/.idx`;
    returns the document count. Written 10 000 documents per call of megatron's builder."""
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(get_bin_path(str(prefix)), dtype=DType.optimal_dtype(vocab))
    written = documents = 0
    while written < tokens:
        for start in range(0, len(source), 10_000):
            chunk = [source[i] for i in rng.permutation(len(source))[start : start + 10_000]]
            builder.add_document(torch.from_numpy(np.concatenate(chunk)), [len(d) for d in chunk])
            written += sum(len(d) for d in chunk)
            documents += len(chunk)
            if written >= tokens:
                break
    builder.finalize(get_idx_path(str(prefix)))
    return documents


def measure(corpus: Path, valid: Path, save: Path) -> dict[str, float]:
    """One 2-step run in a fresh process; peak RSS via a wrapper that reads its ru_maxrss."""
    argv = [
        sys.executable, str(ROOT / "pretrain_rmt.py"), *RUN_FLAGS,
        "--train-data-path", str(corpus), "--valid-data-path", str(valid),
        "--tokenizer-model", str(ASSETS / TOKENIZER_FILE),
        "--pretrained-checkpoint", str(ASSETS / CHECKPOINT_DIR),
        "--save", str(save), "--tensorboard-dir", str(save / "tb"),
    ]  # fmt: skip
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.time()\n"
        "job = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)\n"
        "for line in job.stdout:\n"
        "    if line.startswith('step 1/'):\n"
        "        print('STEP1', time.time() - start, flush=True)\n"
        "print('END', job.wait(), time.time() - start, flush=True)\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, env=env,
        cwd=save.parent, check=True,
    ).stdout  # fmt: skip
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line}
    if fields["END"][0] != "0":
        raise RuntimeError(f"the run on {corpus} failed:\n{out[-3000:]}")
    steps = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    scored = sum(
        np.load(path, mmap_mode="r").size
        for path in corpus.parent.glob(f"{corpus.name}_entropy_*.npy")
    )
    return {
        "peak_rss_mib": int(fields["MAXRSS"][0]) / 1024,
        "seconds_to_step_1": float(fields["STEP1"][0]),
        "seconds_total": float(fields["END"][1]),
        "seconds_per_step": float(np.mean([s["step_time"] for s in steps])),
        "scored_tokens": float(scored),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, nargs="+", default=[2e6, 2e7, 2e8])
    args = parser.parse_args()
    config = tiny_cpu()
    with tempfile.TemporaryDirectory() as scratch:
        builtin = prepare_builtin_data(Path(scratch) / "builtin")
        vocab = 512
        source = list(documents_of(load_indexed_dataset(builtin.train_prefix, vocab)))
        parameters = stage_parameters(config.model, vocab, 0)
        rows = []
        for target in sorted(int(t) for t in args.tokens):
            directory = Path(scratch) / f"corpus_{target}"
            directory.mkdir()
            started = time.time()
            documents = write_corpus(directory / "train", source, target, vocab)
            print(
                f"{target} tokens: {documents} documents written in {time.time() - started:.0f} s"
            )
            result = measure(directory / "train", builtin.valid_prefix, directory / "run")
            rows.append(
                {
                    "corpus_tokens": target,
                    "corpus_documents": documents,
                    **result,
                    "proxy_gflops": 2 * parameters * result["scored_tokens"] / 1e9,
                }
            )
            print(rows[-1], flush=True)
            for path in directory.glob("train*"):
                path.unlink()
    base = rows[0]
    for row in rows:
        row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        row["wall_ratio"] = row["seconds_total"] / base["seconds_total"]
        row["machine"] = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"
        row["pool_documents"] = config.curriculum.pool_documents
    write_results("corpus_scale_cpu.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
