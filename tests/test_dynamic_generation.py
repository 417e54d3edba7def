"""megatron-core's dynamic engine as a rollout engine, up to the engine itself (which needs CUDA
and flash-attn; the greedy comparison with ours is in tests/test_rollout_and_step.py and runs
where they are): the installed megatron-core accepts the arguments we build, the stop rule cuts
rollouts through the engine's stop-word bookkeeping, padding ids cannot be drawn, sampling
settings translate, and a machine without the engine refuses the flag in one line."""

import inspect
import types
from dataclasses import dataclass, field

import pytest
import torch
from megatron.core.inference.contexts import DynamicInferenceContext
from megatron.core.inference.engines import DynamicInferenceEngine
from megatron.core.inference.inference_request import DynamicInferenceRequestRecord
from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
    GPTInferenceWrapper,
)
from megatron.core.inference.sampling_params import SamplingParams
from megatron.core.transformer import TransformerConfig

from rmt_megatron.config.sections import ModelConfig, RolloutConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore import dynamic_generation
from rmt_megatron.mcore.dynamic_generation import (
    NEW_API,
    drive,
    engine_arguments,
    hide_padding,
    sampling_arguments,
)
from rmt_megatron.mcore.generation import RowStop
from rmt_megatron.mcore.rollout_engines import build_rollout_engine, require_runnable

EOS = 1
BYTES = {2: b"x", 3: b"</think>", 4: b"\\boxed{", 5: b"}", 6: b"{"}


def token_bytes(ids):
    return [BYTES.get(i, b"") for i in ids]


def _transformer_config(tp=1, pp=1):
    return TransformerConfig(
        num_layers=4,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=16,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=torch.bfloat16,
        pipeline_dtype=torch.bfloat16,
    )


def test_the_installed_megatron_core_accepts_the_engine_arguments():
    config = _transformer_config()
    arguments = engine_arguments(config, 320, 3 * 2**30, 500)
    context = inspect.signature(DynamicInferenceContext).bind(**arguments.context).arguments
    inspect.signature(GPTInferenceWrapper).bind(
        object(), inference_context=object(), **arguments.wrapper
    )
    inspect.signature(DynamicInferenceEngine).bind(object(), object(), **arguments.engine)
    inspect.signature(SamplingParams).bind(**sampling_arguments(0.8, 0.9, 64, EOS))
    if NEW_API:
        inference = context["inference_config"]
        assert context["model_config"] is config
        sizes = (inference.buffer_size_gb, inference.max_sequence_length)
        assert inference.materialize_only_last_token_logits
    else:
        assert context["num_layers"] == 4 and context["num_attention_heads"] == 2
        assert arguments.wrapper["inference_wrapper_config"].padded_vocab_size == 320
        sizes = (context["buffer_size_gb"], context["max_sequence_length"])
        assert context["materialize_only_last_token_logits"]
    assert sizes == (3.0, 500)


def test_a_pipeline_stage_caches_its_own_layers():
    config = _transformer_config(tp=2, pp=2)
    context = engine_arguments(config, 320, 2**30, 100).context
    if NEW_API:  # megatron-core divides the model config's layers by its PP size itself
        assert context["model_config"].pipeline_model_parallel_size == 2
    else:
        assert (context["num_layers"], context["tensor_model_parallel_size"]) == (2, 2)


def test_sampling_settings_translate_to_megatron_core_s():
    greedy = sampling_arguments(0.0, 0.9, 10, EOS)
    assert (greedy["top_k"], greedy["top_p"], greedy["temperature"]) == (1, 0.0, 1.0)
    full = sampling_arguments(0.7, 1.0, 10, EOS)
    assert (full["top_k"], full["top_p"], full["temperature"]) == (0, 0.0, 0.7)
    nucleus = sampling_arguments(0.7, 0.9, 10, EOS)
    assert (nucleus["top_p"], nucleus["num_tokens_to_generate"]) == (0.9, 10)
    assert nucleus["termination_id"] == EOS


@pytest.mark.parametrize(
    ("vocab", "rank", "hidden"), [(21, 0, 0), (21, 1, 0), (21, 2, 3), (8, 1, 8)]
)
def test_padding_ids_get_minus_infinity_in_each_tensor_parallel_shard(
    monkeypatch, vocab, rank, hidden
):
    """Shards of 8 columns (rank r holds ids 8r..8r+7): a tokenizer vocabulary of 21 leaves the
    last 3 of rank 2 as padding; one of 8 makes all of rank 1 padding."""
    monkeypatch.setattr(dynamic_generation.parallel, "tensor_parallel_rank", lambda: rank)
    logits = torch.randn(3, 2, 8)
    shard, bias = hide_padding(vocab)(None, None, (logits, None))
    assert bias is None
    assert torch.equal(shard[..., : 8 - hidden], logits[..., : 8 - hidden])
    assert bool((shard[..., 8 - hidden :] == float("-inf")).all())


@dataclass
class _Request:
    request_id: int
    generated_tokens: list = field(default_factory=list)


