"""Rollout speed and memory: the KV cache, its compaction, the stop-check interval, the KV
budget, and what the budget cut saves.

    python benchmarks/rollout_benchmark.py [--prompts 16] [--group-size 4] [--repeats 3]

Uses the built-in base model and held-out prompts of the built-in corpus (tiny_cpu preset), whose
rollouts stop on their own at different lengths. Every setting runs in one process on the same
prompts with the same seeds, repeated; medians, compared as ratios:
- kv_cache: tokens/s with megatron-core's static KV cache vs. recomputing the whole sequence
  every step, at the same generation length;
- compaction: the cache compacted as the engine did before (every decoding step, over the whole
  allocated length, `CompactingEveryStep`) vs. now (only when a row finishes, over the filled
  positions): tokens/s and cache bytes moved per decoding step, with the same tokens;
- stop_check: the stop rule every step vs. every 16 steps (one host transfer per 16 steps);
- kv_budget: the whole step in one chunk vs. under `--rmt-rollout-kv-cache-gib` a quarter of
  the step's cache: the peak cache held and tokens/s;
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
from rmt_megatron.config.sections import RolloutConfig
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import load_checkpoint
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.mcore.gpt_model import build_gpt_model
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.method.budget import budget_at, rollout_token_cap
from rmt_megatron.method.prompt import build_prompt
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.step_builder import ANSWER_ALLOWANCE

FIELDS = [
    "measurement",
    "setting",
    "device",
    "prompts",
    "group_size",
    "budget",
    "generated_tokens",
    "seconds",
    "tokens_per_s",
    "decoding_steps",
    "bytes_moved_per_step",
    "peak_kv_bytes",
]


class CompactingEveryStep(RolloutEngine):
    """The engine's cache compaction as it was: before every decoding step, every layer's K and V
    gathered over the whole allocated length for the rows still decoding (an identity gather when
    none finished), on top of the compaction the engine does itself."""

    def _forward(self, tokens, mask, context):
        if context is not None and tokens.shape[1] == 1:
            rows = torch.arange(tokens.shape[0])
            for key, value in context.key_value_memory_dict.values():
                for memory in (key, value):
                    moved = memory[:, rows]
                    memory[:, : len(rows)] = moved
                    self.cache_bytes_moved += moved.numel() * moved.element_size()
        return super()._forward(tokens, mask, context)


def timed(engine, prompts, group_size, max_new_tokens, use_kv_cache, repeats):
    """Medians over `repeats` seeded calls, and the tokens of the first."""
    seconds, tokens, steps, moved, first = [], [], [], [], None
    for repeat in range(repeats):
        engine.decoding_steps = engine.cache_bytes_moved = 0
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
        steps.append(engine.decoding_steps)
        moved.append(engine.cache_bytes_moved)
        first = first or [r.tokens for r in rollouts]
    return {
        "generated_tokens": statistics.median(tokens),
        "seconds": round(statistics.median(seconds), 4),
        "tokens_per_s": round(statistics.median(tokens) / statistics.median(seconds), 1),
        "decoding_steps": statistics.median(steps),
        "bytes_moved_per_step": round(statistics.median(moved) / statistics.median(steps)),
        "peak_kv_bytes": engine.peak_kv_cache_bytes,
    }, first


def ratio(device, setting, column, value):
    return {"measurement": "ratio", "setting": setting, "device": device, column: round(value, 3)}


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
    rows: dict[tuple[str, str], dict] = {}
    tokens_of: dict[str, list] = {}
    with (
        parallel.process_group(config.model, config.train.seed),
        tempfile.TemporaryDirectory() as scratch,
    ):
        builtin = prepare_builtin_data(scratch)
        tokenizer = SentencePieceTokenizer(builtin.tokenizer_model)
        documents = documents_of(load_indexed_dataset(builtin.valid_prefix, tokenizer.vocab_size))
        model = build_gpt_model(config.model, tokenizer.vocab_size)
        load_checkpoint(builtin.base_checkpoint, model, restore_rng=False)

        def engine(kind=RolloutEngine, **rollout) -> RolloutEngine:
            return kind.for_model(model, tokenizer, config.model, RolloutConfig(**rollout))

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
        step_cache = (
            len(prompts)
            * args.group_size
            * (max(len(p) for p in prompts) + longest)
            * engine().kv_bytes_per_position
        )
        quarter_gib = step_cache / 4 / 2**30
        timed(engine(), prompts, args.group_size, longest, True, 1)  # warm-up, not reported
        for name, setting, the_engine, new_tokens, use_kv in (
            ("kv_cache", "cached", engine(), longest, True),
            ("kv_cache", "recompute", engine(), longest, False),
            ("compaction", "every_step_whole_length", engine(CompactingEveryStep), longest, True),
            ("compaction", "on_finish_filled_only", engine(), longest, True),
            ("stop_check", "every_step", engine(), longest, True),
            ("stop_check", "every_16_steps", engine(stop_check_interval=16), longest, True),
            ("kv_budget", "whole_step", engine(), longest, True),
            ("kv_budget", "quarter_of_step", engine(kv_cache_gib=quarter_gib), longest, True),
            ("budget_cut", f"cap_2B+{ANSWER_ALLOWANCE}={cut}", engine(), cut, True),
            ("budget_cut", f"cap_max={longest}", engine(), longest, True),
        ):
            measured, tokens = timed(
                the_engine, prompts, args.group_size, new_tokens, use_kv, args.repeats
            )
            tokens_of[f"{name}/{setting}"] = tokens
            rows[name, setting] = {
                "measurement": name,
                "setting": setting,
                "device": device,
                "prompts": args.prompts,
                "group_size": args.group_size,
                "budget": final_budget,
                **measured,
            }
    if (
        tokens_of["compaction/every_step_whole_length"]
        != tokens_of["compaction/on_finish_filled_only"]
    ):
        raise SystemExit("the two compactions sampled different tokens: the engine is wrong")

    def speed(name, after, before):
        return rows[name, after]["tokens_per_s"] / rows[name, before]["tokens_per_s"]

    before, after = (
        rows["compaction", "every_step_whole_length"],
        rows["compaction", "on_finish_filled_only"],
    )
    capped, uncapped = (
        rows["budget_cut", f"cap_2B+{ANSWER_ALLOWANCE}={cut}"],
        rows["budget_cut", f"cap_max={longest}"],
    )
    whole, quarter = rows["kv_budget", "whole_step"], rows["kv_budget", "quarter_of_step"]
    ratios = [
        ratio(
            device,
            "kv_cache_speedup_tokens_per_s",
            "tokens_per_s",
            speed("kv_cache", "cached", "recompute"),
        ),
        ratio(
            device,
            "compaction_bytes_moved_per_step_after_over_before",
            "bytes_moved_per_step",
            after["bytes_moved_per_step"] / before["bytes_moved_per_step"],
        ),
        ratio(
            device,
            "compaction_speedup_tokens_per_s",
            "tokens_per_s",
            speed("compaction", "on_finish_filled_only", "every_step_whole_length"),
        ),
        ratio(
            device,
            "stop_check_16_speedup_tokens_per_s",
            "tokens_per_s",
            speed("stop_check", "every_16_steps", "every_step"),
        ),
        ratio(
            device,
            "kv_budget_quarter_peak_over_whole",
            "peak_kv_bytes",
            quarter["peak_kv_bytes"] / whole["peak_kv_bytes"],
        ),
        ratio(
            device,
            "kv_budget_quarter_speed_over_whole",
            "tokens_per_s",
            speed("kv_budget", "quarter_of_step", "whole_step"),
        ),
        ratio(
            device,
            "budget_cut_tokens_saved_fraction",
            "generated_tokens",
            1 - capped["generated_tokens"] / uncapped["generated_tokens"],
        ),
        ratio(
            device,
            "budget_cut_time_saved_fraction",
            "seconds",
            1 - capped["seconds"] / uncapped["seconds"],
        ),
    ]
    if quarter["peak_kv_bytes"] > quarter_gib * 2**30:
        raise SystemExit("the KV budget was exceeded: the engine is wrong")
    write_results(f"rollout_{device.replace(' ', '_')}.csv", [*rows.values(), *ratios], FIELDS)


if __name__ == "__main__":
    main()
