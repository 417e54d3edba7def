"""RMT's dual objective as a drop-in for a Megatron-LM or megatron-core training loop.

In a Megatron-LM pretraining script two lines change:

    from rmt_megatron.dropin import add_rmt_args, forward_step
    pretrain(..., forward_step, extra_args_provider=add_rmt_args)

and the loop feeds RMT micro-batches: each step,
`run.step_builder.StepBatchBuilder(config, engine, ...)
.build(step).micro_batches` (rollouts from the policy, rewards, advantages, the documents' NTP
tokens) is the data iterator's content. `forward_step` follows megatron-core's schedule contract:
it returns the model output and a loss function giving `(loss_sum, num_tokens, logging_dict)`;
the run must use per-token loss normalisation (Megatron-LM `--calculate-per-token-loss`,
megatron-core `TransformerConfig.calculate_per_token_loss=True`).

The loss settings come from `configure(config)` or, inside Megatron-LM, from its parsed arguments
(`--rmt-*` flags added by `add_rmt_args`).
"""

from __future__ import annotations

from megatron.core.utils import get_attr_wrapped_model

from rmt_megatron.config.flags import add_rmt_args, config_from_args
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.mcore.forward_step import make_forward_step
from rmt_megatron.mcore.megatron_lm import megatron_lm_args

__all__ = ["add_rmt_args", "configure", "forward_step"]

_forward_step = None


def configure(config: RMTConfig) -> None:
    """Use `config.loss` for `forward_step` (otherwise Megatron-LM's arguments are read)."""
    global _forward_step
    _forward_step = make_forward_step(config.loss)


def _from_megatron_lm_args():
    """The loss settings from Megatron-LM's parsed arguments; an error that says what to do where
    there are none (megatron.training absent, as in megatron-core 0.16, or not initialised)."""
    args = megatron_lm_args()
    if args is None:
        raise RuntimeError(
            "rmt_megatron.dropin.forward_step has no loss settings: call "
            "rmt_megatron.dropin.configure(config) first, or run inside "
            "Megatron-LM with extra_args_provider=add_rmt_args"
        )
    return make_forward_step(config_from_args(args).loss)


def forward_step(data_iterator, model):
    """Megatron schedule step: the next RMT micro-batch through `model`, with the dual loss."""
    global _forward_step
    if not get_attr_wrapped_model(model, "config").calculate_per_token_loss:
        raise ValueError(
            "the RMT loss is normalised per token over the whole step: enable "
            "calculate_per_token_loss (Megatron-LM: --calculate-per-token-loss)"
        )
    if _forward_step is None:
        _forward_step = _from_megatron_lm_args()
    return _forward_step(data_iterator, model)
