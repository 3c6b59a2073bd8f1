"""Pruning on a model split across devices (issue 9): a tiny LLaVA's (and LLaVA-NeXT's)
vision tower and the first half of its LM on the GPU, the second half of the LM and the head on the CPU (accelerate's
dispatch_model, what device_map="auto" does); every method's logits and greedy tokens must equal
the single-device run's.

    PYTHONPATH=src python3 scripts/split_check.py
"""

import sys
import traceback

import torch

import visiondrop
from visiondrop.testing import image_prompt, llava_next_prompt, tiny_llava, tiny_llava_next

METHODS = ["full", "visiondrop", "fastv", "pdrop", "sparsevlm", "visionzip", "vispruner", "random"]


def device_map(model, split: int) -> dict:
    """Vision side, embeddings and layers < ``split`` on GPU 0; the rest of the LM on the CPU."""
    layers = len(model.model.language_model.layers)
    placement = {f"model.{name}": 0 for name, _ in model.model.named_children() if name != "language_model"}
    placement.update({f"model.{name}": 0 for name, _ in model.model.named_parameters(recurse=False)})
    placement.update({"model.language_model.embed_tokens": 0, "model.language_model.rotary_emb": 0,
                      "model.language_model.norm": "cpu", "lm_head": "cpu"})
    for i in range(layers):
        placement[f"model.language_model.layers.{i}"] = 0 if i < split else "cpu"
    return placement


def run(model, batch, method, budget=128):
    name, _, option = method.partition("+")
    options = dict([option.split("=")]) if option else {}
    handle = None if name == "full" else visiondrop.apply(model, name, budget=budget, **options)
    try:
        with torch.no_grad():
            logits = model(**batch, logits_to_keep=1).logits.float().cpu()
            tokens = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False).cpu()
        return logits, tokens
    finally:
        if handle is not None:
            handle.remove()


def main() -> int:
    from accelerate import dispatch_model

    failed = 0
    cases = [("llava", m) for m in METHODS + ["visiondrop+positions=keep"]]
    cases += [("next", m) for m in ["full", "visiondrop", "fastv", "sparsevlm", "visionzip"]]
    for kind, method in cases:
        try:
            build = (lambda: tiny_llava(num_layers=8)) if kind == "llava" else (lambda: tiny_llava_next(num_layers=8))
            model = build().cuda()
            if kind == "llava":
                batch, budget = image_prompt(model, [6, 9]), 128
            else:  # two images of different sizes, padded rows
                batch, budget = llava_next_prompt(model, [4, 6], [[(224, 224)], [(112, 224)]]), 40
            batch = {k: v.cuda() for k, v in batch.items()}
            expected = run(model, batch, method, budget)
            # main_device="cpu": the CPU layers compute on the CPU (else accelerate offloads them and
            # computes on the GPU); the stages at layers 2 (GPU), 4 and 6 (CPU) see both devices
            split = dispatch_model(build(), device_map=device_map(model, 3), main_device="cpu")
            assert next(split.model.language_model.layers[5].parameters()).device.type == "cpu"
            got = run(split, batch, method, budget)
            diff = float((got[0] - expected[0]).abs().max())
            same = torch.equal(got[1], expected[1])
            status = "ok" if diff < 1e-3 and same else "MISMATCH"
            failed += status != "ok"
            print(f"{kind:5s} {method:26s} {status}: max |logit diff| {diff:.2e}, same greedy tokens {same}")
        except Exception as error:  # noqa: BLE001  (report every method, then fail)
            failed += 1
            frames = [f for f in traceback.extract_tb(error.__traceback__) if "/visiondrop/" in f.filename]
            where = " < ".join(f"{f.filename.split('/visiondrop/')[-1]}:{f.lineno} {f.name}" for f in frames[::-1])
            message = str(error).splitlines()[0][:200]
            print(f"{kind:5s} {method:26s} FAILED at {where}: {type(error).__name__}: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
