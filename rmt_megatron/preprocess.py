"""`python -m rmt_megatron.preprocess`: the dataset builder's command
(`rmt_megatron.model_io.preprocess`)."""

import sys

from rmt_megatron.model_io.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
