"""The megatron-core layer: the only part of rmt_megatron that imports megatron.

Without Transformer Engine or apex (every CPU machine, and GPU machines without them) megatron-core
warns at import, once per module, that it falls back to its local implementations; it also warns
about its own internal deprecations (a TransformerConfig default, its checkpoint reader's use of
torch APIs). None of them asks anything of the user, so they are silenced here, and
`cpu.backends_line()` says once which backends the run has.
"""

import warnings

for message, category in (
    (r"(Transformer Engine and Apex are|Apex is) not installed", UserWarning),
    (r"full scope is deprecated", UserWarning),  # TransformerConfig's own default
    (r"`load_state_dict` is deprecated", FutureWarning),  # megatron's checkpoint reader
    (r"Please use DTensor instead", FutureWarning),  # megatron's checkpoint format
):
    warnings.filterwarnings("ignore", message=message, category=category)
