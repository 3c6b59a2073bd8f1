"""Does every method's prefill capture as one CUDA graph, and does the replay give what
the eager prefill gives? On a tiny LLaVA on CUDA, for new text and pixels of the
captured layout: logits, the kept indices in handle.report, and greedy tokens against
transformers' generate(). Each method runs in its own process (a failed capture can
leave the CUDA context unusable).

    PYTHONPATH=src python3 scripts/capture_check.py
"""

import subprocess
import sys

import torch

METHODS = ["full", "visiondrop", "fastv", "pdrop", "sparsevlm", "visionzip", "vispruner", "random"]


def check(method: str) -> None:
    import visiondrop
    from visiondrop.capture import CapturedPrefill
    from visiondrop.testing import image_prompt, tiny_llava

    model = tiny_llava(num_layers=16).cuda()

    def prompt(seed):
        batch = image_prompt(model, [7, 7], seed=seed)
        return batch["input_ids"], batch["pixel_values"].cuda()

    ids, pixels = prompt(0)
    handle = None if method == "full" else visiondrop.apply(model, method, budget=128)
    with torch.no_grad():
        if handle is not None and not handle.method.fixed_shapes:
            try:
                CapturedPrefill(model, ids, pixels)
            except ValueError as error:
                print(f"{method:11s} refused before capture, as it should be: {error}")
                return
            raise AssertionError(f"{method}: shapes depend on the data, yet capture was not refused")
        captured = CapturedPrefill(model, ids, pixels)
        worst = 0.0
        for seed in (1, 2, 3):
            new_ids, new_pixels = prompt(seed)
            out = captured(new_ids, new_pixels)
            logits = out.logits.clone()
            kept = [s.dominant.clone() for s in handle.report.stages[-1].segments] if handle else []
            tokens = captured.generate(new_ids, new_pixels, max_new_tokens=6)
            eager = model(input_ids=new_ids.cuda(), pixel_values=new_pixels, logits_to_keep=1)
            eager_kept = [s.dominant for s in handle.report.stages[-1].segments] if handle else []
            expected = model.generate(input_ids=new_ids.cuda(), pixel_values=new_pixels,
                                      attention_mask=torch.ones_like(new_ids).cuda(),
                                      max_new_tokens=6, min_new_tokens=6, do_sample=False)
            worst = max(worst, float((logits - eager.logits).abs().max()))
            same_kept = all(torch.equal(a, b) for a, b in zip(kept, eager_kept))
            same_tokens = torch.equal(tokens.cpu(), expected[:, new_ids.shape[1]:].cpu())
            assert same_kept, f"{method}: replayed kept indices differ from eager (seed {seed})"
            assert same_tokens, f"{method}: replayed greedy tokens differ from generate() (seed {seed})"
        assert worst < 1e-3, f"{method}: max |logit difference| {worst:.3g}"
    print(f"{method:11s} captured; 3 new prompts: max |logit diff| {worst:.2e}, kept indices and greedy tokens equal")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        check(sys.argv[2])
        return 0
    failed = 0
    for method in METHODS:
        run = subprocess.run([sys.executable, __file__, "--one", method], capture_output=True, text=True)
        if run.returncode:
            failed += 1
            lines = (run.stderr or run.stdout).strip().splitlines()
            print(f"{method:11s} FAILED: {lines[-1] if lines else run.returncode}")
        else:
            print(run.stdout.strip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
