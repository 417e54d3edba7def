"""Rollouts through megatron-core's dynamic inference engine (`--rmt-rollout-engine mcore-dynamic`).

megatron-core's `DynamicInferenceEngine` keeps the KV cache in one buffer of fixed-size blocks
(paged), admits requests while blocks are free and retires finished ones every step (continuous
batching), and can replay decoding steps as CUDA graphs. Its attention over the paged cache is
flash-attn's (>= 2.7.3, or FA3/FA4), so it runs only on a CUDA device with flash-attn installed;
`generation.RolloutEngine` is the default and the only engine on a CPU. It runs over the training
`GPTModel` itself: no second copy of the weights.

The contract is `RolloutEngine.generate`'s: `group_size` rollouts per prompt, prompt-major, each
cut by the same stop rule (`generation.RowStop`):
- EOS: the engine's termination id.
- The closed answer: after each engine step, every active request's new tokens go through its
  stop rule on the host; a request that stopped joins the engine's stop-word set, which finishes
  it at the next step without appending that step's token (the bookkeeping megatron-core uses
  for its own stop words). A rollout's tokens end at the stopping token, as with ours.
- `max_new_tokens`: the request's `num_tokens_to_generate`.
A request the engine evicts (out of blocks) goes on later as a new request of the same record,
its prompt extended by what it had generated; the stop rule reads whole records
(`tokens_after`), so no token is fed twice or missed.

The same results up to sampling: the engine samples from the gathered logits with its own CUDA
generator (`controller.sampling_rng`), reseeded at each call from the caller's generator (one
draw, the same on every rank); logits of Megatron's vocabulary padding (ids >= the tokenizer's
vocabulary) are set to -inf on the way out of the output layer, so no padding id is drawn, as
ours never draws one. Greedy-equivalent settings give the tokens ours gives.

KV memory: the engine's buffer is the KV budget (`--rmt-rollout-kv-cache-gib`, or the room the
memory plan leaves), allocated once when the first rollouts run and kept; requests wait for
blocks instead of running in chunks.

megatron-core's API moved between 0.16 and 0.19: the context took keyword sizes and now takes the
model's `TransformerConfig` and an `InferenceConfig`; the model wrapper took an
`InferenceWrapperConfig`; the engine took the random seed. `engine_arguments` writes each
version's arguments; a CPU test binds them to the installed constructors' signatures.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core.models.gpt import GPTModel

from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.generation import Rollout, RowStop, kv_budget, output_layer_hooks
from rmt_megatron.method.answer_format import decode_bytes

BLOCK_SIZE_TOKENS = 256
"""Positions per KV block (megatron-core's default)."""

NEW_API = importlib.util.find_spec("megatron.core.inference.config") is not None
"""megatron-core >= 0.17's constructors (an `InferenceConfig`), else 0.16's."""


def unavailable_reason() -> str | None:
    """Why the dynamic engine cannot run here (no CUDA device, no flash-attn kernel that
    megatron-core's paged attention accepts), or None when it can."""
    if not torch.cuda.is_available():
        return "it needs a CUDA device and this machine has none"
    from megatron.core.transformer import attention
    from megatron.core.utils import is_fa_min_version

    if getattr(attention, "HAVE_FA3", False) or getattr(attention, "HAVE_FA4", False):
        return None
    if attention.flash_attn_varlen_func is not None and is_fa_min_version("2.7.3"):
        return None
    return "it needs flash-attn >= 2.7.3 (or FA3) for its paged attention, and none is installed"


def require_available() -> None:
    """Raise a `ConfigError` naming the flag when the dynamic engine cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        raise ConfigError(
            f"--rmt-rollout-engine mcore-dynamic: {reason}; use --rmt-rollout-engine rmt "
            "(the default, which runs everywhere)"
        )


@dataclass(frozen=True)
class EngineArguments:
    """Keyword arguments of megatron-core's context, model wrapper and engine constructors (the
    installed version's)."""

    context: dict[str, Any]
    wrapper: dict[str, Any]
    engine: dict[str, Any]


def engine_arguments(
    config, vocab_size: int, buffer_bytes: int, max_sequence_length: int
) -> EngineArguments:
    """The arguments that build the engine over a model with `TransformerConfig` `config` and
    (padded) `vocab_size`: a KV buffer of `buffer_bytes` on this rank, requests of up to
    `max_sequence_length` positions (prompt and response), the last position's logits only, no
    CUDA graphs, no chunked prefill."""
    buffer_gib = buffer_bytes / 2**30
    if NEW_API:
        from megatron.core.inference.config import InferenceConfig

        inference = InferenceConfig(
            block_size_tokens=BLOCK_SIZE_TOKENS,
            buffer_size_gb=buffer_gib,  # type: ignore[arg-type]  # annotated int, used as float
            max_sequence_length=max_sequence_length,
            materialize_only_last_token_logits=True,
            num_cuda_graphs=None,
        )
        return EngineArguments(
            context={"model_config": config, "inference_config": inference}, wrapper={}, engine={}
        )
    from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
        InferenceWrapperConfig,
    )

    pp = config.pipeline_model_parallel_size
    wrapper_config = InferenceWrapperConfig(
        hidden_size=config.hidden_size,
        params_dtype=config.params_dtype,
        inference_batch_times_seqlen_threshold=-1,
        padded_vocab_size=vocab_size,
        inference_max_seq_length=max_sequence_length,
    )
    return EngineArguments(
        context={
            "params_dtype": config.params_dtype,
            "num_layers": config.num_layers // pp,
            "kv_channels": config.kv_channels,
            "num_attention_heads": config.num_query_groups,  # the cache holds the KV heads
            "tensor_model_parallel_size": config.tensor_model_parallel_size,
            "pipeline_model_parallel_size": pp,
            "max_sequence_length": max_sequence_length,
            "buffer_size_gb": buffer_gib,
            "block_size_tokens": BLOCK_SIZE_TOKENS,
            "materialize_only_last_token_logits": True,
            "num_cuda_graphs": None,
        },
        wrapper={"inference_wrapper_config": wrapper_config},
        engine={"random_seed": 0, "enable_chunked_prefill": False},
    )


