"""``visiondrop bench --mode graph``: time to first token at batch 1 with the prefill
captured as one CUDA graph (:mod:`visiondrop.capture`), beside the eager full model.

Variants: ``full`` (eager, the reference), ``full+graph``, ``<method>+graph`` for each
method whose shapes are fixed, and ``ideal+graph`` (the LM-only prefill on B visual
tokens, captured the same way). Figures, median and quartiles of ``repeats`` after
``warmup``:

- ``ttft_ms``: inputs already on the device, one prefill and the first token's argmax;
  interleaved round by round (a graph replays without its handle).
- checks: the largest logit difference between the captured and the eager prefill of
  the same handle (beside the logits' spread), and whether their first 8 greedy tokens
  agree (decode steps after a captured prefill are eager, through the handle).

Prefill + N tokens is not timed here: every handle would have to be active at once to
interleave it, and timed in blocks it drifts with the host (a first run saw decode steps
vary 26-50 ms). Decode after a captured prefill is the eager decode of the main table.

On the CPU the same bookkeeping runs without graphs (the tests), timed with perf_counter.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from ..api import apply
from ..capture import CapturedPrefill
from . import latency
from .latency import BenchConfig, Figure, IdealVariant, _timer, build_model, environment, make_inputs, method_spec


def _graphed(fn, warmup: int, graph: bool):
    """``fn`` (no arguments, static inputs) as a replayable CUDA graph; eager without ``graph``."""
    if not graph:
        return fn
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        out = fn()

    def replay():
        cuda_graph.replay()
        return out

    return replay


def run_captured(config: BenchConfig, model=None, progress: bool = True) -> dict:
    """Every captured variant's figures at batch 1; returns a JSON-able dict."""
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    graph = device.type == "cuda"
    if model is None:
        model = build_model(config.model, config.dtype, config.device, config.attn)
    if type(model).__name__ != "LlavaForConditionalGeneration":
        raise ValueError(f"--config: captured prefills support LLaVA-1.5 models, not {type(model).__name__}")
    inputs = make_inputs(model, 1, config.text_tokens)
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    host_ids = ids.cpu()  # as a processor returns them: the layout check stays on the host
    timed = _timer(device)
    rounds = config.warmup + config.repeats
    ttft: dict[str, callable] = {}
    checks: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    with torch.inference_mode():
        ttft["full"] = lambda: model(**inputs, use_cache=True, logits_to_keep=1)
        for method in tqdm([None, *config.methods], desc="capturing", disable=not progress):
            name = f"{method or 'full'}+graph"
            if method:
                name_, options = method_spec(method)
                handle = apply(model, name_, budget=config.budget, **options)
            else:
                handle = None
            try:
                try:
                    captured = CapturedPrefill(model, ids, pixels, warmup=config.warmup + 1, graph=graph)
                except (ValueError, RuntimeError) as error:  # no fixed shapes, or not capturable
                    skipped[name] = f"{type(error).__name__}: {error}".splitlines()[0]
                    continue
                eager = model(**inputs, use_cache=True, logits_to_keep=1).logits.float()
                eager_tokens = CapturedPrefill(model, ids, pixels, graph=False).generate(host_ids, pixels, 8)
                replayed = captured(host_ids, pixels).logits.float()
                checks[name] = {"max_abs_logit_diff": float((replayed - eager).abs().max()),
                                "logit_std": float(eager.std()),
                                "same_greedy_tokens": bool(torch.equal(
                                    captured.generate(host_ids, pixels, 8), eager_tokens))}
                ttft[name] = lambda c=captured: c.replay(ids, pixels)
            finally:
                if handle is not None:
                    handle.remove()
        if config.ideal:
            ideal = IdealVariant(config.budget)
            ttft["ideal+graph"] = _graphed(lambda: ideal.prefill(model, inputs), config.warmup + 1, graph)

        samples = {name: {"ttft_ms": []} for name in ttft}
        for round_index in tqdm(range(rounds), desc="ttft rounds", disable=not progress):
            for name, prefill in ttft.items():
                ms = timed(lambda p=prefill: p().logits[:, -1].argmax(-1))
                if round_index >= config.warmup:
                    samples[name]["ttft_ms"].append(ms)

    figures = {name: {key: asdict(Figure.of(values)) for key, values in by_key.items()}
               for name, by_key in samples.items()}
    return {"config": asdict(config), "graph": graph, "figures": figures, "checks": checks, "skipped": skipped,
            "environment": environment(device)}


def to_markdown(result: dict) -> str:
    figures = result["figures"]
    full = figures["full"]["ttft_ms"]["median"]
    graph_full = figures.get("full+graph", {}).get("ttft_ms", {}).get("median")
    lines = ["| variant | TTFT b1 (ms) | vs full | vs full+graph | max abs logit diff vs eager (logit std) "
             "| same 8 greedy tokens |", "|---|---|---|---|---|---|"]
    for name, by_key in figures.items():
        t = by_key["ttft_ms"]["median"]
        cells = [name, f"{t:.2f}", f"{full / t:.2f}x", f"{graph_full / t:.2f}x" if graph_full else "-"]
        check = result["checks"].get(name)
        cells += [f"{check['max_abs_logit_diff']:.3g} ({check['logit_std']:.3g})",
                  "yes" if check["same_greedy_tokens"] else "no"] if check else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | not captured: {why} |  |  |  |  |")
    env, config = result["environment"], result["config"]
    mode = "CUDA graphs" if result["graph"] else "no graphs (CPU bookkeeping run)"
    lines += ["", f"{config['model']}, budget {config['budget']}, batch 1, {config['text_tokens']} text tokens, "
              f"{config['dtype']}, {config['attn']}, {mode}; median of {config['repeats']} interleaved repeats "
              f"after {config['warmup']} warm-up; {env.get('gpu', env['device'])}, torch {env['torch']}, "
              f"transformers {env['transformers']}, {env['date']}."]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Horizontal bars of TTFT per variant (median, interquartile range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = result["figures"]
    names = list(figures)
    medians = [figures[n]["ttft_ms"]["median"] for n in names]
    errors = [[m - figures[n]["ttft_ms"]["q1"] for n, m in zip(names, medians)],
              [figures[n]["ttft_ms"]["q3"] - m for n, m in zip(names, medians)]]
    colors = ["#888888" if n.startswith(("full", "ideal")) else "#1f77b4" if n.startswith("visiondrop")
              else "#9ecae1" for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names[::-1], medians[::-1], xerr=[e[::-1] for e in errors], color=colors[::-1], capsize=2)
    ax.set_xlabel("time to first token, batch 1 (ms)")
    config = result["config"]
    ax.set_title(f"{config['model']}, budget {config['budget']}: captured prefills "
                 f"({result['environment'].get('gpu', 'cpu')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(result: dict, out) -> dict:
    return latency.save(result, out, "captured", to_markdown, plot)
