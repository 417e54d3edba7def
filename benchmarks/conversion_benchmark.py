"""Checkpoint import: time and peak RAM per rank, TP=1 against TP=2 (sharded load).

    python benchmarks/conversion_benchmark.py [--layers 16] [--hidden 2048] [--gguf FILE]

Writes a Llama checkpoint of random weights (config.json + two safetensors shards with an index;
about 0.85B parameters at the defaults, 3.4 GB fp32) to a temporary directory, then imports it
with `torchrun --nproc_per_node TP` for TP = 1 and 2, one fresh process per rank. Each rank
reports the seconds to build its GPTModel stage (uninitialised, as the trainer does before an
import) and to load its slices, and two peaks: `peak_anon_gb`, the memory the process itself
holds (sampled RssAnon; `baseline_gb` is its value before the model is built: Python, torch,
megatron), and `peak_rss_gb` (ru_maxrss), which also counts the pages of the memory-mapped
safetensors files that were read. With sharded reads a TP=2 rank holds half the weights, so
peak_anon - baseline is about half of TP=1's. With --gguf FILE the same is measured for that GGUF
file (dequantisation included; TP is the smallest size > 1 its heads allow).
Writes benchmarks/results/conversion_<machine>.csv and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from peak_memory import AnonPeak, rss_anon
from results_csv import write_results

FIELDS = (
    "source",
    "tp",
    "rank",
    "parameters_on_rank",
    "build_s",
    "load_s",
    "baseline_gb",
    "peak_anon_gb",
    "peak_rss_gb",
)


def write_checkpoint(directory: Path, layers: int, hidden: int) -> None:
    """A LlamaForCausalLM checkpoint of random weights, in two shards with an index."""
    from safetensors.torch import save_file

    ffn, heads, kv_heads, vocab = hidden * 11 // 4, hidden // 128, hidden // 512, 32000
    head_dim = hidden // heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    (directory / "config.json").write_text(json.dumps(config))
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        prefix = f"model.layers.{i}"
        shapes.update(
            {
                f"{prefix}.input_layernorm.weight": (hidden,),
                f"{prefix}.post_attention_layernorm.weight": (hidden,),
                f"{prefix}.self_attn.q_proj.weight": (heads * head_dim, hidden),
                f"{prefix}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                f"{prefix}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                f"{prefix}.self_attn.o_proj.weight": (hidden, heads * head_dim),
                f"{prefix}.mlp.gate_proj.weight": (ffn, hidden),
                f"{prefix}.mlp.up_proj.weight": (ffn, hidden),
                f"{prefix}.mlp.down_proj.weight": (hidden, ffn),
            }
        )
    names = list(shapes)
    weight_map = {}
    generator = torch.Generator().manual_seed(0)
    for shard, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-{shard + 1:05d}-of-00002.safetensors"
        save_file(
            {n: torch.randn(shapes[n], generator=generator) * 0.02 for n in part},
            str(directory / file),
        )
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def worker(source: str) -> None:
    """One rank (under torchrun): build the stage, load it, print a CSV row."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.model_io.checkpoints import import_model_config, load_imported_weights

    tp = int(os.environ["WORLD_SIZE"])
    config = import_model_config(source, tensor_model_parallel_size=tp)
    with parallel.process_group(config, seed=0):
        baseline = rss_anon()
        sampler = AnonPeak()
        started = time.perf_counter()
        model = build_gpt_model(config, config.vocab_size, initialize=False)
        built = time.perf_counter()
        load_imported_weights(model, config, source)
        loaded = time.perf_counter()
        peak_anon = sampler.stop()
    row = {
        "source": Path(source).name,
        "tp": tp,
        "rank": int(os.environ["RANK"]),
        "parameters_on_rank": sum(p.numel() for p in model.parameters()),
        "build_s": round(built - started, 2),
        "load_s": round(loaded - built, 2),
        "baseline_gb": round(baseline / 2**30, 3),
        "peak_anon_gb": round(peak_anon / 2**30, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    print("ROW " + json.dumps(row), flush=True)


def measure(source: str, tp: int) -> list[dict]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={tp}",
        __file__,
        "--worker",
        source,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("ROW ")]
    return sorted(rows, key=lambda r: r["rank"])


def _smallest_tp(source: str) -> int:
    """The smallest TP size > 1 that divides the model's heads and key/value groups."""
    from rmt_megatron.model_io.checkpoints import import_model_config

    config = import_model_config(source)
    return next(
        tp
        for tp in range(2, config.query_groups + 1)
        if config.query_groups % tp == 0 and config.num_attention_heads % tp == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--gguf", default=None, help="also import this GGUF file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        write_checkpoint(Path(scratch), args.layers, args.hidden)
        print(f"wrote the checkpoint in {time.perf_counter() - started:.1f} s", flush=True)
        sources = [scratch] + ([args.gguf] if args.gguf else [])
        for source in sources:
            for tp in (1, _smallest_tp(source)):
                rows += measure(source, tp)
                print(rows[-1], flush=True)
    for row in rows:
        row["source"] = "hf_random_llama" if row["source"] == Path(scratch).name else row["source"]
    machine = f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    write_results(f"conversion_{machine}.csv", rows, FIELDS)


if __name__ == "__main__":
    main()
