"""Check VisionDrop on the full LLaVA-1.5-7B geometry with random weights, on a GPU.

    python scripts/check_full_geometry.py --out result.json

Checks, for each budget: per-layer visual-token counts equal the schedule (32 layers,
stages before layers 8/16/24) and average to the budget; cached greedy generate() equals
a full recompute of the pruned model step by step (float32); eager and sdpa select the
same tokens (float32); flash_attention_2 runs where it is installed; bf16 batch-8
generate runs. Random weights: answers are meaningless, the mechanics are not.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import transformers
from transformers import LlavaForConditionalGeneration

import visiondrop
from visiondrop.model_configs import llava_1_5_7b_config

PAD, IMAGE = 32001, 32000


def build(dtype, attn):
    config = llava_1_5_7b_config()
    config._attn_implementation = attn
    for sub in (config.text_config, config.vision_config):
        sub._attn_implementation = attn
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(config)
    torch.set_default_dtype(default)
    model.generation_config.pad_token_id = PAD
    return model.eval()


def prompts(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(1, 31999, (5,), generator=g).tolist() + [IMAGE] * 576
            + torch.randint(1, 31999, (8 + 7 * i,), generator=g).tolist() for i in range(batch)]
    width = max(map(len, rows))
    ids = torch.full((batch, width), PAD)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    pixels = torch.randn(batch, 3, 336, 336, generator=g)
    return {"input_ids": ids.cuda(), "attention_mask": mask.cuda(), "pixel_values": pixels.cuda()}


def selections(report):
    return [[s.dominant.tolist() for s in stage.segments] for stage in report.stages]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="full_geometry.json")
    parser.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128, 192])
    parser.add_argument("--new-tokens", type=int, default=6)
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "budgets": {}}
    model = build(torch.float32, "sdpa")
    batch = prompts(2)
    with torch.inference_mode():
        for budget in args.budgets:
            entry = {}
            with visiondrop.apply(model, budget=budget) as handle:
                out = model.generate(**batch, max_new_tokens=args.new_tokens, do_sample=False)
                report = handle.report
                expected = handle.schedule.tokens_per_layer(32, handle.schedule.encoder.total)
                entry["schedule"] = str(handle.schedule)
                counts = report.layer_visual_tokens
                entry["counts_match_schedule"] = all(counts[r].tolist() == expected for r in range(2))
                entry["layer_average"] = report.average_visual_tokens(0)
                sdpa_selection = selections(report)
                new = out[:, batch["input_ids"].shape[1]:]
                ids, mask = batch["input_ids"], batch["attention_mask"]
                matches = []
                for step in range(args.new_tokens):
                    logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                                   use_cache=False).logits
                    token = logits[:, -1].argmax(-1)
                    matches.append(bool(torch.equal(token, new[:, step])))
                    ids = torch.cat([ids, new[:, step:step + 1]], 1)
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                entry["cache_equals_recompute"] = matches
            model.set_attn_implementation("eager")
            with visiondrop.apply(model, budget=budget) as handle:
                model(**batch)
                entry["eager_equals_sdpa_selection"] = selections(handle.report) == sdpa_selection
            model.set_attn_implementation("sdpa")
            result["budgets"][budget] = entry
            print(budget, json.dumps(entry), flush=True)
    del model
    torch.cuda.empty_cache()

    bf16 = build(torch.bfloat16, "sdpa")
    batch8 = prompts(8, seed=1)
    batch8["pixel_values"] = batch8["pixel_values"].bfloat16()
    with torch.inference_mode(), visiondrop.apply(bf16, budget=64) as handle:
        out = bf16.generate(**batch8, max_new_tokens=8, do_sample=False)
        result["bf16_batch8_generate"] = {"tokens": list(out.shape),
                                          "layer_average": handle.report.average_visual_tokens(0)}
    try:
        import flash_attn  # noqa: F401

        bf16.set_attn_implementation("flash_attention_2")
        with torch.inference_mode(), visiondrop.apply(bf16, budget=64) as handle:
            bf16.generate(**batch8, max_new_tokens=8, do_sample=False)
        result["flash_attention_2"] = "ran"
    except ImportError:
        result["flash_attention_2"] = "not installed on this machine"
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
