"""`python -m rmt_megatron.plan`: per-rank memory of a run's config on a GPU layout
(`rmt_megatron.run.memory_plan`)."""

import sys

from rmt_megatron.run.memory_plan import main

if __name__ == "__main__":
    sys.exit(main())
