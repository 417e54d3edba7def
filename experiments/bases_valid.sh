#!/usr/bin/env bash
# The replication question (does RMT beat RPT here, and why not), on the validation split only:
# candidate base models (rmt-warmstart outputs) evaluated on the same 400 validation positions
# under the B = 40 prompt (difficulty from the shipped base, so the positions do not depend on the
# candidate), then compared per kind of position by experiments/bases_valid.py. From the repository
# root with the venv active, about 30 s per base:
#   bash experiments/bases_valid.sh NAME=BASE_DIR...
set -euo pipefail
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
DATA=runs/bases_valid/builtin_data
SHIPPED=rmt_megatron/builtin/assets/tiny_base
OUT=runs/bases_valid
mkdir -p $OUT
python -c "from rmt_megatron.builtin.datasets import prepare_builtin_data; prepare_builtin_data('$DATA')"
names=()
for pair in "$@"; do
  name=${pair%%=*} base=${pair#*=}
  names+=("$name")
  log=$OUT/eval_$name.log
  [ -f $OUT/eval_$name.json ] || python -m rmt_megatron.evaluate --load $base/checkpoint \
    --data-path $DATA/arith_valid --proxy-checkpoint $SHIPPED/checkpoint \
    --tokenizer-model $base/tokenizer.model --prompt-budget 40 --eval-positions 400 \
    --builtin-data-dir $DATA --output $OUT/eval_$name.json > $log 2>&1 \
    || { echo "evaluating $name ($base) failed; the end of $log:" >&2; tail -5 $log >&2; exit 1; }
done
python experiments/bases_valid.py $OUT "${names[@]}"
