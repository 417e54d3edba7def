"""Plain GPT pretraining in Megatron-LM's own loop, as a Megatron-LM user's script does it
(megatron-core's mock GPT dataset, the standard next-token loss): the other side of the
checkpoint interop test in `tests/test_megatron_training.py`. Run as

    torchrun --nproc_per_node 1 tests/megatron_lm_gpt.py MEGATRON_LM_FLAGS --mock-data
"""

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDatasetConfig, MockGPTDataset
from megatron.core.enums import ModelType
from megatron.training import get_args, get_tokenizer, pretrain
from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
from megatron.training.arguments import parse_and_validate_args

from rmt_megatron.dropin import megatron_lm_environment


def datasets_provider(num_samples):
    args = get_args()
    config = GPTDatasetConfig(
        random_seed=args.seed,
        sequence_length=args.seq_length,
        blend=None,
        split="98,1,1",
        tokenizer=get_tokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=True,
    )
    return BlendedMegatronDatasetBuilder(MockGPTDataset, num_samples, lambda: True, config).build()


def forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(
        batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"]
    )
    mask = batch["loss_mask"].float()

    def loss_func(losses):
        total = (losses.float() * mask).sum()
        tokens = mask.sum()
        return total, tokens.int(), {"lm loss": torch.stack([total.detach(), tokens])}

    return output, loss_func


if __name__ == "__main__":
    with megatron_lm_environment():
        args = parse_and_validate_args()
        pretrain(
            pretrain_cfg_container_from_args(args, gpt_config_from_args(args)),
            datasets_provider,
            ModelType.encoder_or_decoder,
            forward_step,
        )
