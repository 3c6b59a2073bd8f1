"""Count the operations one pruned prefill issues inside the library's hooks, per hook and
per LLM stage, on a tiny random LLaVA with a 32-layer LM (the stages sit before layers 8,
16 and 24, as on the 7B), on the CPU: the yardstick of issue 19 for a change to a stage,
no GPU needed. Launches are counted on a GPU only (`visiondrop bench --mode generate`).

    PYTHONPATH=src python3 scripts/stage_ops.py [--method visiondrop] [--batch 1] [--budget 24]
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import visiondrop
from visiondrop.bench.generate import count_operations
from visiondrop.testing import image_prompt, tiny_llava
from visiondrop.timing import measure_machinery


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="visiondrop")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--budget", type=int, default=24, help="of the tiny model's 64 visual tokens")
    args = parser.parse_args()
    model = tiny_llava(num_layers=32, image_size=112)
    batch = image_prompt(model, [8] * args.batch)
    batch.pop("attention_mask")  # no padding, as generate() hands a batch of equal prompts
    with torch.inference_mode(), visiondrop.apply(model, args.method, budget=args.budget):
        model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof, measure_machinery():
            model(**batch)
    counts = count_operations(prof.events())
    print(f"{args.method}, batch {args.batch}: {counts['ops']} operations, {counts['machinery_ops']} in the hooks")
    for hook, hook_counts in counts["per_hook"].items():
        print(f"  {hook:45s} {hook_counts.get('ops', 0):5d}")


if __name__ == "__main__":
    main()
