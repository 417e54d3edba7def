"""The rollout engine a run asks for (`--rmt-rollout-engine`), built over this rank's stage of
the policy: ours (`generation.RolloutEngine`, the default) or megatron-core's dynamic engine
(`dynamic_generation.DynamicRolloutEngine`, CUDA and flash-attn only). Both answer
`generate(prompts, group_size=, max_new_tokens=, temperature=, top_p=, generator=)` with G
`Rollout`s per prompt, prompt-major, cut by the same stop rule."""

from __future__ import annotations

from rmt_megatron.config.sections import ModelConfig, RolloutConfig
from rmt_megatron.mcore.dynamic_generation import DynamicRolloutEngine, require_available
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.method.tokenizer import Tokenizer

AnyRolloutEngine = RolloutEngine | DynamicRolloutEngine


def build_rollout_engine(
    model, tokenizer: Tokenizer, config: ModelConfig, rollout: RolloutConfig
) -> AnyRolloutEngine:
    """`rollout.engine`'s engine over `model`, with `rollout`'s KV budget (and, for ours, its
    stop-check interval). The dynamic engine raises a `ConfigError` where it cannot run."""
    if rollout.engine == "mcore-dynamic":
        return DynamicRolloutEngine(
            model,
            tokenizer.vocab_size,
            tokenizer.eos_id,
            tokenizer.token_bytes,
            rollout.max_prompt_length + rollout.max_response_length,
            kv_cache_bytes=rollout.kv_cache_bytes,
        )
    return RolloutEngine.for_model(model, tokenizer, config, rollout)


def require_runnable(rollout: RolloutConfig) -> None:
    """Refuse, before anything is built, an engine that cannot run on this machine."""
    if rollout.engine == "mcore-dynamic":
        require_available()
