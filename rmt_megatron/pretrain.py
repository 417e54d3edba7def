"""`python -m rmt_megatron.pretrain`: the RMT mid-training command (`rmt_megatron.run.pretrain`,
also the repository's `pretrain_rmt.py`)."""

import sys

from rmt_megatron.run.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
