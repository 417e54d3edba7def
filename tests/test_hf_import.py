"""Hugging Face Llama / Qwen2 / Qwen3 checkpoints into GPTModel: logits equal transformers' own
forward (tiny random models built offline from a config, fp32) at TP=1, TP=2 and PP=2."""

import json

import pytest
import torch
import transformers
from helpers import TINY_HF, TOKENS, imported, megatron_logits
from ranks import run_ranks

MODELS = {
    "llama": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(tie_word_embeddings=True),
    ),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(tie_word_embeddings=False),
    ),
    "qwen3": (
        transformers.Qwen3Config,
        transformers.Qwen3ForCausalLM,
        dict(tie_word_embeddings=False, head_dim=16),
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def checkpoint(request, tmp_path_factory):
    config_cls, model_cls, extra = MODELS[request.param]
    torch.manual_seed(0)
    model = model_cls(config_cls(**TINY_HF, **extra)).eval()
    with torch.no_grad():  # Qwen2's QKV biases start at zero: make them matter
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_()
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    with torch.no_grad():
        logits = model(TOKENS).logits
    return directory, logits


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2)])
def test_imported_logits_equal_transformers(checkpoint, tp, pp):
    directory, reference = checkpoint
    for logits in run_ranks(tp * pp, megatron_logits, str(directory), tp, pp):
        assert (logits - reference).abs().max() <= 1e-4


def test_bad_checkpoints_are_named(checkpoint, tmp_path):

    from rmt_megatron.errors import CheckpointError, ConfigError
    from rmt_megatron.model_io.checkpoints import import_model_config
    from rmt_megatron.model_io.hf_import import SafetensorsReader

    directory, _ = checkpoint
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2"]}))
    with pytest.raises(ConfigError, match="LlamaForCausalLM, Qwen2ForCausalLM"):
        import_model_config(tmp_path)
    with pytest.raises(CheckpointError, match=r"neither model\.safetensors"):
        SafetensorsReader(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match=r"model-00002\.safetensors"):
        SafetensorsReader(tmp_path)


@pytest.mark.parametrize(
    ("architecture", "extra", "named"),
    [
        ("Qwen3ForCausalLM", {"attention_bias": True}, "attention_bias=True"),
        (
            "Qwen2ForCausalLM",
            {"use_sliding_window": True, "sliding_window": 32},
            "use_sliding_window=True",
        ),
        ("LlamaForCausalLM", {"mlp_bias": True}, "mlp_bias=True"),
    ],
)
def test_checkpoint_features_the_model_lacks_are_refused(architecture, extra, named):
    from rmt_megatron.errors import ConfigError
    from rmt_megatron.model_io.hf_import import architecture_from_hf

    config = dict(TINY_HF, architectures=[architecture], **extra)
    with pytest.raises(ConfigError, match=f"{named}.*is not supported: the model has RMSNorm"):
        architecture_from_hf(config)


def test_rope_theta_is_kept_as_given_and_the_ffn_must_split_over_tp():
    from rmt_megatron.config.sections import ModelConfig
    from rmt_megatron.errors import ConfigError
    from rmt_megatron.model_io.hf_import import architecture_from_hf

    fields = architecture_from_hf(
        dict(TINY_HF, architectures=["LlamaForCausalLM"], rope_theta=500000.5)
    )
    assert fields["rotary_base"] == 500000.5
    with pytest.raises(
        ConfigError,
        match=r"ffn_hidden_size=96 is invalid.*divisible by tensor_model_parallel_size=5",
    ):
        ModelConfig(
            **dict(
                fields,
                num_attention_heads=5,
                num_query_groups=5,
                kv_channels=16,
                tensor_model_parallel_size=5,
            )
        )


def _import_error(directory):
    from rmt_megatron.errors import CheckpointError

    try:
        with imported(directory, 1, 1):
            return None
    except CheckpointError as error:
        return str(error)


