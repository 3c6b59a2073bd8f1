#!/usr/bin/env bash
# The committed analysis (docs/analysis/): the three tools on the shipped shapes-llava, on CPU
# (about 5 minutes on 2 cores).   bash scripts/analysis_docs.sh [OUT=docs/analysis]
set -euo pipefail
OUT=${OUT:-docs/analysis}
METHODS=visiondrop,fastv,pdrop,pdrop-visual,sparsevlm,visionzip,random
mkdir -p "$OUT/visualize/inputs"
# two held-out ShapesVQA scenes as PNG files, as a user would have images
python3 - "$OUT/visualize/inputs" <<'PY'
import sys
from visiondrop.eval.datasets import load_dataset
samples = {s.id: s for s in load_dataset("shapes", scenes="2").samples()}
for sid in ("0/colour", "1/colour"):
    samples[sid].image().save(f"{sys.argv[1]}/scene{sid[0]}.png")
PY
python3 -m visiondrop.cli visualize --image "$OUT/visualize/inputs/scene0.png" --prompt "what colour is the object at the bottom-left ?" \
  --methods visiondrop,fastv,pdrop,sparsevlm,visionzip --budget 128 --answer-tokens 1 --out "$OUT/visualize"
python3 -m visiondrop.cli visualize --image "$OUT/visualize/inputs/scene1.png" --prompt "what colour is the object at the right ?" \
  --methods visiondrop,pdrop,pdrop-visual --budget 128 --answer-tokens 1 --out "$OUT/visualize/pdrop"
python3 -m visiondrop.cli bias --methods "$METHODS" --budget 128 --limit 64 --out "$OUT/bias"
python3 -m visiondrop.cli study --budgets 192,128,64 --out "$OUT/study"
