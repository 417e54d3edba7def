"""Rollout speed: KV cache vs. full recompute, and what the budget cut saves.

    python benchmarks/rollout_benchmark.py [--prompts 16] [--group-size 4] [--repeats 3]

Uses the built-in base model and held-out prompts of the built-in corpus (tiny_cpu preset).
Both comparisons run in one process on the same prompts with the same seeds, repeated, and are
reported as ratios of the medians:
- kv_cache: tokens/s with megatron-core's static KV cache (our row compaction) vs. recomputing
  the whole sequence every step, at the same generation length;
- budget_cut: generated tokens and seconds when rollouts stop at 2·B_T + 16 tokens (no length
  reward is possible past 2·B_T) vs. at max_response_length.
Writes benchmarks/results/rollout_<device>.csv (one row per measurement) and prints it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
from results_csv import write_results

from rmt_megatron.builtin.datasets import prepare_builtin_data
from rmt_megatron.config.presets import tiny_cpu
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import load_checkpoint
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.mcore.gpt_model import build_gpt_model
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.method.budget import budget_at, rollout_token_cap
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.step_builder import ANSWER_ALLOWANCE


def timed(engine, prompts, group_size, max_new_tokens, use_kv_cache, repeats):
    seconds, tokens = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        rollouts = engine.generate(
            prompts,
            group_size=group_size,
            max_new_tokens=max_new_tokens,
            temperature=0.8,
            top_p=1.0,
            generator=torch.Generator().manual_seed(repeat),
            use_kv_cache=use_kv_cache,
        )
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(r.tokens) for r in rollouts))
    return statistics.median(tokens), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = tiny_cpu()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else (f"cpu-{platform.machine()}-{torch.get_num_threads()}threads")
    )
    rows = []
    with (
        parallel.process_group(config.model, config.train.seed),
        tempfile.TemporaryDirectory() as scratch,
    ):
        builtin = prepare_builtin_data(scratch)
        tokenizer = SentencePieceTokenizer(builtin.tokenizer_model)
        documents = documents_of(load_indexed_dataset(builtin.valid_prefix, tokenizer.vocab_size))
        model = build_gpt_model(config.model, tokenizer.vocab_size)
        load_checkpoint(builtin.base_checkpoint, model, restore_rng=False)
        engine = RolloutEngine(
            model,
            tokenizer.vocab_size,
            tokenizer.eos_id,
            tokenizer.token_bytes,
            config.model.hidden_size,
        )
        final_budget = budget_at(config.train.train_iters, config.train.train_iters, config.budget)
        prompts = [
            build_prompt(
                tokenizer,
                doc[: len(doc) // 2].tolist(),
                final_budget,
                config.rollout.max_prompt_length,
            )
            for doc in documents[: args.prompts]
        ]
        longest = config.rollout.max_response_length
        cut = rollout_token_cap(final_budget, longest, ANSWER_ALLOWANCE)
        for name, setting, new_tokens, use_kv in (
            ("kv_cache", "cached", longest, True),
            ("kv_cache", "recompute", longest, False),
            ("budget_cut", f"cap_2B+{ANSWER_ALLOWANCE}={cut}", cut, True),
            ("budget_cut", f"cap_max={longest}", longest, True),
        ):
            tokens, seconds = timed(
                engine, prompts, args.group_size, new_tokens, use_kv, args.repeats
            )
            rows.append(
                {
                    "measurement": name,
                    "setting": setting,
                    "device": device,
                    "prompts": args.prompts,
                    "group_size": args.group_size,
                    "budget": final_budget,
                    "generated_tokens": tokens,
                    "seconds": round(seconds, 4),
                    "tokens_per_s": round(tokens / seconds, 1),
                }
            )
    cached, recompute, capped, uncapped = rows
    rows.append(
        {
            "measurement": "ratio",
            "setting": "kv_cache_speedup_tokens_per_s",
            "device": device,
            "tokens_per_s": round(cached["tokens_per_s"] / recompute["tokens_per_s"], 3),
        }
    )
    rows.append(
        {
            "measurement": "ratio",
            "setting": "budget_cut_tokens_saved_fraction",
            "device": device,
            "generated_tokens": round(
                1 - capped["generated_tokens"] / uncapped["generated_tokens"], 3
            ),
        }
    )
    rows.append(
        {
            "measurement": "ratio",
            "setting": "budget_cut_time_saved_fraction",
            "device": device,
            "seconds": round(1 - capped["seconds"] / uncapped["seconds"], 3),
        }
    )
    fields = [
        "measurement",
        "setting",
        "device",
        "prompts",
        "group_size",
        "budget",
        "generated_tokens",
        "seconds",
        "tokens_per_s",
    ]
    write_results(f"rollout_{device.replace(' ', '_')}.csv", rows, fields)


if __name__ == "__main__":
    main()
