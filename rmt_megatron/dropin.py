"""RMT in a Megatron-LM training script: the public names of `rmt_megatron.mcore.dropin`."""

from rmt_megatron.mcore.dropin import add_rmt_args, configure, forward_step

__all__ = ["add_rmt_args", "configure", "forward_step"]
