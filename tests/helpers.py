"""Helpers shared by several test modules (model shapes, tiny tokenizers and checkpoints,
kernel comparisons). Fixtures live in conftest.py; the rank launcher in ranks.py; the GGUF writer
in gguf_files.py."""

import contextlib
from dataclasses import replace
from pathlib import Path

import torch

from rmt_megatron.config.sections import ModelConfig
from rmt_megatron.kernels import (
    linear_logprob_entropy,
    linear_token_objective,
    token_logprob_entropy_reference,
)
from rmt_megatron.kernels.testing import KernelCase, forward_backward, linear_inputs

SMALL = ModelConfig(
    num_layers=2,
    hidden_size=32,
    ffn_hidden_size=64,
    num_attention_heads=4,
    num_query_groups=2,
    seq_length=32,
    max_position_embeddings=64,
    untie_embeddings_and_output_weights=True,
)


VOCAB = 256  # a multiple of 128·TP for TP = 1, 2: the padded vocabulary is the same


def layout(tp: int = 1, pp: int = 1) -> ModelConfig:
    return replace(SMALL, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)


def save_small_model(directory: str) -> None:
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.checkpoint import save_checkpoint
    from rmt_megatron.mcore.gpt_model import build_gpt_model

    with parallel.process_group(layout(), seed=7):
        save_checkpoint(
            directory, 3, build_gpt_model(layout(), VOCAB), state={"note": "reference weights"}
        )


def tiny_hugging_face_model(directory: Path) -> Path:
    """A random-weight 2-layer Qwen3 with a byte-level BPE tokenizer (`byte_level_tokenizer`),
    saved as a Hugging Face checkpoint directory."""
    import transformers

    byte_level_tokenizer(directory)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            vocab_size=290,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
    )
    model.save_pretrained(directory)
    return directory


def arithmetic_datasets(directory: Path, tokenizer_model: Path, splits: dict[str, int]) -> None:
    """Indexed datasets `directory/<name>` of 12 built-in-world documents each (seed per name),
    written with `tokenizer_model` by the preprocess command, as a user would."""
    from rmt_megatron.builtin.corpus import arithmetic_documents, document_text
    from rmt_megatron.model_io import preprocess

    for name, seed in splits.items():
        text = "\n\n".join(document_text(d) for d in arithmetic_documents(12, seed))
        (directory / f"{name}.txt").write_text(text)
        argv = ["--input", str(directory / f"{name}.txt"), "--output-prefix", str(directory / name)]
        assert preprocess.main([*argv, "--tokenizer-model", str(tokenizer_model)]) == 0


def byte_level_tokenizer(directory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<think>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["Ben has 12 apples. é ü 日本", "hello world"] * 10, trainer)
    tok.save(str(directory / "tokenizer.json"))
    return directory


TINY_HF = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)


TOKENS = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def imported(directory, tp, pp):
    """(config, GPTModel stage) with the weights of the checkpoint (a Hugging Face directory
    or a GGUF file), inside this rank's process group."""
    from rmt_megatron.mcore import parallel
    from rmt_megatron.mcore.gpt_model import build_gpt_model
    from rmt_megatron.model_io.checkpoints import import_model_config, load_imported_weights

    config = import_model_config(
        directory,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        make_vocab_size_divisible_by=64,
    )
    with parallel.process_group(config, seed=0):
        model = build_gpt_model(config, config.vocab_size, initialize=False)
        load_imported_weights(model, config, directory)
        yield config, model


def megatron_logits(directory, tp, pp):
    from rmt_megatron.mcore.parallel import share_from_last_stage
    from rmt_megatron.mcore.teacher_forcing import forward_statistics

    def gathered(logits, batch):
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        return gather_from_tensor_model_parallel_region(logits)[..., :300]

    with imported(directory, tp, pp) as (_, model):
        batch = {"tokens": TOKENS, "position_ids": torch.arange(12)[None].expand(2, 12)}
        return share_from_last_stage(forward_statistics(model, [batch], gathered))[0]


