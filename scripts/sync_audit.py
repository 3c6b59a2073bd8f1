"""Where does a pruned prefill make the host wait for the GPU? Runs every method on a
tiny LLaVA (and LLaVA-NeXT) on CUDA under torch.cuda.set_sync_debug_mode("warn") and
prints each synchronising call site inside visiondrop (file:line, function), with counts.

    PYTHONPATH=src python3 scripts/sync_audit.py
"""

import collections
import traceback
import warnings

import torch

import visiondrop
from visiondrop.testing import image_prompt, llava_next_prompt, tiny_llava, tiny_llava_next


def audit(model, batch, method, budget):
    sites = collections.Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        for frame in reversed(traceback.extract_stack()[:-1]):
            if "/visiondrop/" in frame.filename and "sync_audit" not in frame.filename:
                sites[f"{frame.filename.split('/visiondrop/')[-1]}:{frame.lineno} {frame.name}: {frame.line}"] += 1
                return
        sites[f"(outside visiondrop) {filename}:{lineno}"] += 1

    with visiondrop.apply(model, method, budget=budget), torch.no_grad():
        model(**batch)  # warm-up (first-call allocations)
        torch.cuda.synchronize()
        original = warnings.showwarning
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = show
                model(**batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = original
    return sites


def main():
    llava = tiny_llava(num_layers=16).cuda()
    batch = {k: v.cuda() for k, v in image_prompt(llava, [8, 5]).items()}
    baseline = audit(llava, batch, "random", 576)  # keep-all plan: transformers' own syncs
    print("syncs of the unpruned path (random at 576 keeps all):", sum(baseline.values()))
    for method, budget in [("visiondrop", 64), ("fastv", 64), ("pdrop", 64), ("sparsevlm", 64),
                           ("visionzip", 64), ("vispruner", 64)]:
        sites = audit(llava, batch, method, budget)
        print(f"\n{method}: {sum(sites.values())} syncs")
        for site, count in sites.most_common():
            print(f"  {count:3d}  {site}")
    nxt = tiny_llava_next().cuda()
    batch = {k: v.cuda() for k, v in llava_next_prompt(nxt, [4, 6], [[(224, 224)], [(112, 224)]]).items()}
    sites = audit(nxt, batch, "visiondrop", 40)
    print(f"\nllava-next visiondrop: {sum(sites.values())} syncs")
    for site, count in sites.most_common():
        print(f"  {count:3d}  {site}")


if __name__ == "__main__":
    main()
