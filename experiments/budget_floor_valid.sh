#!/usr/bin/env bash
# The replication question (does RMT beat RPT here, and why not), on the validation split only: RMT
# with another final budget B_T = FLOOR, against RPT at the same prompt. The necessary reasoning
# for a sum digit is 39-62 tokens on the train split (experiments/working_length.py), so the
# replication's B_T = 40 makes the length reward pay for cutting needed steps.
#   bash experiments/budget_floor_valid.sh 48        B_T = 48 (decay 0.42: binds from step 80)
#   bash experiments/budget_floor_valid.sh 64 0.67   B_T = 64, above every working (96 -> 64 at
#                                                    the last step)
# Trains RMT seeds 1-3 with that floor and evaluates it, RPT under the B = FLOOR prompt, and the
# replication's RMT and RPT under B = 40 on the same 400 validation positions. Needs the
# replication's main runs. From the repository root with the venv active, ~35-45 min on 2
# cores. Writes runs/budget_floor/ and prints the comparison (experiments/budget_floor_valid.py).
set -euo pipefail
FLOOR=${1:?usage: bash experiments/budget_floor_valid.sh FLOOR [DECAY]}
DECAY=${2:-0.42}
DATA=runs/replicate/builtin_data
RUNS=runs/replicate/runs
OUT=runs/budget_floor
BASE=rmt_megatron/builtin/assets/tiny_base
mkdir -p $OUT
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
B_T=$(python -m rmt_megatron.replicate --print-final-budget)  # the replication's B_T
for seed in 1 2 3; do
  # the replication's RMT arm with this floor, its run in $OUT/b$FLOOR/runs/rmt_seed$seed
  read -ra flags <<<"$(python -m rmt_megatron.replicate --work-dir $OUT/b$FLOOR --seeds $seed \
    --print-train-flags rmt --rmt-budget-min $FLOOR --rmt-budget-decay $DECAY)"
  d=$OUT/b$FLOOR/runs/rmt_seed$seed
  [ "$(cat $d/latest_checkpointed_iteration.txt 2>/dev/null)" = 100 ] || \
    python -m rmt_megatron.pretrain "${flags[@]}" > $OUT/train_b${FLOOR}_seed$seed.log 2>&1
done
evaluate() {  # checkpoint, prompt budget, report name
  [ -f $OUT/eval_$3.json ] || python -m rmt_megatron.evaluate --load $1 \
    --data-path $DATA/arith_valid --proxy-checkpoint $BASE/checkpoint \
    --tokenizer-model $BASE/tokenizer.model --prompt-budget $2 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$3.json > $OUT/eval_$3.log 2>&1
}
for seed in 1 2 3; do
  evaluate $OUT/b$FLOOR/runs/rmt_seed$seed $FLOOR rmt_b${FLOOR}_seed${seed}_p$FLOOR
  evaluate $RUNS/rpt_seed$seed $FLOOR rpt_seed${seed}_p$FLOOR
  evaluate $RUNS/rmt_seed$seed $B_T rmt_seed${seed}_p$B_T
  evaluate $RUNS/rpt_seed$seed $B_T rpt_seed${seed}_p$B_T
done
python experiments/budget_floor_valid.py $OUT $FLOOR $B_T
