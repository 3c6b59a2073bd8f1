"""The proxy's gates (issue 21): does a small LLaVA-1.5-shaped model behave inside like the
real one in the ways pruning methods depend on? Measured on held-out questions, through the
library's own handles; the same script for shapes-llava (``--proxy 1`` or ``shapes-llava``) and
shapes-llava-2 (``--proxy 2`` or ``shapes-llava-2``), loaded and answered through
:mod:`visiondrop.zoo.proxies`. Thresholds are the issue's; the numbers are reported whether they pass or not.

1. **Image attention drops after the first layers, and a sink forms**: the last prompt token's
   attention share on image tokens (mean over heads and prompts) per layer; passes when the
   deep layers' share (from a quarter of the depth on) is at most a third of the early
   layers' peak, and the first token (or the text before the image) takes at least 30 % there.
2. **FastV at K = 2, R = 50 % costs at most about 1 point** (1.5 allowed for noise).
3. **Deep layers can do without the image; the middle ones cannot**: all image tokens but one
   removed from layer k on; passes when k = 3/4 of the depth costs at most 3 points and k = 1/4
   costs at least 5.
4. **CLS attention concentrates and a few patch tokens are high-norm** (at the feature layer):
   the top 1 % of patches take at least 30 % of CLS attention, and 0.5-10 % of patch tokens
   have a norm above 5 x the median.
5. **Text-guided selection keeps the bottom of the image** (the paper's Figure 3): FastV's kept
   tokens sit lower than a random choice, by at least 3 standard deviations.
6. **Position policy matters little**: ``reindex`` vs ``keep`` moves VisionDrop and FastV at
   B = 128 by at most 2 points.

    python scripts/proxy_gates.py --proxy 2 --model runs/shapes-llava-2 --questions 700 --out docs/proxy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import visiondrop
from visiondrop import Schedule
from visiondrop.zoo.proxies import available_proxies, get_proxy

VERSIONS = {"1": "shapes-llava", "2": "shapes-llava-2"}  # the --proxy numbers of the issue


class Proxy:
    """A model, its held-out items and how it answers them."""

    def __init__(self, name: str, path: str | None, device: str, questions: int) -> None:
        self.spec = get_proxy(name)
        self.model, self.processor = self.spec.load(path, device=device)
        self.items = self.spec.items(questions)
        self.prompt = self.spec.prompt
        self.layers = len(self.model.model.language_model.layers)

    def accuracy(self, method: str | None = None, **options) -> float:
        """Overall held-out accuracy (%) of the full model, or under ``method``."""
        handle = visiondrop.apply(self.model, method, **options) if method else None
        try:
            answers = self.spec.answer(self.model, self.processor, self.items, batch_size=32)
        finally:
            if handle is not None:
                handle.remove()
        return 100 * self.spec.accuracy_by_kind(self.items, answers)["overall"]

    def prompts(self, count: int) -> dict:
        """The first ``count`` items' prompts as one left-padded batch."""
        items = self.items[:count]
        texts = [self.prompt.format(question=item.question.text) for item in items]
        images = [item.scene.pil() for item in items]
        return self.processor(text=texts, images=images, return_tensors="pt", padding=True).to(self.model.device)


class TowerOnly:
    """shapes-llava-2's vision tower alone, from a ``train_shapes_llava2.py --stage vision`` file:
    gate 4 depends on nothing else, so it can be read before the LM is trained."""

    def __init__(self, tower_file: str, device: str, prompts: int) -> None:
        from safetensors.torch import load_file
        from transformers import LlavaForConditionalGeneration

        from visiondrop.zoo.shapes_llava2 import shapes_llava2_config

        self.model = LlavaForConditionalGeneration(shapes_llava2_config()).eval()
        self.model.model.vision_tower.load_state_dict(load_file(tower_file))
        self.model.to(device)
        self.items = get_proxy("shapes-llava-2").items(prompts)