def sampling_arguments(
    temperature: float, top_p: float, max_new_tokens: int, eos_id: int
) -> dict[str, Any]:
    """megatron-core `SamplingParams` for one rollout. Ours reads temperature 0 as greedy and
    top-p 1 as off; megatron-core's greedy is top-k 1 and its "off" is top-p 0."""
    greedy = temperature <= 0
    return {
        "temperature": 1.0 if greedy else temperature,
        "top_k": 1 if greedy else 0,
        "top_p": 0.0 if greedy or top_p >= 1.0 else top_p,
        "num_tokens_to_generate": max_new_tokens,
        "termination_id": eos_id,
        "return_log_probs": False,
    }


def hide_padding(vocab_size: int) -> Callable:
    """A forward hook for a `ColumnParallelLinear` output layer that returns -inf for the
    vocabulary ids >= `vocab_size` (Megatron's padding) in this TP rank's columns
    (`(logits [s, b, V/TP], bias)`, rank r holding ids [r·V/TP, (r+1)·V/TP))."""

    def hook(module, args, output):
        logits, bias = output
        columns = logits.shape[-1]
        start = parallel.tensor_parallel_rank() * columns
        padding = min(columns, max(0, start + columns - vocab_size))
        if padding:
            logits = logits.clone()
            logits[..., columns - padding :] = float("-inf")
        return logits, bias

    return hook


def hidden_vocab_padding(model: torch.nn.Module, vocab_size: int):
    """Inside (a context manager), the output layer of every last-stage `GPTModel` in `model`
    hides the padding ids (`hide_padding`)."""
    return output_layer_hooks(
        model, lambda layer: layer.register_forward_hook(hide_padding(vocab_size))
    )


def tokens_after(record, count: int) -> list[int]:
    """The tokens a request generated after its first `count`, from its
    `DynamicInferenceRequestRecord`: an evicted request goes on as a new request in the same
    record (its prompt extended by what it had generated), so its tokens are spread over the
    record's requests, in order. Costs the new tokens, not all of them."""
    new: list[int] = []
    for request in record.requests:
        tokens = request.generated_tokens
        if count >= len(tokens):
            count -= len(tokens)
            continue
        new += tokens[count:]
        count = 0
    return new


