#!/usr/bin/env bash
# One prepared run on a GPU machine (the `device` tool), for the kernels' correctness and speed.
# Prepare here, then run there with the wheels carried (see CONTRIBUTING.md, "On a GPU"):
#   pip wheel --no-deps -w wheels . && pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --platform manylinux_2_28_x86_64 megatron-core==0.16.1 liger-kernel \
#     packaging -d wheels    (liger-kernel imports packaging)
#   run: bash benchmarks/gpu_check.sh        (carry: wheels)
# Results land in $OUT (or benchmarks/results when run by hand).
set -uo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m pip install --no-deps --no-index wheels/*.whl >"$out/install.log" 2>&1 \
    || { tail -20 "$out/install.log"; exit 1; }
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$out/gpu.txt"
status=0
python benchmarks/cuda_check.py 2>&1 | tee "$out/cuda_check.txt" || status=1
python benchmarks/vocab_ops.py --device cuda --n 8192 --h 4096 --v 131072 --dtype bfloat16 \
    --repeats 5 2>&1 | tee "$out/vocab_ops.txt" || status=1
cp benchmarks/results/vocab_ops_*_8192x4096x131072_bfloat16.* "$out/" 2>/dev/null || status=1
exit $status
