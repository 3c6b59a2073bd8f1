#!/usr/bin/env bash
# The paper's Table 1 (LLaVA-1.5-7B: full and VisionDrop at 192, 128 and 64 tokens) with the
# evaluation harness, once the weights and the benchmarks are on disk (docs/eval.md lists the files).
#   DATA=./playground/data/eval GPUS=8 bash scripts/table1.sh
# Every benchmark runs as GPUS processes (torchrun, --shard auto), is merged, then scored; the
# server-scored splits (VQAv2 test-dev, MMBench test) are exported for upload instead.
set -euo pipefail
DATA=${DATA:?set DATA to the benchmarks folder, e.g. playground/data/eval}
GPUS=${GPUS:-1}
MODEL=${MODEL:-llava-hf/llava-1.5-7b-hf}
OUT=${OUT:-table1}
BUDGETS=${BUDGETS:-"full 192 128 64"}

declare -A SETS=(
  [gqa]="--dataset gqa --data questions=$DATA/gqa/testdev_balanced_questions.json --data images=$DATA/gqa/images"
  [mmbench]="--dataset mmbench --data questions=$DATA/mmbench/mmbench_dev_20230712.tsv"
  [mmbench_cn]="--dataset mmbench_cn --data questions=$DATA/mmbench/mmbench_dev_cn_20231003.tsv"
  [mme]="--dataset mme --data root=$DATA/MME/MME_Benchmark_release_version"
  [pope]="--dataset pope --data questions=$DATA/pope/coco --data images=$DATA/pope/val2014"
  [scienceqa]="--dataset scienceqa --data problems=$DATA/scienceqa/problems.json --data pid_splits=$DATA/scienceqa/pid_splits.json --data images=$DATA/scienceqa/images"
  [vqav2]="--dataset vqav2 --data questions=$DATA/vqav2/v2_OpenEnded_mscoco_test-dev2015_questions.json --data images=$DATA/vqav2/test2015"
  [textvqa]="--dataset textvqa --data questions=$DATA/textvqa/TextVQA_0.5.1_val.json --data ocr=$DATA/textvqa/TextVQA_Rosetta_OCR_v0.2_val.json --data images=$DATA/textvqa/train_images"
  [vizwiz]="--dataset vizwiz --data questions=$DATA/vizwiz/val.json --data images=$DATA/vizwiz/val"
)

for budget in $BUDGETS; do
  for name in "${!SETS[@]}"; do
    run="$OUT/$budget/$name"
    mkdir -p "$run"
    # shellcheck disable=SC2086
    torchrun --nproc-per-node "$GPUS" -m visiondrop.cli eval run ${SETS[$name]} --model "$MODEL" \
      --method visiondrop --budget "$budget" --dtype float16 --shard auto --out "$run/pred.{shard}.jsonl"
    visiondrop eval merge "$run"/pred.*of"$GPUS".jsonl --out "$run/pred.jsonl"
  done
  visiondrop eval export "$OUT/$budget/vqav2/pred.jsonl" --out "$OUT/$budget/vqav2/upload.json"
done
for budget in $BUDGETS; do
  [ "$budget" = full ] && continue
  scored=()
  base=()
  for name in gqa mmbench mmbench_cn mme pope scienceqa textvqa vizwiz; do
    scored+=("$OUT/$budget/$name/pred.jsonl")
    base+=("$OUT/full/$name/pred.jsonl")
  done
  visiondrop eval score "${scored[@]}" --baseline "${base[@]}" --json "$OUT/$budget/scores.json"
done
