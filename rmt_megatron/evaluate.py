"""`python -m rmt_megatron.evaluate`: evaluate a checkpoint on a held-out dataset
(`rmt_megatron.run.checkpoint_eval`, also installed as `rmt-evaluate`)."""

import sys

from rmt_megatron.run.checkpoint_eval import main

if __name__ == "__main__":
    sys.exit(main())
