"""Rollouts of a random-weight Llama-shape model: tokens/s and peak memory against the plan.

    python benchmarks/rollout_scale.py                 # on a GPU: ~1.2B (Llama-3.2-1B shape), bf16
    python benchmarks/rollout_scale.py --size tiny     # anywhere: a few layers, to run the script

Random weights and random prompt tokens (no tokenizer, no stop token is likely: every row runs to
`--new-tokens`), `--prompts` × `--group-size` rollouts at temperature 1, with our engine
(`mcore.generation`) under its KV budget (`--kv-cache-gib`, default: the room left on the
device) and `--stop-check-interval`, then with megatron-core's dynamic engine
(`mcore.dynamic_generation`) in a KV buffer of the same size, where it can run (CUDA and
flash-attn; elsewhere its row says why not and holds no figure). Reports generated tokens/s and,
on a GPU, the peak memory torch allocated against the prediction: the weights plus the largest
chunk's KV cache (`kv_cache_bytes_per_position`, what `python -m rmt_megatron.plan` counts), or
plus the dynamic engine's whole buffer.
Writes benchmarks/results/rollout_scale_<device>.csv and prints it.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from results_csv import write_results

from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.dynamic_generation import DynamicRolloutEngine, unavailable_reason
from rmt_megatron.mcore.generation import RolloutEngine, kv_cache_bytes_per_position
from rmt_megatron.mcore.gpt_model import DTYPES, build_gpt_model

SIZES = {
    # Llama-3.2-1B's shape: 16 layers, 2048 wide, 8192 MLP, 32 heads over 8 KV groups, tied
    "1b": dict(
        num_layers=16,
        hidden_size=2048,
        ffn_hidden_size=8192,
        num_attention_heads=32,
        num_query_groups=8,
        vocab_size=128256,
    ),
    "tiny": dict(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=256,
        num_attention_heads=4,
        num_query_groups=2,
        vocab_size=1000,
    ),
}
FIELDS = [
    "engine",
    "device",
    "size",
    "parameters",
    "params_dtype",
    "prompts",
    "group_size",
    "prompt_length",
    "new_tokens",
    "stop_check_interval",
    "chunks",
    "generated_tokens",
    "seconds",
    "tokens_per_s",
    "peak_kv_bytes",
    "predicted_peak_bytes",
    "measured_peak_bytes",
    "note",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--stop-check-interval", type=int, default=16)
    parser.add_argument("--kv-cache-gib", type=float, default=None)
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    shape = dict(SIZES[args.size])
    vocab = shape.pop("vocab_size")
    config = ModelConfig(
        **shape,
        seq_length=args.prompt_length + args.new_tokens,
        max_position_embeddings=args.prompt_length + args.new_tokens,
        params_dtype="bfloat16" if on_gpu else "float32",
    )
    device = torch.cuda.get_device_name() if on_gpu else f"cpu-{platform.machine()}"
    with parallel.process_group(config, seed=0):
        model = build_gpt_model(config, vocab)
        parameters = sum(p.numel() for p in model.parameters())
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        per_position = kv_cache_bytes_per_position(config)
        engine = RolloutEngine(
            model,
            vocab,
            eos_id=0,
            token_bytes=lambda ids: [b"x"] * len(ids),
            hidden_size=config.hidden_size,
            params_dtype=DTYPES[config.params_dtype],
            kv_cache_bytes=None if args.kv_cache_gib is None else int(args.kv_cache_gib * 2**30),
            kv_bytes_per_position=per_position,
            stop_check_interval=args.stop_check_interval,
        )
        generator = torch.Generator().manual_seed(0)
        prompts = torch.randint(1, vocab, (args.prompts, args.prompt_length), generator=generator)
        settings = dict(
            group_size=args.group_size,
            max_new_tokens=args.new_tokens,
            temperature=1.0,
            top_p=1.0,
            generator=generator,
        )
        timed = measure(engine, prompts.tolist(), settings, on_gpu)
        budget = engine.kv_budget()  # what the timed call found (memory is back to where it was)
        chunks = engine.chunks(prompts.tolist(), args.group_size, args.new_tokens, budget)
        rows = [
            {
                "engine": "rmt_megatron static",
                **timed,
                "chunks": len(chunks),
                "peak_kv_bytes": engine.peak_kv_cache_bytes,
                "predicted_peak_bytes": weights + engine.peak_kv_cache_bytes,
                "note": "" if on_gpu else "no GPU: peak memory not measured",
            }
        ]
        unavailable = unavailable_reason()
        if unavailable is None:
            dynamic = DynamicRolloutEngine(
                model,
                vocab,
                eos_id=0,
                token_bytes=lambda ids: [b"x"] * len(ids),
                max_sequence_length=args.prompt_length + args.new_tokens,
                kv_cache_bytes=budget,
            )
            rows.append(
                {
                    "engine": "megatron-core dynamic",
                    **measure(dynamic, prompts.tolist(), settings, on_gpu),
                    "peak_kv_bytes": budget,
                    "predicted_peak_bytes": weights + (budget or 0),
                    "note": "KV buffer allocated whole",
                }
            )
        else:
            rows.append({"engine": "megatron-core dynamic", "note": f"not run: {unavailable}"})
    common = {
        "device": device,
        "size": args.size,
        "parameters": parameters,
        "params_dtype": config.params_dtype,
        "prompts": args.prompts,
        "group_size": args.group_size,
        "prompt_length": args.prompt_length,
        "new_tokens": args.new_tokens,
        "stop_check_interval": args.stop_check_interval,
    }
    rows = [{**common, **row} for row in rows]
    write_results(f"rollout_scale_{device.replace(' ', '_')}_{args.size}.csv", rows, FIELDS)


def measure(engine, prompts: list[list[int]], settings: dict, on_gpu: bool) -> dict:
    """One warm-up call on the first prompt, then all of `prompts` timed: generated tokens,
    seconds, tokens/s, and on a GPU the peak memory torch allocated during the timed call."""
    engine.generate(prompts[:1], **settings)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    rollouts = engine.generate(prompts, **settings)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    generated = sum(len(r.tokens) for r in rollouts)
    return {
        "generated_tokens": generated,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(generated / seconds, 1),
        "measured_peak_bytes": torch.cuda.max_memory_allocated() if on_gpu else "",
    }


if __name__ == "__main__":
    main()