def test_a_checkpoint_tensor_the_model_does_not_read_is_an_error(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    directory, _ = checkpoint
    tensors = load_file(str(directory / "model.safetensors"))
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    message = run_ranks(1, _import_error, str(tmp_path))[0]
    assert "no place for (model.layers.0.self_attn.o_proj.bias)" in message


def _round_trip(directory, output, tp, pp):
    from rmt_megatron.model_io.hf_export import export_hf

    with imported(directory, tp, pp) as (config, model):
        export_hf(model, config, config.vocab_size, directory, output)


@pytest.mark.parametrize(("tp", "pp"), [(2, 1), (1, 2)])
def test_import_then_export_is_bitwise(checkpoint, tmp_path, tp, pp):
    from safetensors.torch import load_file

    directory, _ = checkpoint
    run_ranks(tp * pp, _round_trip, str(directory), str(tmp_path / "out"), tp, pp)
    original = load_file(directory / "model.safetensors")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name
    assert (tmp_path / "out" / "config.json").read_text() == (directory / "config.json").read_text()


def _save_imported(directory, save):
    from rmt_megatron.config.sections import RMTConfig
    from rmt_megatron.mcore.checkpoint import save_checkpoint

    with imported(directory, 2, 1) as (config, model):
        save_checkpoint(save, 7, model, state={"config": RMTConfig(model=config).to_dict()})


def test_export_command_writes_a_run_s_checkpoint_back(checkpoint, tmp_path):
    from safetensors.torch import load_file

    from rmt_megatron.model_io.hf_export import main

    directory, _ = checkpoint
    run_ranks(2, _save_imported, str(directory), str(tmp_path / "save"))
    argv = [
        "--load",
        str(tmp_path / "save"),
        "--hf-source",
        str(directory),
        "--output",
        str(tmp_path / "out"),
        "--pipeline-model-parallel-size",
        "2",
    ]
    assert run_ranks(2, main, argv) == [0, 0]
    original = load_file(directory / "model.safetensors")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(exported) == sorted(original)
    assert all(torch.equal(exported[name], tensor) for name, tensor in original.items())


ROPE_SCALING = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}


@pytest.mark.parametrize("kind", sorted(ROPE_SCALING))
def test_rope_scaling_variants_match_transformers(kind, tmp_path):
    rope = dict(ROPE_SCALING[kind], rope_theta=10000.0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            **dict(TINY_HF, max_position_embeddings=16384),
            rope_parameters=rope,
            initializer_range=0.1,
        )
    ).eval()
    model.save_pretrained(tmp_path)
    tokens = torch.randint(0, 300, (1, 1024), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a long sequence: llama3 scaling acts on the slow frequencies only
        reference = model(tokens).logits
        plain = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(**dict(TINY_HF, max_position_embeddings=16384))
        ).eval()
        plain.load_state_dict(model.state_dict())
        assert (plain(tokens).logits - reference).abs().max() > 1e-3
    logits = run_ranks(1, _megatron_logits_of, str(tmp_path), tokens)[0]
    assert (logits - reference).abs().max() <= 1e-4


def _megatron_logits_of(directory, tokens):
    from rmt_megatron.mcore.teacher_forcing import forward_statistics

    with imported(directory, 1, 1) as (_, model):
        batch = {"tokens": tokens, "position_ids": torch.arange(tokens.shape[1])[None]}
        return forward_statistics(model, [batch], lambda logits, _: logits[..., :300])[0]


def test_unsupported_rope_scaling_is_named(tmp_path):
    from rmt_megatron.errors import ConfigError
    from rmt_megatron.model_io.hf_import import architecture_from_hf

    config = transformers.LlamaConfig(**TINY_HF).to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(ConfigError, match="'yarn' is not supported"):
        architecture_from_hf(config)
    config["rope_parameters"] = dict(ROPE_SCALING["llama3"], high_freq_factor=2.0)
    with pytest.raises(ConfigError, match="high_freq_factor"):
        architecture_from_hf(config)