def gate_attention(proxy: Proxy, count: int) -> dict:
    """Gate 1: the last prompt token's attention by layer (eager attention weights)."""
    batch = proxy.prompts(count)
    model, image_id = proxy.model, proxy.model.config.image_token_id
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(**batch, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    image = ids == image_id
    first = mask.long().argmax(1)  # each row's first real token (left padding)
    before = mask & (torch.arange(ids.shape[1])[None] < image.long().argmax(1)[:, None])
    image_share, first_share, before_share = [], [], []
    for weights in attentions:  # (B, heads, L, L)
        last = weights[:, :, -1].mean(1).float()  # the last prompt token's attention, heads averaged
        image_share.append(float((last * image).sum(1).mean()))
        first_share.append(float(last[torch.arange(len(last)), first].mean()))
        before_share.append(float((last * before).sum(1).mean()))
    deep = slice(max(1, proxy.layers // 4), None)
    early_peak = max(image_share[:max(1, proxy.layers // 8) + 2])
    deep_image = float(np.mean(image_share[deep]))
    deep_sink = float(np.mean(before_share[deep]))
    return {"image_share": image_share, "first_token_share": first_share, "text_before_image_share": before_share,
            "early_peak": early_peak, "deep_image_share": deep_image, "deep_sink_share": deep_sink,
            "passed": deep_image <= early_peak / 3 and deep_sink >= 0.3}


def gate_fastv(proxy: Proxy, full: float) -> dict:
    """Gate 2: FastV at K = 2 keeping half of the image tokens."""
    tokens, layer = proxy.model.config.image_seq_length, min(2, proxy.layers - 1)
    budget = round((layer * tokens + (proxy.layers - layer) * tokens / 2) / proxy.layers)  # half kept from K on
    accuracy = proxy.accuracy("fastv", budget=budget, layer=layer)
    return {"accuracy": accuracy, "cost": full - accuracy, "passed": full - accuracy <= 1.5}


def gate_knockout(proxy: Proxy, full: float) -> dict:
    """Gate 3: every image token but one removed from layer k on."""
    out = {}
    for share in (1 / 16, 1 / 4, 1 / 2, 3 / 4):
        layer = max(1, round(share * proxy.layers))
        out[str(layer)] = proxy.accuracy("visiondrop", schedule=Schedule(llm=((1, 0),), layers=(layer,)))
    quarter, three_quarters = str(max(1, round(proxy.layers / 4))), str(max(1, round(3 * proxy.layers / 4)))
    return {"accuracy_by_layer": out, "full": full, "cost_from_3/4": full - out[three_quarters],
            "cost_from_1/4": full - out[quarter],
            "passed": full - out[three_quarters] <= 3 and full - out[quarter] >= 5}


def gate_cls(proxy: Proxy, count: int) -> dict:
    """Gate 4: CLS attention and patch-token norms at the feature layer."""
    from visiondrop.zoo.shapes_llava import pixel_values

    tower = proxy.model.model.vision_tower
    images = torch.from_numpy(np.stack([item.scene.image for item in proxy.items[:count]]))
    layer_index = proxy.model.config.vision_feature_layer
    with torch.no_grad():
        out = tower(pixel_values(images).to(proxy.model.device), output_hidden_states=True, output_attentions=False)
        states = out.hidden_states[layer_index][:, 1:].float()  # the features LLaVA reads, [CLS] dropped
        layer = tower.vision_model.encoder.layers[layer_index] if hasattr(tower, "vision_model") else \
            tower.encoder.layers[layer_index]
        x = layer.layer_norm1(out.hidden_states[layer_index - 1])
        attn = layer.self_attn
        heads = attn.num_heads
        q = attn.q_proj(x).view(len(x), -1, heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(len(x), -1, heads, attn.head_dim).transpose(1, 2)
        cls = torch.softmax((q[:, :, :1] @ k.transpose(-1, -2)) * attn.scale, -1)[:, :, 0, 1:].mean(1)  # (B, 576)
    top = max(1, cls.shape[1] // 100)
    top_share = float(cls.topk(top, dim=1).values.sum(1).div(cls.sum(1)).mean())
    norms = states.norm(dim=-1)
    high = float((norms > 5 * norms.median(dim=1, keepdim=True).values).float().mean())
    return {"cls_top1pct_share": top_share, "high_norm_fraction": high, "max_norm_over_median":
            float((norms.max(1).values / norms.median(1).values).mean()),
            "passed": top_share >= 0.3 and 0.005 <= high <= 0.10}


def gate_bias(proxy: Proxy, count: int) -> dict:
    """Gate 5: where FastV's kept tokens sit in the grid (paper, Figure 3)."""
    from visiondrop.analysis.bias import position_stats, uniform_reference

    side = int(proxy.model.config.image_seq_length ** 0.5)
    batch = proxy.prompts(count)
    with torch.no_grad(), visiondrop.apply(proxy.model, "fastv", budget=128) as handle:
        proxy.model(**batch)
    kept = [segment.output_patches[:segment.dominant.numel()] for segment in handle.report.stages[0].segments]
    stats = position_stats(torch.cat(kept), side, side)
    reference = uniform_reference(side, side, kept=[k.numel() for k in kept])
    z = (stats["mean_row"] - reference["mean_row"]) / reference["mean_row_sd"]
    return {"mean_row": stats["mean_row"], "uniform_mean_row": reference["mean_row"], "z": z, "passed": z >= 3}


def gate_positions(proxy: Proxy) -> dict:
    """Gate 6: the two position policies at B = 128."""
    out = {}
    for method in ("visiondrop", "fastv"):
        reindex = proxy.accuracy(method, budget=128, positions="reindex")
        keep = proxy.accuracy(method, budget=128, positions="keep")
        out[method] = {"reindex": reindex, "keep": keep, "difference": keep - reindex}
    out["passed"] = all(abs(out[m]["difference"]) <= 2 for m in ("visiondrop", "fastv"))
    return out


def to_markdown(result: dict) -> str:
    g = result["gates"]
    rows = [
        ("1 image attention drops, sink forms",
         f"image share early peak {g['1']['early_peak']:.2f}, deep {g['1']['deep_image_share']:.2f}; text before the "
         f"image in deep layers {g['1']['deep_sink_share']:.2f}", "deep <= peak / 3; sink >= 0.30"),
        ("2 FastV K=2, R=50%", f"costs {g['2']['cost']:.1f} points", "cost <= 1.5"),
        ("3 knockout", f"accuracy change, image gone from 1/4 of the depth: {-g['3']['cost_from_1/4']:+.1f}; "
         f"from 3/4: {-g['3']['cost_from_3/4']:+.1f}", "3/4: cost <= 3; 1/4: cost >= 5"),
        ("4 CLS concentration, high-norm tokens", f"top 1% share {g['4']['cls_top1pct_share']:.2f}; high-norm "
         f"{100 * g['4']['high_norm_fraction']:.1f}% (max/median {g['4']['max_norm_over_median']:.1f})",
         ">= 0.30; 0.5-10%"),
        ("5 text-guided bottom bias", f"FastV mean row {g['5']['mean_row']:.3f} (z {g['5']['z']:.1f})", "z >= 3"),
        ("6 reindex vs keep", ", ".join(f"{m} {g['6'][m]['difference']:+.1f}" for m in ("visiondrop", "fastv")),
         "abs(difference) <= 2"),
    ]
    meta = result["metadata"]
    lines = [f"Proxy gates: {meta['model']} ({meta['questions']} held-out questions, full model "
             f"{result['full_accuracy']:.1f}%); {meta['device']}, {meta['date']}, `{meta['command']}`", "",
             "| gate | measured | threshold | passed |", "|---|---|---|---|"]
    lines += [f"| {name} | {measured} | {threshold} | {'yes' if g[name[0]]['passed'] else '**no**'} |"
              for name, measured, threshold in rows]
    return "\n".join(lines)


def proxy_name(value: str) -> str:
    """``--proxy``: 1, 2 or a registry name."""
    name = VERSIONS.get(value, value)
    if name not in available_proxies():
        raise argparse.ArgumentTypeError(f"expected 1, 2 or one of {', '.join(available_proxies())}, got {value!r}")
    return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", type=proxy_name, default="shapes-llava-2",
                        help="1 or shapes-llava, 2 or shapes-llava-2 (default)")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the shipped one)")
    parser.add_argument("--questions", type=int, default=350, help="held-out questions for the accuracy gates")
    parser.add_argument("--prompts", type=int, default=32, help="prompts for the attention gates")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="proxy-gates")
    parser.add_argument("--tower", default=None, metavar="FILE",
                        help="gate 4 alone, on a shapes-llava-2 tower saved by train_shapes_llava2.py --stage vision")
    args = parser.parse_args(argv)
    command = "python scripts/proxy_gates.py " + " ".join(argv or sys.argv[1:])
    start = time.time()
    if args.tower is not None:
        return tower_gate(args, command)
    proxy = Proxy(args.proxy, args.model, args.device, args.questions)
    full = proxy.accuracy()
    gates = {"1": gate_attention(proxy, args.prompts), "2": gate_fastv(proxy, full),
             "3": gate_knockout(proxy, full), "4": gate_cls(proxy, args.prompts), "5": gate_bias(proxy, args.prompts),
             "6": gate_positions(proxy)}
    result = {"metadata": {"model": args.proxy + (f" ({args.model})" if args.model else ""),
                           "questions": len(proxy.items), "prompts": args.prompts, "device": str(args.device),
                           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - start, 1),
                           "versions": {"torch": torch.__version__,
                                        "transformers": __import__("transformers").__version__},
                           "command": command},
              "full_accuracy": full, "gates": gates}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"gates-{args.proxy}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(to_markdown(result) + "\n")
    print(to_markdown(result))
    return 0


def tower_gate(args, command: str) -> int:
    if not Path(args.tower).is_file():
        raise SystemExit(f"proxy_gates.py: --tower: no such file {args.tower!r}")
    if args.proxy != "shapes-llava-2":
        raise SystemExit("proxy_gates.py: --tower reads a shapes-llava-2 tower; drop --proxy or give 2")
    gate = gate_cls(TowerOnly(args.tower, args.device, args.prompts), args.prompts)
    result = {"metadata": {"tower": args.tower, "prompts": args.prompts, "device": str(args.device),
                           "date": time.strftime("%Y-%m-%d"), "command": command,
                           "versions": {"torch": torch.__version__,
                                        "transformers": __import__("transformers").__version__}},
              "gates": {"4": gate}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gate4-{Path(args.tower).stem}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"gate 4 on {args.tower}: CLS top 1% share {gate['cls_top1pct_share']:.2f} (>= 0.30), high-norm "
          f"{100 * gate['high_norm_fraction']:.1f}% (0.5-10%; max/median {gate['max_norm_over_median']:.1f}): "
          f"{'passed' if gate['passed'] else 'failed'} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
