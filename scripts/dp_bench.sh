#!/usr/bin/env bash
# Data-parallel prefill throughput (docs/multi-gpu.md): LLaVA-1.5-7B (random weights, bf16),
# every method at budget 64, one process and then N processes (one model per GPU) into one
# folder; the table beside them gives the scaling.
#   bash scripts/dp_bench.sh [N]     # N: processes (default: the GPUs visible)
set -euo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-bench-results}/data-parallel
n=${1:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
args=(bench --mode data-parallel --config llava-1.5-7b --budget 64 --throughput-batches 8,32
      --repeats 8 --warmup 2 --steps 2 --out "$OUT")
python3 -m visiondrop.cli "${args[@]}"
torchrun --nproc-per-node "$n" -m visiondrop.cli "${args[@]}"
