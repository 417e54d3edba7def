"""`python -m rmt_megatron.warmstart`: the warm-start command (`rmt_megatron.builtin.warmstart`,
also installed as `rmt-warmstart`)."""

import sys

from rmt_megatron.builtin.warmstart import main

if __name__ == "__main__":
    sys.exit(main())
