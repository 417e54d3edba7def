"""RMT inside a Megatron-LM-style training loop: `python examples/megatron_lm_dropin.py`.

A Megatron-LM pretraining script switches to RMT with two changed lines (marked `# RMT` below):
import `forward_step` and `add_rmt_args` from `rmt_megatron.dropin`, and pass `add_rmt_args` as
`extra_args_provider`. Its data iterator then yields the micro-batches that
`StepBatchBuilder.build(step)` makes from the policy's rollouts.

megatron-core 0.16 (the Python 3.11 stack) does not ship Megatron-LM's `megatron.training`
(0.17 and later do: `examples/megatron_lm_pretrain.py` runs RMT inside its real `pretrain()`),
so this script writes out the parts of its `train_step` that matter (zero the DDP grad buffer,
`get_forward_backward_func()` with the same arguments, optimizer step) on megatron-core alone,
with the built-in data and base model.
It runs a few steps on a slice of the corpus and prints the losses.
"""

from __future__ import annotations

import argparse
import tempfile

from megatron.core.pipeline_parallel import get_forward_backward_func

from rmt_megatron.builtin.datasets import prepare_builtin_data
from rmt_megatron.config.flags import add_megatron_args, config_from_args
from rmt_megatron.dropin import add_rmt_args, configure, forward_step  # RMT
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import load_checkpoint
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.mcore.optimizer import build_training
from rmt_megatron.mcore.rollout_engines import build_rollout_engine
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.difficulty import score_difficulty
from rmt_megatron.run.step_builder import StepBatchBuilder


def train_step(
    data_iterator, model, optimizer, scheduler, num_microbatches, seq_length, micro_batch_size
):
    """What Megatron-LM's train_step does around the schedule."""
    model.zero_grad_buffer()
    optimizer.zero_grad()
    losses_reduced = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=data_iterator,
        model=[model],
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        decoder_seq_length=None,
        forward_only=False,
    )
    updated, grad_norm, _ = optimizer.step()
    if updated:
        scheduler.step(increment=1)
    return losses_reduced, grad_norm


def main() -> None:
    parser = add_rmt_args(add_megatron_args(argparse.ArgumentParser()))  # RMT: extra args
    parser.add_argument("--documents", type=int, default=48, help="corpus slice to use")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps to run")
    args = parser.parse_args()
    config = config_from_args(args, default_preset="tiny_cpu")
    configure(config)  # inside Megatron-LM the --rmt-* arguments are read instead
    with (
        parallel.process_group(config.model, config.train.seed),
        tempfile.TemporaryDirectory() as scratch,
    ):
        builtin = prepare_builtin_data(scratch)
        tokenizer = SentencePieceTokenizer(builtin.tokenizer_model)
        documents = documents_of(load_indexed_dataset(builtin.train_prefix, tokenizer.vocab_size))[
            : args.documents
        ]
        state = build_training(config.model, config.train, tokenizer.vocab_size)
        load_checkpoint(builtin.base_checkpoint, state.module, restore_rng=False)
        entropy = score_difficulty(
            state.module,
            documents,
            f"{scratch}/entropy.npy",
            config.curriculum.entropy_top_k,
            config.model.seq_length,
            config.train.micro_batch_size,
            tokenizer.eos_id,
            show_progress=False,
        )
        engine = build_rollout_engine(state.module, tokenizer, config.model, config.rollout)
        builder = StepBatchBuilder(
            config,
            engine,
            tokenizer,
            documents,
            lambda docs, part: entropy,  # the slice is one candidate pool, scored above
            *parallel.data_parallel_rank_and_size(),
        )
        for step in range(args.steps):
            batches = builder.build(step)
            losses, grad_norm = train_step(
                iter(batches.micro_batches),
                state.model,
                state.optimizer,
                state.scheduler,
                len(batches.micro_batches),
                batches.seq_length,
                batches.micro_batches[0]["tokens"].shape[0],
            )
            rl = sum(float(x["loss_rl"][0]) for x in losses) / max(
                sum(float(x["loss_rl"][1]) for x in losses), 1
            )
            ntp = sum(float(x["loss_ntp"][0]) for x in losses) / max(
                sum(float(x["loss_ntp"][1]) for x in losses), 1
            )
            print(
                f"step {step + 1}: B_t {batches.budget}, L_RL {rl:.4f}, L_NTP {ntp:.4f}, "
                f"grad norm {grad_norm:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
