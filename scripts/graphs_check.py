"""``apply(..., cuda_graphs=True)`` on a GPU: do the model's own ``forward`` and
``generate()`` give, through replayed CUDA graphs, what they give eagerly? On tiny
float32 LLaVA-1.5 and LLaVA-NeXT models on CUDA, for every method with fixed shapes
(and ``none``, the unpruned model through the same hooks): three prompts of one layout
and one of another, each run twice so that every layout is captured and replayed;
prefill logits, the kept indices in handle.report, greedy tokens and sampled tokens
(same seed) against the same calls without the option. Each model and method runs in
its own process (a failed capture can leave the CUDA context unusable).

    PYTHONPATH=src python3 scripts/graphs_check.py [MODEL ...]   # default: all four models
"""

import os
import subprocess
import sys

import torch

METHODS = ["none", "visiondrop", "fastv", "pdrop", "visionzip", "vispruner", "random", "sparsevlm"]
MODELS = ["llava", "llava-next", "video-llava", "llava-onevision"]
BUDGETS = {"llava": 128, "llava-next": 150, "video-llava": 24, "llava-onevision": 80}
# VisionZip and VisPruner score with [CLS] attention; OneVision's SigLIP has no [CLS]
NO_CLS = {"llava-onevision": {"visionzip", "vispruner"}}
NO_ENCODER_STAGE = {"none", "fastv", "pdrop", "sparsevlm"}  # refused with cuda_graphs on OneVision
# GRAPHS_CHECK_DEVICE=cpu: the same check with cuda_graphs="frozen" (no graph), a dry run
DEVICE = os.environ.get("GRAPHS_CHECK_DEVICE", "cuda")
MODE = True if DEVICE == "cuda" else "frozen"


def prompts(name, model):
    from visiondrop.testing import image_prompt, llava_next_prompt, llava_onevision_prompt, video_llava_prompt

    if name == "llava":
        made = [image_prompt(model, [7, 7], seed=s) for s in (1, 2, 3)] + [image_prompt(model, [4, 4], seed=4)]
    elif name == "video-llava":
        both = ["image", "video"]
        made = [video_llava_prompt(model, [5, 5], [both, both], seed=s) for s in (1, 2, 3)]
        made.append(video_llava_prompt(model, [4, 4], [["image"], ["image"]], seed=4))
    elif name == "llava-onevision":
        made = [llava_onevision_prompt(model, [5, 5], [[(168, 168)], [(168, 168)]], seed=s) for s in (1, 2, 3)]
        multi = [(100, 50), (60, 80)]  # a multi-image row: one crop and a newline per image
        made.append(llava_onevision_prompt(model, [4, 4], [multi, multi], seed=4))
    else:
        sizes = [[(40, 60)], [(40, 60)]]
        made = [llava_next_prompt(model, [5, 5], sizes, seed=s) for s in (1, 2, 3)]
        made.append(llava_next_prompt(model, [3, 3], [[(60, 30)], [(60, 30)]], seed=4))
    return [{k: v.to(DEVICE) for k, v in batch.items()} for batch in made]


def run(model, handle, batches):
    """Per batch: prefill logits, kept indices, greedy and sampled tokens."""
    results = []
    # a random tiny model may sample its own image token, which a pruned prompt refuses
    never = {"suppress_tokens": [t for t in (model.config.image_token_id,
                                             getattr(model.config, "video_token_id", None)) if t is not None]}
    for batch in batches:
        out = model(**batch, use_cache=True, logits_to_keep=1)
        logits = out.logits.clone()
        kept = [s.dominant.clone() for s in handle.report.stages[-1].segments] if handle.report.stages else []
        greedy = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False, **never)
        torch.manual_seed(0)
        sampled = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=True, **never)
        results.append((logits, kept, greedy, sampled))
    return results


def check(name: str, method: str) -> None:
    import visiondrop
    from visiondrop.testing import tiny_llava, tiny_llava_next, tiny_llava_onevision, tiny_video_llava

    build = {"llava": lambda: tiny_llava(num_layers=16), "llava-next": lambda: tiny_llava_next(num_layers=16),
             "video-llava": lambda: tiny_video_llava(num_layers=16, image_size=70),
             "llava-onevision": lambda: tiny_llava_onevision(num_layers=8)}[name]
    if method in NO_CLS.get(name, ()):
        print(f"{name:15s} {method:11s} skipped: the model's encoder has no [CLS]")
        return
    model = build().to(DEVICE)
    batches = prompts(name, model)
    options = {} if method == "none" else {"budget": BUDGETS[name]}
    with torch.no_grad():
        try:
            handle = visiondrop.apply(model, method, cuda_graphs=MODE, **options)
        except visiondrop.BudgetInfeasible as error:  # SparseVLM on the tiny Video-LLaVA: no budget fits
            print(f"{name:15s} {method:11s} skipped: {error}")
            assert method == "sparsevlm", f"{method}: {error}"
            return
        except ValueError as error:
            print(f"{name:15s} {method:11s} refused at apply, as it should be: {error}")
            expected = method == "sparsevlm" or (name == "llava-onevision" and method in NO_ENCODER_STAGE)
            assert expected, f"{method}: refused: {error}"
            return
        handle.remove()
        with visiondrop.apply(model, method, **options) as handle:
            eager = run(model, handle, batches)
        handle = visiondrop.apply(model, method, cuda_graphs=MODE, **options)
        with handle:
            run(model, handle, batches)  # first sight of each layout: eager; the repeats of layout 1 capture
            graphed = run(model, handle, batches)
            graphs = handle.graphs
    worst = 0.0
    for i, ((logits, kept, greedy, sampled), (g_logits, g_kept, g_greedy, g_sampled)) in enumerate(
            zip(eager, graphed)):
        worst = max(worst, float((logits - g_logits).abs().max()))
        assert all(torch.equal(a, b) for a, b in zip(kept, g_kept)), f"{name} {method}: kept indices, batch {i}"
        assert torch.equal(greedy, g_greedy), f"{name} {method}: greedy tokens differ, batch {i}"
        assert torch.equal(sampled, g_sampled), f"{name} {method}: sampled tokens differ, batch {i}"
    assert worst < 1e-4, f"{name} {method}: max |logit difference| {worst:.3g}"
    assert graphs.captures >= 2 and graphs.replays > 0, f"{name} {method}: {graphs}"
    print(f"{name:15s} {method:11s} {graphs}: max |logit diff| {worst:.2e}; kept indices, greedy and sampled "
          "tokens equal")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[2] in METHODS:
        check(sys.argv[1], sys.argv[2])
        return 0
    failed = []
    models = sys.argv[1:] or MODELS  # model names only: the check of those models
    for name in models:
        for method in METHODS:
            code = subprocess.call([sys.executable, __file__, name, method])
            if code:
                failed.append(f"{name}/{method}")
    print("all replays agree with eager" if not failed else f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
