"""`python -m rmt_megatron.posttrain`: post-train a checkpoint on the built-in world's questions
and report held-out answer accuracy before and after (`rmt_megatron.study.posttrain`, also
installed as `rmt-posttrain`)."""

import sys

from rmt_megatron.study.posttrain import main

if __name__ == "__main__":
    sys.exit(main())
