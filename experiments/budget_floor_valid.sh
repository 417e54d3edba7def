#!/usr/bin/env bash
# Issue 11, on the validation split only: does a budget floor above the working's length
# (B_T = 48 instead of 40) close RMT's gap to RPT at the same prompt?
# Needs the replication's main runs (python -m rmt_megatron.replicate --tables main).
# From the repository root:  bash experiments/budget_floor_valid.sh   (~35 min on 2 cores)
# Writes runs/budget_floor/ and prints the comparison (experiments/budget_floor_valid.py).
set -euo pipefail
DATA=runs/replicate/builtin_data
RUNS=runs/replicate/runs
OUT=runs/budget_floor
BASE=rmt_megatron/builtin/assets/tiny_base
mkdir -p $OUT
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
for seed in 1 2 3; do
  d=$OUT/rmt_b48_seed$seed
  [ "$(cat $d/latest_checkpointed_iteration.txt 2>/dev/null)" = 100 ] || \
    python pretrain_rmt.py --seed $seed --rmt-budget-min 48 --train-iters 100 --save $d \
      --load $d --save-interval 50 --eval-interval 25 --eval-positions 100 \
      --tensorboard-dir $d/tensorboard --builtin-data-dir $DATA > $OUT/train_b48_seed$seed.log 2>&1
done
evaluate() {  # checkpoint, prompt budget, report name
  [ -f $OUT/eval_$3.json ] || python -m rmt_megatron.evaluate --load $1 \
    --data-path $DATA/arith_valid --proxy-checkpoint $BASE/checkpoint \
    --tokenizer-model $BASE/tokenizer.model --prompt-budget $2 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$3.json > $OUT/eval_$3.log 2>&1
}
for seed in 1 2 3; do
  evaluate $OUT/rmt_b48_seed$seed 48 rmt_b48_seed${seed}_p48
  evaluate $RUNS/rpt_seed$seed 48 rpt_seed${seed}_p48
  evaluate $RUNS/rmt_seed$seed 40 rmt_seed${seed}_p40
  evaluate $RUNS/rpt_seed$seed 40 rpt_seed${seed}_p40
done
python experiments/budget_floor_valid.py $OUT 48
