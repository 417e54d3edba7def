"""Token statistics over the vocabulary, installed as `rmt_megatron.kernels`.

`ops` holds the public ops (per-token log-probability and entropy from logits or from a hidden
state and the output layer, and a fused per-token objective), vocab-parallel under TP;
`stats` the math they share; `chunked` the pure-torch backend; `reference` the unfused torch
ground truth the backends are tested against.
"""

from rmt_megatron.kernels.ops import (
    linear_logprob_entropy,
    linear_token_objective,
    token_logprob_entropy,
)
from rmt_megatron.kernels.reference import (
    token_logprob_entropy_reference,
    topk_entropy_reference,
)

__all__ = [
    "linear_logprob_entropy",
    "linear_token_objective",
    "token_logprob_entropy",
    "token_logprob_entropy_reference",
    "topk_entropy_reference",
]