@dataclass
class _Record:
    requests: list


@dataclass
class _Entry:
    record: _Record


class _ScriptedEngine:
    """The parts of megatron-core's `DynamicInferenceEngine` that `drive` uses, with its
    bookkeeping: at most `slots` requests decode at once (the rest wait for one to finish); a
    request in `stop_word_finished_request_ids` at the start of a step finishes in it without a
    new token; otherwise it takes the next token of its script and finishes at the termination
    id or after `num_tokens_to_generate` tokens. After `evict_at` tokens, a request is evicted
    and goes on as a new request in its record (as megatron-core's `record.checkpoint()`)."""

    def __init__(self, scripts, slots, evict_at):
        self.scripts, self.slots, self.evict_at = scripts, slots, evict_at
        self.waiting, self.active, self.requests = [], [], {}
        self.stop_word_finished_request_ids = set()
        self.steps = 0

    def add_request(self, request_id, prompt, params):
        self.params = params
        self.requests[request_id] = _Entry(_Record([_Request(request_id)]))
        self.waiting.append(request_id)

    def has_unfinished_requests(self):
        return bool(self.waiting or self.active)

    def step_modern(self):
        self.steps += 1
        while self.waiting and len(self.active) < self.slots:
            self.active.append(self.waiting.pop(0))
        finished = []
        for request_id in list(self.active):
            record = self.requests[request_id].record
            if request_id not in self.stop_word_finished_request_ids:
                count = sum(len(r.generated_tokens) for r in record.requests)
                token = self.scripts[request_id][count]
                record.requests[-1].generated_tokens.append(token)
                if count + 1 == self.evict_at:
                    record.requests.append(_Request(request_id))
                if not (
                    token == self.params.termination_id
                    or count + 1 == self.params.num_tokens_to_generate
                ):
                    continue
            self.stop_word_finished_request_ids.discard(request_id)
            self.active.remove(request_id)
            finished.append(record)
        return {"active_request_ids": list(self.active), "finished_request_records": finished}


def test_the_real_engine_has_what_the_driver_uses():
    for name in ("add_request", "step_modern", "has_unfinished_requests", "reset"):
        assert callable(getattr(DynamicInferenceEngine, name)), name
    source = inspect.getsource(DynamicInferenceEngine)
    assert "self.stop_word_finished_request_ids" in source
    assert "self.requests[request_id] = RequestEntry(" in source
    assert "requests" in DynamicInferenceRequestRecord.__dataclass_fields__


@pytest.mark.parametrize("evict_at", [None, 1, 3])
def test_the_stop_rule_cuts_rollouts_through_the_engine_s_bookkeeping(evict_at):
    """Two prompts, G = 3, 8 new tokens, two slots, requests evicted after `evict_at` tokens or
    never: each request's script and where it ends."""
    scripts = [
        [2, 3, 2, 4, 2, 5, 2, 2, 2],  # answer closes at token 6
        [2, EOS, 2, 2, 2, 2, 2, 2, 2],  # EOS at token 2
        [5, 4, 2, 5, 2, 2, 2, 2, 2],  # a box before </think> is no answer: cut at 8
        [3, 4, 6, 5, 2, 5, 2, 2, 2],  # nested braces: the answer closes at token 6
        [3, 4, 2, 2, 2, 2, 2, 2, EOS],  # the box never closes: cut at 8
        [3, 5, 4, 5, 2, 2, 2, 2, 2],  # closes at token 4
    ]
    engine = _ScriptedEngine(scripts, slots=2, evict_at=evict_at)
    params = SamplingParams(**sampling_arguments(1.0, 1.0, 8, EOS))
    rollouts = drive(engine, [[7, 8], [9]], 3, params, lambda: RowStop(EOS, token_bytes))
    assert [r.prompt_index for r in rollouts] == [0, 0, 0, 1, 1, 1]
    ends = [6, 2, 8, 6, 8, 4]
    assert [r.tokens for r in rollouts] == [s[:end] for s, end in zip(scripts, ends, strict=True)]
    assert [r.finished for r in rollouts] == [True, True, False, True, False, True]
    assert engine.steps > 8  # the third request onwards waited for a slot


def test_a_machine_without_the_engine_refuses_the_flag_in_one_line():
    reason = dynamic_generation.unavailable_reason()
    if reason is None:
        pytest.skip("this machine can run the dynamic engine")
    rollout = RolloutConfig(engine="mcore-dynamic")
    with pytest.raises(ConfigError, match="--rmt-rollout-engine mcore-dynamic: it needs") as caught:
        require_runnable(rollout)
    assert "\n" not in str(caught.value) and "--rmt-rollout-engine rmt" in str(caught.value)
    with pytest.raises(ConfigError, match="--rmt-rollout-engine"):
        tokenizer = types.SimpleNamespace(vocab_size=8, eos_id=EOS, token_bytes=token_bytes)
        build_rollout_engine(None, tokenizer, ModelConfig(), rollout)
    require_runnable(RolloutConfig())
