"""``visiondrop demo``: VisionDrop on a LLaVA-1.5-shaped model, start to finish.

Until the project's own trained model ships, the demo runs on a tiny *random*
LLaVA built in code (CLIP 336/14 with CLS, Llama LM with GQA), so its answers are
meaningless; what it shows is real: the schedule for each budget, what each stage
kept, per-layer token counts, and that cached ``generate()`` matches a full
recompute of the pruned model, token for token.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

import visiondrop
from visiondrop.testing import image_prompt, tiny_llava

BUDGETS = (192, 128, 64, 32)


def _recompute_matches(model, batch, generated: torch.Tensor) -> bool:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for step in range(generated.shape[1]):
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"], use_cache=False).logits
        token = logits[:, -1].argmax(-1)
        if not torch.equal(token, generated[:, step]):
            return False
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return True


def run(max_new_tokens: int = 8) -> int:
    torch.manual_seed(0)
    model = tiny_llava(num_layers=8)
    batch = image_prompt(model, [6, 12], seed=1)  # two rows, left padding, one image each
    prompt_length = batch["input_ids"].shape[1]
    print("visiondrop demo: tiny random LLaVA-1.5 geometry (576 patches + CLS, 8-layer Llama LM, GQA)")
    print("weights are random: answers are noise; schedules, reports and checks are real.\n")
    with torch.inference_mode():
        full = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        print("full model: 576 visual tokens in every decoder layer")
        rows = []
        for budget in tqdm(BUDGETS, desc="budgets", leave=False):
            with visiondrop.apply(model, budget=budget) as handle:
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
                new = out[:, prompt_length:]
                consistent = _recompute_matches(model, batch, new)
                agree = (new == full[:, prompt_length:]).float().mean().item()
                rows.append((budget, handle.schedule, handle.report, consistent, agree))
    print(f"\n{'budget':>6}  {'schedule (dominant+contextual)':<56} {'avg/layer':>9}  {'cache==recompute':>16}")
    for budget, schedule, report, consistent, _ in rows:
        print(f"{budget:>6}  {str(schedule):<56} {report.average_visual_tokens(0):>9.2f}  "
              f"{'yes' if consistent else 'NO':>16}")
    print(f"\nstages at budget {rows[-1][0]}:\n{rows[-1][2].summary()}")
    return 0 if all(r[3] for r in rows) else 1
