#!/usr/bin/env bash
# Issue 11, on the validation split only: a final budget that covers the necessary working.
# The column working plus "after ... comes" for a sum digit is 39-62 tokens on the train split
# (experiments/working_length.py), so B_T = 40 makes the length reward pay for cutting needed
# steps. This trains RMT with B_T = 64 (decay 0.67, so 96 -> 64 reaches the floor at the last
# step) for seeds 1-3 and compares it with RPT under the B = 64 prompt, and with the
# replication's RMT (B_T = 40) against RPT under B = 40, on the 400 validation positions.
# Needs the replication's main runs. From the repository root (~45 min on 2 cores):
#   bash experiments/budget_covers_working_valid.sh
set -euo pipefail
DATA=runs/replicate/builtin_data
RUNS=runs/replicate/runs
OUT=runs/budget_cover
BASE=rmt_megatron/builtin/assets/tiny_base
mkdir -p $OUT
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
for seed in 1 2 3; do
  d=$OUT/rmt_b64_seed$seed
  [ "$(cat $d/latest_checkpointed_iteration.txt 2>/dev/null)" = 100 ] || \
    python pretrain_rmt.py --seed $seed --rmt-budget-min 64 --rmt-budget-decay 0.67 \
      --train-iters 100 --save $d --load $d --save-interval 50 --eval-interval 25 \
      --eval-positions 100 --tensorboard-dir $d/tensorboard --builtin-data-dir $DATA \
      > $OUT/train_b64_seed$seed.log 2>&1
done
evaluate() {  # checkpoint, prompt budget, report name
  [ -f $OUT/eval_$3.json ] || python -m rmt_megatron.evaluate --load $1 \
    --data-path $DATA/arith_valid --proxy-checkpoint $BASE/checkpoint \
    --tokenizer-model $BASE/tokenizer.model --prompt-budget $2 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$3.json > $OUT/eval_$3.log 2>&1
}
for seed in 1 2 3; do
  evaluate $OUT/rmt_b64_seed$seed 64 rmt_b64_seed${seed}_p64
  evaluate $RUNS/rpt_seed$seed 64 rpt_seed${seed}_p64
  cp -n runs/budget_floor/eval_rmt_seed${seed}_p40.json runs/budget_floor/eval_rpt_seed${seed}_p40.json $OUT/
done
python experiments/budget_floor_valid.py $OUT 64