def drive(
    engine,
    prompts: Sequence[Sequence[int]],
    group_size: int,
    sampling_params,
    stop: Callable[[], RowStop],
) -> list[Rollout]:
    """Run `group_size` requests per prompt through `engine` (a megatron-core
    `DynamicInferenceEngine`, reset) until all finish, cutting each with a fresh `stop()` rule
    as described in the module docstring. Request id i answers prompt i // group_size."""
    count = len(prompts) * group_size
    for request_id in range(count):
        engine.add_request(request_id, list(prompts[request_id // group_size]), sampling_params)
    stops = [stop() for _ in range(count)]
    taken: list[list[int]] = [[] for _ in range(count)]
    seen = [0] * count  # generated tokens already fed to each stop rule
    done: set[int] = set()

    def feed(request_id: int, record) -> bool:
        new = tokens_after(record, seen[request_id])
        seen[request_id] += len(new)
        return stops[request_id].take(new, taken[request_id])

    while engine.has_unfinished_requests():
        result = engine.step_modern()
        for request_id in result["active_request_ids"]:
            if feed(request_id, engine.requests[request_id].record):
                engine.stop_word_finished_request_ids.add(request_id)
        for record in result["finished_request_records"]:
            request_id = record.requests[0].request_id
            feed(request_id, record)
            done.add(request_id)
    if len(done) != count:
        raise RuntimeError(f"the dynamic engine finished {len(done)} of {count} rollouts")
    return [
        Rollout(request_id // group_size, taken[request_id], stops[request_id].stopped)
        for request_id in range(count)
    ]


class DynamicRolloutEngine:
    """`RolloutEngine.generate` over megatron-core's dynamic engine (see the module docstring).

    vocab_size: the tokenizer's. eos_id, token_bytes: the stop rule's. max_sequence_length: the
    longest prompt plus response any call will ask for. kv_cache_bytes: the engine's KV buffer on
    this rank; None: the room `device.free_memory_room` finds when the engine is built (the
    smallest over the model-parallel group)."""

    def __init__(
        self,
        model,
        vocab_size: int,
        eos_id: int,
        token_bytes: Callable[[Sequence[int]], list[bytes]],
        max_sequence_length: int,
        *,
        kv_cache_bytes: int | None = None,
    ) -> None:
        require_available()
        self.model = model
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.token_bytes = token_bytes
        self.max_sequence_length = max_sequence_length
        self.kv_cache_bytes = kv_cache_bytes
        self._engine = None

    def _build(self):
        from megatron.core.inference.contexts import DynamicInferenceContext
        from megatron.core.inference.engines import DynamicInferenceEngine
        from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
            GPTInferenceWrapper,
        )
        from megatron.core.inference.text_generation_controllers.text_generation_controller import (
            TextGenerationController,
        )

        budget = kv_budget(self.kv_cache_bytes)
        assert budget is not None, "a CUDA device always gives a budget"
        gpt = next(m for m in self.model.modules() if isinstance(m, GPTModel))
        arguments = engine_arguments(gpt.config, gpt.vocab_size, budget, self.max_sequence_length)
        context = DynamicInferenceContext(**arguments.context)
        wrapper = GPTInferenceWrapper(gpt, inference_context=context, **arguments.wrapper)
        tokenizer = _EngineTokenizer(self.eos_id, self.token_bytes)
        controller = TextGenerationController(wrapper, tokenizer)
        return DynamicInferenceEngine(controller, context, **arguments.engine)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
        use_kv_cache: bool = True,
    ) -> list[Rollout]:
        """`group_size` rollouts per prompt, prompt-major: rollout i answers prompt i // G.
        `use_kv_cache` must be True (the engine always caches)."""
        from megatron.core.inference.sampling_params import SamplingParams

        if not use_kv_cache:
            raise ValueError("the dynamic engine always uses its KV cache")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        longest = max(len(p) for p in prompts) + max_new_tokens
        if longest > self.max_sequence_length:
            raise ValueError(
                f"a rollout of {longest} positions exceeds the engine's {self.max_sequence_length}"
            )
        seed = int(torch.randint(2**62, (1,), generator=generator))
        was_training = self.model.training
        self.model.eval()
        try:
            if self._engine is None:
                self._engine = self._build()
            self._engine.reset()
            self._engine.controller.sampling_rng.manual_seed(seed)
            params = SamplingParams(
                **sampling_arguments(temperature, top_p, max_new_tokens, self.eos_id)
            )
            with hidden_vocab_padding(self.model, self.vocab_size):
                return drive(
                    self._engine,
                    prompts,
                    group_size,
                    params,
                    lambda: RowStop(self.eos_id, self.token_bytes),
                )
        finally:
            self.model.train(was_training)


class _EngineTokenizer:
    """What megatron-core's engine asks of a tokenizer when requests arrive as token ids: the
    end-of-document id, and text for the finished requests' records (not read here)."""

    def __init__(self, eos_id: int, token_bytes: Callable[[Sequence[int]], list[bytes]]) -> None:
        self.eod = eos_id
        self.token_bytes = token_bytes

    def detokenize(self, tokens: Sequence[int]) -> str:
        return decode_bytes(b"".join(self.token_bytes(list(tokens))))
