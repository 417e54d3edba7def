"""RMT mid-training entry point: `torchrun pretrain_rmt.py [Megatron-LM flags] [--rmt-* flags]`.

With no arguments it runs the built-in CPU default: the `tiny_cpu` preset on the built-in
arithmetic corpus, starting from the shipped warm-started base model. It prints the schedule,
progress lines and evaluations, and writes checkpoints, TensorBoard events and eval JSON under
`runs/tiny_cpu/`. The command lives in `rmt_megatron.run.pretrain` (also `python -m
rmt_megatron.pretrain`).
"""

import sys

from rmt_megatron.run.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
