"""Token statistics over the vocabulary, installed as `rmt_megatron.kernels`.

`reference` holds the unfused torch implementation: the ground truth that fused backends are
tested against.
"""

from rmt_megatron.kernels.reference import (
    token_logprob_entropy_reference,
    topk_entropy_reference,
)

__all__ = ["token_logprob_entropy_reference", "topk_entropy_reference"]
