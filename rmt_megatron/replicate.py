"""`python -m rmt_megatron.replicate`: reproduce the evidence tables, on the built-in world or on
your model and data (`rmt_megatron.study.replication`, also installed as `rmt-replicate`)."""

import sys

from rmt_megatron.study.replication import main

if __name__ == "__main__":
    sys.exit(main())
