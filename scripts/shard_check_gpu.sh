#!/usr/bin/env bash
# Two sharded `eval run` processes on one GPU (torchrun), merged, against one process
# (docs/multi-gpu.md): the POPE fixture and a tiny random LLaVA checkpoint, VisionDrop at 64.
#   bash scripts/shard_check_gpu.sh
set -euo pipefail
export PYTHONPATH=$PWD/src
work=$(mktemp -d)
python3 -c "from visiondrop.testing import save_tiny_checkpoint; save_tiny_checkpoint('$work/tiny')"
cp -r tests/fixtures/eval/pope "$work/pope"  # its random split names an image the fixture leaves out on purpose
cp "$work/pope/val2014/COCO_val2014_000000210789.jpg" "$work/pope/val2014/COCO_val2014_000000016631.jpg"
args=(--dataset pope --data "questions=$work/pope" --data "images=$work/pope/val2014" --model "$work/tiny"
      --budget 64 --device cuda:0)
torchrun --nproc-per-node 2 -m visiondrop.cli eval run "${args[@]}" --shard auto --out "$work/p.{shard}.jsonl"
python3 -m visiondrop.cli eval merge "$work/p.0of2.jsonl" "$work/p.1of2.jsonl" --out "$work/p.jsonl"
python3 -m visiondrop.cli eval run "${args[@]}" --out "$work/one.jsonl"
python3 - "$work" <<'PY'
import sys
from visiondrop.eval.harness import read_records
merged, one = read_records(f"{sys.argv[1]}/p.jsonl"), read_records(f"{sys.argv[1]}/one.jsonl")
print(f"{len(merged)} merged records, {len(one)} single-process records, equal: {merged == one}")
sys.exit(0 if merged == one else 1)
PY