def chat_vocabulary(directory):
    """The test byte-level tokenizer with ChatML's two control tokens added."""
    from tokenizers import AddedToken, Tokenizer

    byte_level_tokenizer(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.add_special_tokens(
        [AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory, tokenizer


LINEAR = KernelCase(7, 21, hidden=6, temperature=0.9, ignored=(3,))
"""The linear ops' base case: 7 rows over 2-row blocks and 8-column tiles (ragged last ones)."""


def linear_against_reference(case, dtype=torch.float32, backend=None):
    """(ours, reference) as (logprob, entropy, grad_hidden, grad_weight); the reference runs in
    fp32 on the same (rounded) inputs."""
    hidden, weight, labels, upstream = linear_inputs(case, dtype)

    def ours(h, w, y, temperature):
        return linear_logprob_entropy(h, w, y, temperature=temperature, backend=backend)

    def reference(h, w, y, temperature):
        return token_logprob_entropy_reference(h @ w.T, y, temperature=temperature)

    return (
        forward_backward(ours, [hidden, weight], labels, case.temperature, upstream),
        forward_backward(
            reference, [hidden.float(), weight.float()], labels, case.temperature, upstream
        ),
    )


def fused_objective_against_reference(backend=None):
    """(ours, reference) as (loss, grad_hidden, grad_weight) of the dual loss (clipped ratios,
    entropy bonus) through `linear_token_objective`, block by block, with upstream gradient 2."""
    from rmt_megatron.config.sections import LossConfig
    from rmt_megatron.method.dual_loss import TokenRoles, dual_loss

    h, w, labels, _ = linear_inputs(LINEAR)
    rl_mask = torch.tensor([1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    ntp_mask = torch.tensor([0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    advantages = torch.tensor([0.5, -1.0, 0.3, 0, 0, 0, 0])
    old = torch.full((7,), -3.0)  # off-policy: some ratios are clipped
    config = LossConfig(entropy_coeff=0.01)

    def objective(logprob, entropy):
        return dual_loss(
            logprob,
            TokenRoles(rl_mask=rl_mask, ntp_mask=ntp_mask, advantages=advantages, old_logprob=old),
            config,
            entropy=entropy,
        ).loss

    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, _, _ = linear_token_objective(h1, w1, labels, objective, backend=backend)
    (2 * loss).backward()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref_loss = objective(*token_logprob_entropy_reference(h2 @ w2.T, labels))
    (2 * ref_loss).backward()
    return (loss.detach(), h1.grad, w1.grad), (ref_loss.detach(), h2.grad, w2.grad)


def child_processes(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc; Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tiny_step_micro_batches() -> list[dict[str, torch.Tensor]]:
    """Two micro-batches (2 rows × 4 tokens) of two RL sequences (advantages ±1) and one NTP
    sequence, weighted for λ = 0.1, over token ids below 16."""
    from rmt_megatron.method.packing import collate, ntp_sequence, rl_sequence, token_weights

    sequences = [
        rl_sequence([5, 6, 7], [8, 9], 1.0),
        rl_sequence([5, 6, 7], [10], -1.0),
        ntp_sequence([11, 12, 13, 14, 15], [3]),
    ]
    weights = token_weights(
        sum(s.rl_tokens for s in sequences), sum(s.ntp_tokens for s in sequences), 1.0, 0.1
    )
    return collate(sequences, 2, 4, 0, *weights)


def schedule_step(model, forward_step_func, micro_batches) -> list[dict]:
    """Forward and backward of `micro_batches` (`tiny_step_micro_batches`' shapes) through
    megatron-core's schedule, as Megatron-LM's train_step calls it; the losses it returns."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    return get_forward_backward_func()(
        forward_step_func=forward_step_func,
        data_iterator=iter(micro_batches),
        model=[model],
        num_microbatches=len(micro_batches),
        seq_length=4,
        micro_batch_size=2,
        decoder_seq_length=None,
        forward_only=False,
    )
