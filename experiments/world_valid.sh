#!/usr/bin/env bash
# Issue 11, on the validation split only: the world with the compact column working (necessary
# reasoning 23-35 tokens, below B_T = 40; experiments/working_length.py). Trains RPT and RMT for
# seeds 1-3 exactly as the replication does (into runs/replicate/runs/, so the replication
# reuses them; the two arms run side by side with one torch thread each), evaluates them and the
# base on the same 400 validation positions under the B = 40 prompt, and prints the base's
# reasoning - argmax and RMT - RPT (experiments/world_valid.py). From the repository root with
# the venv active, ~45 min on 2 cores:
#   bash experiments/world_valid.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=runs/replicate/builtin_data
BASE=rmt_megatron/builtin/assets/tiny_base
OUT=runs/world_valid
mkdir -p $OUT
python -c "
from pathlib import Path
from rmt_megatron.builtin.datasets import prepare_builtin_data
from rmt_megatron.run.replication import check_base_model
check_base_model(Path('runs/replicate'))
prepare_builtin_data('$DATA')"
train_arm() {  # arm name: seeds 1-3, one after another
  OMP_NUM_THREADS=1 python - "$1" <<'PY'
import sys

from rmt_megatron.run.replication import ARMS, build_parser, settings_from_args, train

settings = settings_from_args(build_parser().parse_args(["--threads", "1"]))
for seed in (1, 2, 3):
    train(settings, next(a for a in ARMS if a.name == sys.argv[1]), seed)
PY
}
train_arm rpt > $OUT/train_rpt.log 2>&1 &
rpt=$!
train_arm rmt > $OUT/train_rmt.log 2>&1 &
rmt=$!
wait $rpt
wait $rmt
export OMP_NUM_THREADS=2
evaluate() {  # checkpoint, report name
  [ -f $OUT/eval_$2.json ] || python -m rmt_megatron.evaluate --load $1 \
    --data-path $DATA/arith_valid --proxy-checkpoint $BASE/checkpoint \
    --tokenizer-model $BASE/tokenizer.model --prompt-budget 40 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$2.json > $OUT/eval_$2.log 2>&1
}
evaluate $BASE/checkpoint base_p40
for seed in 1 2 3; do
  for arm in rmt rpt; do
    evaluate runs/replicate/runs/${arm}_seed$seed ${arm}_seed${seed}_p40
  done
done
python experiments/world_valid.py $OUT
