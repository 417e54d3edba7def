"""rmt_megatron: Reinforcement Mid-Training (RMT) for megatron-core.

The method, one module per idea in `rmt_megatron.method`, each usable without a model or a
process group: `budget` (B_t schedule, length and combined reward), `rewards` (prediction
extraction, match rewards, reasoning length), `advantages` (GRPO), `curriculum` (entropy tiers,
p_t, sampler), `dual_loss` (the dual RL + NTP objective). Configuration: `rmt_megatron.config`
(`sections`, `presets`, `flags`). Vocabulary kernels: `rmt_megatron.kernels`. The layers and
where each fact lives: docs/architecture.md.

Importing this package imports neither megatron-core, Transformer Engine nor apex.
"""

from rmt_megatron.config.presets import PRESETS, apply_method, get_preset
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError

__version__ = "0.1.0"

__all__ = ["PRESETS", "ConfigError", "RMTConfig", "__version__", "apply_method", "get_preset"]
