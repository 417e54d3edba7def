"""GGUF llama-family files into GPTModel: logits equal transformers' forward of the same
(dequantised) weights at TP=1, TP=2 and PP=2; the embedded vocabulary and chat template work; bad
files are named."""

import pytest
import torch
import transformers
from gguf_files import permute_rows, write_gguf
from helpers import TINY_HF, TOKENS, chat_vocabulary, imported, megatron_logits
from ranks import run_ranks

TINY = dict(TINY_HF, rms_norm_eps=1e-5, rope_theta=5000.0)
"""Non-default ε and θ, so that reading them from the GGUF metadata is tested."""


def _tiny_llama(tie=True):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**TINY, tie_word_embeddings=tie)
    ).eval()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def gguf_file(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gguf")
    model = _tiny_llama(tie=request.param)
    path = directory / "tiny.gguf"
    write_gguf(path, model)
    with torch.no_grad():
        return path, model(TOKENS).logits


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2)])
def test_gguf_logits_equal_the_reference_forward(gguf_file, tp, pp):
    path, reference = gguf_file
    for logits in run_ranks(tp * pp, megatron_logits, str(path), tp, pp):
        assert (logits - reference).abs().max() <= 1e-4


def test_linear_rope_scaling_from_gguf_metadata(tmp_path):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            **dict(TINY, initializer_range=0.1),
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0},
        )
    ).eval()
    write_gguf(tmp_path / "linear.gguf", model)
    with torch.no_grad():
        reference = model(TOKENS).logits
    logits = run_ranks(1, megatron_logits, str(tmp_path / "linear.gguf"), 1, 1)[0]
    assert (logits - reference).abs().max() <= 1e-4


def test_unpermute_inverts_llama_cpp_s_row_order():
    from rmt_megatron.model_io.gguf import unpermute_rows

    weight = torch.randn(4 * 16, 8)
    stored = torch.from_numpy(permute_rows(weight.numpy(), heads=4))
    assert not torch.equal(stored, weight)
    assert torch.equal(unpermute_rows(stored, head_dim=16), weight)
    assert torch.equal(unpermute_rows(stored[16:48], head_dim=16), weight[16:48])  # two heads


def test_embedded_vocabulary_and_chat_template(tmp_path):
    from rmt_megatron.method.prompt import build_prompt
    from rmt_megatron.model_io.checkpoints import load_tokenizer

    _, reference = chat_vocabulary(tmp_path)
    config = dict(TINY, vocab_size=reference.get_vocab_size())
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    write_gguf(tmp_path / "chat.gguf", model, tokenizer_dir=tmp_path)
    tokenizer = load_tokenizer(tmp_path / "chat.gguf")
    assert tokenizer.vocab_size == reference.get_vocab_size()
    for text in ("Ben has 12 apples.", "é ü 日本\n\thello world", "<|im_start|>user\nhi"):
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text
        assert b"".join(tokenizer.token_bytes(ids)) == text.encode()
    assert tokenizer.eos_id == reference.token_to_id("<|im_end|>")
    context = tokenizer.encode("Ben has 12")
    prompt = tokenizer.decode(build_prompt(tokenizer, context, 20, 1000))
    assert prompt.startswith("<|im_start|>user\nContinue the text")
    assert prompt.endswith("Ben has 12<|im_end|>\n<|im_start|>assistant\n<think>")


def test_bad_gguf_files_are_named(tmp_path):

    from rmt_megatron.errors import CheckpointError, ConfigError
    from rmt_megatron.model_io.checkpoints import import_model_config, open_checkpoint

    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        import_model_config(tmp_path / "junk.gguf")
    with pytest.raises(CheckpointError, match="does not exist"):
        import_model_config(tmp_path / "missing.gguf")
    write_gguf(tmp_path / "gpt2.gguf", _tiny_llama(), architecture="gpt2")
    with pytest.raises(ConfigError, match=r"'gpt2' is not supported.*llama"):
        import_model_config(tmp_path / "gpt2.gguf")
    write_gguf(tmp_path / "holed.gguf", _tiny_llama(), drop=("blk.1.ffn_up.weight",))
    _, reader = open_checkpoint(tmp_path / "holed.gguf")
    with pytest.raises(CheckpointError, match=r"blk\.1\.ffn_up\.weight"):
        reader.read("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(ConfigError, match="tokenizer model None is not supported"):
        from rmt_megatron.model_io.checkpoints import load_tokenizer

        load_tokenizer(tmp_path / "holed.gguf")


def _export(path, output, tp):
    from rmt_megatron.model_io.hf_export import export_hf, source_vocab_size

    with imported(path, tp, 1) as (config, model):
        export_hf(model, config, source_vocab_size(path), path, output)


def test_a_gguf_model_exports_to_a_hugging_face_checkpoint(tmp_path):
    """GGUF -> GPTModel (TP=2) -> Hugging Face directory that transformers loads, with the
    same logits, and a tokenizer AutoTokenizer reads with the same ids and chat template."""
    _, reference_tokenizer = chat_vocabulary(tmp_path)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**dict(TINY, vocab_size=reference_tokenizer.get_vocab_size()))
    ).eval()
    write_gguf(tmp_path / "chat.gguf", model, tokenizer_dir=tmp_path)
    run_ranks(2, _export, str(tmp_path / "chat.gguf"), str(tmp_path / "hf"), 2)
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = TOKENS % reference_tokenizer.get_vocab_size()
    with torch.no_grad():
        assert (exported(tokens).logits - model(tokens).logits).abs().max() <= 1e-5
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Ben has 12 apples. é 日本"
    assert (
        tokenizer.encode(text, add_special_tokens=False)
        == reference_tokenizer.encode(text, add_special_tokens=False).ids
    )
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
