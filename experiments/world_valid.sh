#!/usr/bin/env bash
# The replication question (does RMT beat RPT here, and why not), on the validation split only: the
# built-in world as the checkout has it (its shipped base model and the tiny preset's budget), RMT
# against RPT at the same prompt. Trains RMT and RPT seeds 1..N from the shipped base (the two arms
# side by side, one torch thread each), evaluates the base and every run on the same 400 validation
# positions under the B = B_T prompt and under no budget clause, and prints the comparison
# (experiments/world_valid.py). From the repository root with the venv active, about 15 min per
# seed on 2 cores:
#   bash experiments/world_valid.sh [SEEDS]      (default "1 2 3")
set -euo pipefail
SEEDS=${1:-1 2 3}
OUT=runs/world_valid
DATA=$OUT/builtin_data
BASE=rmt_megatron/builtin/assets/tiny_base
B_T=$(python -m rmt_megatron.replicate --print-final-budget)
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python - <<PY  # refuse runs and evaluations left in $OUT by another base model (another world)
import sys
from pathlib import Path
from rmt_megatron.errors import TrainingError
from rmt_megatron.study.replication import check_base_model
try:
    check_base_model(Path("$OUT"))
except TrainingError as error:
    sys.exit(f"error: {error}")
PY
python -c "from rmt_megatron.builtin.datasets import prepare_builtin_data; prepare_builtin_data('$DATA')"
train() {  # arm name, seed: the replication's run of that arm, in $OUT/runs/
  local d=$OUT/runs/$1_seed$2 log=$OUT/train_$1_seed$2.log flags
  read -ra flags <<<"$(python -m rmt_megatron.replicate --work-dir $OUT --seeds $2 \
    --print-train-flags $1)"
  [ "$(cat $d/latest_checkpointed_iteration.txt 2>/dev/null)" = 100 ] || \
    python -m rmt_megatron.pretrain "${flags[@]}" > $log 2>&1 \
    || { echo "training $1 seed $2 failed; the end of $log:" >&2; tail -5 $log >&2; exit 1; }
}
evaluate() {  # checkpoint, prompt budget, report name
  local log=$OUT/eval_$3.log
  [ -f $OUT/eval_$3.json ] || python -m rmt_megatron.evaluate --load $1 \
    --data-path $DATA/arith_valid --proxy-checkpoint $BASE/checkpoint \
    --tokenizer-model $BASE/tokenizer.model --prompt-budget $2 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$3.json > $log 2>&1 \
    || { echo "evaluating $3 failed; the end of $log:" >&2; tail -5 $log >&2; exit 1; }
}
evaluate $BASE/checkpoint $B_T base_p$B_T & pid=$!
evaluate $BASE/checkpoint none base_pnone; wait $pid
for seed in $SEEDS; do
  train rmt $seed & pid=$!
  train rpt $seed; wait $pid
  for arm in rmt rpt; do
    evaluate $OUT/runs/${arm}_seed$seed $B_T ${arm}_seed${seed}_p$B_T & pid=$!
    evaluate $OUT/runs/${arm}_seed$seed none ${arm}_seed${seed}_pnone; wait $pid
  done
done
python experiments/world_valid.py $OUT $B_T $SEEDS
