"""RMT in a Megatron-LM training script: the public names of the drop-in.

`add_rmt_args` (Megatron-LM's `extra_args_provider`), `train_valid_test_datasets_provider` and
`forward_step` for `megatron.training.pretrain()` (`rmt_megatron.run.megatron_lm`); `configure`
sets the loss for a loop written on megatron-core alone (`rmt_megatron.mcore.dropin`)."""

from rmt_megatron.mcore.dropin import add_rmt_args, configure
from rmt_megatron.mcore.megatron_lm import megatron_lm_environment
from rmt_megatron.run.megatron_lm import forward_step, train_valid_test_datasets_provider

__all__ = [
    "add_rmt_args",
    "configure",
    "forward_step",
    "megatron_lm_environment",
    "train_valid_test_datasets_provider",
]
