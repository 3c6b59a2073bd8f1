#!/usr/bin/env bash
# The committed benchmark runs (docs/benchmarks/): one model per call of the device tool.
#   bash scripts/bench_gpu.sh llava-1.5-7b   # budget 64, batches 8 and 32
#   bash scripts/bench_gpu.sh llava-next-7b  # budget 320, batch 8 (32 would not fit a KV cache in 80 GB)
#   bash scripts/bench_gpu.sh llava-1.5-7b-graph  # captured prefills: batch-1 TTFT (visiondrop.capture)
#   bash scripts/bench_gpu.sh generate  # model.generate() by wall clock, both models (bench --mode generate)
#   bash scripts/bench_gpu.sh generate-graphs-1.5   # the same with apply(..., cuda_graphs=True) variants
#   bash scripts/bench_gpu.sh generate-graphs-next  # (one model per call: each takes minutes)
#   bash scripts/bench_gpu.sh generate-internvl3  # InternVL3-8B through generate()
#   bash scripts/bench_gpu.sh generate-qwen3-vl   # Qwen3-VL-8B through generate()
#   bash scripts/bench_gpu.sh generate-gemma3     # Gemma 3 4B through generate()
#   bash scripts/bench_gpu.sh graphs-check  # replayed vs eager forward/generate, tiny float32 models
set -euo pipefail
export PYTHONPATH=${SRC:-src} PYTHONUNBUFFERED=1  # SRC: another copy of the code (a baseline)
OUT=${OUT:-bench-results}
case "${1:-llava-1.5-7b}" in
  llava-1.5-7b)
    python3 -m visiondrop.cli bench --config llava-1.5-7b --budget 64 --throughput-batches 8,32 \
      --decode-batches 1,32 --repeats 10 --warmup 2 --out "$OUT" ;;
  llava-next-7b)
    python3 -m visiondrop.cli bench --config llava-next-7b --budget 320 --throughput-batches 8 \
      --decode-batches 1,8 --repeats 8 --warmup 2 --out "$OUT" ;;
  llava-1.5-7b-graph)
    python3 scripts/capture_check.py || echo "capture_check: see the failures above"
    python3 -m visiondrop.cli bench --config llava-1.5-7b --budget 64 --mode graph --repeats 30 --warmup 3 \
      --out "$OUT" ;;
  generate)  # issue 19: the user's own model.generate(), LLaVA-1.5 B=64 and LLaVA-NeXT B=320
    python3 -m visiondrop.cli bench --config llava-1.5-7b --budget 64 --mode generate \
      --methods visiondrop,visionzip,fastv --generate-batches 1,16 --generate-tokens 1,64 --repeats 5 --warmup 1 \
      --out "$OUT"
    python3 -m visiondrop.cli bench --config llava-next-7b --budget 320 --mode generate \
      --methods visiondrop,visionzip,fastv --generate-batches 1,4 --generate-tokens 1 --repeats 6 --warmup 1 \
      --out "$OUT" ;;
  generate-graphs-1.5)  # issue 19, sections 2 and 3: eager and cuda_graphs=True through generate()
    python3 -m visiondrop.cli bench --config llava-1.5-7b --budget 64 --mode generate --cuda-graphs \
      --methods visiondrop,visionzip,fastv --generate-batches 1,16 --generate-tokens 1,64 --repeats 5 --warmup 2 \
      --out "$OUT" ;;
  generate-graphs-next)
    python3 -m visiondrop.cli bench --config llava-next-7b --budget 320 --mode generate --cuda-graphs \
      --methods visiondrop,visionzip,fastv --generate-batches 1,4 --generate-tokens 1 --repeats 6 --warmup 2 \
      --out "$OUT" ;;
  generate-internvl3)  # issue 20: InternVL3-8B (one 448-px tile per image), B=64 tokens per tile
    python3 -m visiondrop.cli bench --config internvl3-8b --budget 64 --mode generate \
      --methods visiondrop,fastv,pdrop --generate-batches 1,8 --generate-tokens 1,32 --repeats 5 --warmup 1 \
      --out "$OUT" ;;
  generate-qwen3-vl)  # issue 20: Qwen3-VL-8B, one 512 x 512 image (256 tokens), B=64; FastV's default
    # layer falls before its last DeepStack layer and is refused there, so it runs at layer 3
    python3 -m visiondrop.cli bench --config qwen3-vl-8b --budget 64 --mode generate \
      --methods "visiondrop,fastv[layer=3]" --generate-batches 1,8 --generate-tokens 1,32 --repeats 5 --warmup 1 \
      --out "$OUT" ;;
  generate-gemma3)  # issue 20: Gemma 3 4B, one 896-px image (256 tokens after its 4 x 4 pool), B=64
    python3 -m visiondrop.cli bench --config gemma-3-4b --budget 64 --mode generate \
      --methods visiondrop,fastv,pdrop --generate-batches 1,8 --generate-tokens 1,32 --repeats 5 --warmup 1 \
      --out "$OUT" ;;
  graphs-check)
    python3 scripts/graphs_check.py ;;
  *) echo "unknown model $1" >&2; exit 2 ;;
esac
