"""RMT inside Megatron-LM's own training loop, `megatron.training.pretrain()` (megatron-core
>= 0.17, the Python 3.12 stack):

    torchrun --nproc_per_node N examples/megatron_lm_pretrain.py MEGATRON_LM_FLAGS --rmt-...

The lines marked `# RMT` are what a Megatron-LM GPT pretraining script changes: RMT's flags as
`extra_args_provider`, its datasets provider (each step's micro-batches from the policy's
rollouts) and its `forward_step` (the dual loss), and `megatron_lm_environment()` around the
call (nothing on a GPU with Megatron-LM's source tree; the pip wheel's dataset helpers and the
CPU workarounds otherwise). The model is Megatron-LM's own GPT, built from its flags.

Megatron-LM flags RMT needs: --calculate-per-token-loss --dataloader-type external
--eval-iters 0 (evaluate a saved checkpoint with `python -m rmt_megatron.evaluate`), a
--global-batch-size that holds a step's rollouts (the run says which when it does not), and no
pipeline parallelism. `rmt_megatron.config.flags.megatron_lm_argv` writes the flags that build a
preset's model as `pretrain_rmt.py` does; `tests/test_megatron_training.py` runs this script
with them, TP=1 and TP=2, and checks its losses against `pretrain_rmt.py`'s golden numbers.
"""

from megatron.core.enums import ModelType
from megatron.training import pretrain
from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
from megatron.training.arguments import parse_and_validate_args

from rmt_megatron.dropin import (  # RMT
    add_rmt_args,
    forward_step,
    megatron_lm_environment,
    train_valid_test_datasets_provider,
)

if __name__ == "__main__":
    with megatron_lm_environment():  # RMT
        args = parse_and_validate_args(extra_args_provider=add_rmt_args)  # RMT: --rmt-* flags
        pretrain(
            pretrain_cfg_container_from_args(args, gpt_config_from_args(args)),
            train_valid_test_datasets_provider,  # RMT
            ModelType.encoder_or_decoder,
            forward_step,  # RMT
        )
