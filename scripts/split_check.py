"""Pruning on a model split across devices (issue 9): a tiny LLaVA's (and LLaVA-NeXT's)
vision tower and LM layers 0-2 on GPU 0, layers 3-7, the norm and the head on a second device
(accelerate's dispatch_model, what device_map="auto" does): the CPU, and GPU 1 where there is
one. Every method's logits and greedy tokens must equal the single-device run's.

    PYTHONPATH=src python3 scripts/split_check.py
"""

import sys
import traceback

import torch

import visiondrop
from visiondrop.testing import image_prompt, llava_next_prompt, tiny_llava, tiny_llava_next

METHODS = ["full", "visiondrop", "fastv", "pdrop", "sparsevlm", "visionzip", "vispruner", "random"]


def second_devices() -> list:
    """Where the second part goes: the CPU, and GPU 1 on a machine with two GPUs."""
    return ["cpu"] + ([1] if torch.cuda.device_count() >= 2 else [])


def device_map(model, split: int, second="cpu") -> dict:
    """Vision side, embeddings and layers < ``split`` on GPU 0; the rest of the LM on ``second``."""
    layers = len(model.model.language_model.layers)
    placement = {f"model.{name}": 0 for name, _ in model.model.named_children() if name != "language_model"}
    placement.update({f"model.{name}": 0 for name, _ in model.model.named_parameters(recurse=False)})
    placement.update({"model.language_model.embed_tokens": 0, "model.language_model.rotary_emb": 0,
                      "model.language_model.norm": second, "lm_head": second})
    for i in range(layers):
        placement[f"model.language_model.layers.{i}"] = 0 if i < split else second
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


def check(kind: str, method: str, second, where: str) -> int:
    """1 if the split model's logits or greedy tokens differ from the one-GPU run's, else 0."""
    from accelerate import dispatch_model

    build = (lambda: tiny_llava(num_layers=8)) if kind == "llava" else (lambda: tiny_llava_next(num_layers=8))
    model = build().cuda()
    if kind == "llava":
        batch, budget = image_prompt(model, [6, 9]), 128
    else:  # two images of different sizes, padded rows
        batch, budget = llava_next_prompt(model, [4, 6], [[(224, 224)], [(112, 224)]]), 40
    batch = {k: v.cuda() for k, v in batch.items()}
    expected = run(model, batch, method, budget)
    # main_device="cpu": the CPU layers compute on the CPU (else accelerate offloads them and
    # computes on the GPU); the stages at layers 2 (GPU 0), 4 and 6 (second device) see both
    split = dispatch_model(build(), device_map=device_map(model, 3, second),
                           main_device="cpu" if second == "cpu" else None)
    expected_type = "cpu" if second == "cpu" else "cuda"
    layer5 = next(split.model.language_model.layers[5].parameters()).device
    assert layer5.type == expected_type and (second == "cpu" or layer5.index == second), layer5
    got = run(split, batch, method, budget)
    diff = float((got[0] - expected[0]).abs().max())
    same = torch.equal(got[1], expected[1])
    status = "ok" if diff < 1e-3 and same else "MISMATCH"
    print(f"{where} {kind:5s} {method:26s} {status}: max |logit diff| {diff:.2e}, same greedy tokens {same}")
    return int(status != "ok")


def main() -> int:
    failed = 0
    cases = [("llava", m) for m in METHODS + ["visiondrop+positions=keep"]]
    cases += [("next", m) for m in ["full", "visiondrop", "fastv", "sparsevlm", "visionzip"]]
    for second in second_devices():
        where = "GPU 0 + CPU" if second == "cpu" else "GPU 0 + GPU 1"
        for kind, method in cases:
            try:
                failed += check(kind, method, second, where)
            except Exception as error:  # noqa: BLE001  (report every method, then fail)
                failed += 1
                frames = [f for f in traceback.extract_tb(error.__traceback__) if "/visiondrop/" in f.filename]
                at = " < ".join(f"{f.filename.split('/visiondrop/')[-1]}:{f.lineno} {f.name}" for f in frames[::-1])
                message = str(error).splitlines()[0][:200]
                print(f"{where} {kind:5s} {method:26s} FAILED at {at}: {type(error).__name__}: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
