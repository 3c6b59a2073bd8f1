"""``visiondrop bench --mode generate``: what the user's own call costs.

Each variant (``full``, every method at the budget through ``visiondrop.apply``, and
``ideal``: the LM fed only B visual tokens per image) runs ``model.generate(**inputs,
max_new_tokens=N)`` unchanged, timed by the wall clock around the call (the device
synchronized before and after), for each batch of ``generate_batches`` and each N of
``generate_tokens``; rounds interleave the variants (A B C A B C ...) so drift hits all
alike. Figures: median and quartiles of ``repeats`` after ``warmup``.

Beside the times, the work a batch-1 prefill issues, counted by the profiler: top-level
operations and kernel launches in all, and those inside the library's hook bodies
(``@machinery``, :mod:`visiondrop.timing`), per hook: the count the next change to a
stage is judged by.

With ``cuda_graphs``, the same calls again with ``apply(..., cuda_graphs=True)``:
``full+graphs`` (method ``none``: the unpruned model under the same graphs) and
``<method>+graphs``. Their handles stay applied for the whole run, so that their graphs
survive between rounds, and are detached while another variant runs. The warm-up rounds
capture (a layout's first prefill runs eagerly, its second is captured): give
``warmup >= 2``.

On the CPU the same bookkeeping runs (the tests; graphs in ``"frozen"`` mode); no
timing is asserted there.
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict

import torch

from ..api import apply
from ..models.guards import detached
from .latency import BenchConfig, Figure, Variant, build_model, checked_variants, environment, make_inputs, method_spec

#: the host-side calls that start device work, as the profiler names them
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaMemcpyAsync",
            "cudaMemsetAsync", "cudaGraphLaunch")


def _wall_ms(device: torch.device, fn) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - begin) * 1e3


def case_key(batch: int, tokens: int) -> str:
    return f"generate_ms@b{batch}_t{tokens}"


def case_label(key: str) -> str:
    batch, tokens = key.removeprefix("generate_ms@b").split("_t")
    return f"b{batch}, {tokens} new"


class GraphVariant(Variant):
    """``method`` with ``cuda_graphs`` (``"frozen"`` off CUDA). One handle for the whole
    run: applied at the first activation, detached (:func:`~visiondrop.models.guards.detached`)
    while other variants run, removed by :meth:`close`."""

    def __init__(self, name: str, method: str, budget: int | None, options: dict | None = None) -> None:
        super().__init__(f"{name}+graphs", method, budget, options)
        self._detached = None

    def activate(self, model) -> None:
        if self.handle is None:
            mode = True if next(model.parameters()).device.type == "cuda" else "frozen"
            self.handle = apply(model, self.method, budget=self.budget, cuda_graphs=mode, **self.options)
        elif self._detached is not None:
            self._detached.__exit__(None, None, None)
            self._detached = None

    def deactivate(self) -> None:
        if self.handle is not None and self._detached is None:
            self._detached = detached(self.handle._hooks)
            self._detached.__enter__()

    def close(self) -> None:
        if self.handle is not None:
            self.activate(self.handle.model)
            self.handle.remove()
            self.handle = None


def graph_variants(config: BenchConfig, model) -> list[GraphVariant]:
    """``full+graphs`` and each method with fixed shapes ``+graphs``, each checked by one
    activation (a method that cannot be captured is left out, as apply refuses it)."""
    from ..methods import get_method

    variants = [GraphVariant("full", "none", None)]
    for spec in config.methods:
        method, options = method_spec(spec)
        if get_method(method).fixed_shapes:
            variants.append(GraphVariant(spec, method, config.budget, options))
    for variant in variants:
        variant.activate(model)
        variant.deactivate()
    return variants


def run_generate(config: BenchConfig, model=None, progress: bool = True) -> dict:
    """Every variant's ``generate()`` time at each batch and token count, interleaved, and
    its batch-1 prefill's operation counts; returns a JSON-able dict."""
    device = torch.device(config.device)
    if model is None:
        model = build_model(config.model, config.dtype, config.device, config.attn)
    variants = checked_variants(config, model)
    graphed = graph_variants(config, model) if config.cuda_graphs else []
    try:
        return _run(config, model, variants + graphed, device, progress)
    finally:
        for variant in graphed:
            variant.close()


def _run(config: BenchConfig, model, variants: list, device: torch.device, progress: bool) -> dict:
    from tqdm.auto import tqdm

    inputs = {b: make_inputs(model, b, config.text_tokens, config.image_size) for b in config.generate_batches}
    samples: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    cases = [(b, n) for b in config.generate_batches for n in config.generate_tokens]
    rounds = config.warmup + config.repeats
    with torch.inference_mode():
        for round_index in tqdm(range(rounds), desc=f"generate {config.model} b{config.budget}",
                                disable=not progress):
            for variant in variants:
                variant.activate(model)
                try:
                    for batch, tokens in cases:
                        ms = _wall_ms(device, lambda v=variant, b=batch, n=tokens: v.generate(model, inputs[b], n))
                        if round_index >= config.warmup:
                            samples[variant.name].setdefault(case_key(batch, tokens), []).append(ms)
                finally:
                    variant.deactivate()
        one = inputs.get(1) or make_inputs(model, 1, config.text_tokens, config.image_size)
        operations = {v.name: _operations(v, model, one, device) for v in variants}
    figures = {name: {key: asdict(Figure.of(values)) for key, values in by_key.items()}
               for name, by_key in samples.items()}
    # how often each graph variant captured and replayed: every timed call should replay
    graphs = {v.name: {"captures": v.handle.graphs.captures, "replays": v.handle.graphs.replays}
              for v in variants if isinstance(v, GraphVariant)}
    return {"config": asdict(config), "figures": figures, "operations": operations, "graphs": graphs,
            "environment": environment(device)}


def _operations(variant, model, inputs, device: torch.device) -> dict:
    """Top-level operations and launches of one batch-1 prefill (after untimed runs:
    a graph variant's layout is captured by then), in all and inside each
    ``visiondrop::`` hook range."""
    from torch.profiler import ProfilerActivity, profile

    from ..timing import measure_machinery

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    variant.activate(model)
    try:
        for _ in range(3):
            variant.prefill(model, inputs)
        with profile(activities=activities) as prof, measure_machinery():  # names the hook ranges
            variant.prefill(model, inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        variant.deactivate()
    return count_operations(prof.events())


def count_operations(events) -> dict:
    """``ops`` (aten operations not called by another), ``launches`` (calls that start
    device work) and, per ``visiondrop::`` range, the same counted inside it."""
    def hook_range(event):
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("visiondrop::"):
            parent = parent.cpu_parent
        return None if parent is None else parent.name.removeprefix("visiondrop::")

    counts = {"ops": 0, "launches": 0}
    per_hook: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for event in events:
        if event.name.startswith("aten::"):
            parent = event.cpu_parent
            if parent is not None and parent.name.startswith("aten::"):
                continue
            kind = "ops"
        elif event.name in LAUNCHES:
            kind = "launches"
        else:
            continue
        counts[kind] += 1
        hook = hook_range(event)
        if hook is not None:
            per_hook[hook][kind] += 1
    counts["machinery_ops"] = sum(c["ops"] for c in per_hook.values())
    counts["machinery_launches"] = sum(c["launches"] for c in per_hook.values())
    counts["per_hook"] = {name: dict(c) for name, c in sorted(per_hook.items())}
    return counts


# ------------------------------------------------------------------------ output
def to_markdown(result: dict) -> str:
    """Times (ms, speed-up over full), then the batch-1 prefill's operation counts."""
    figures = result["figures"]
    keys = list(figures["full"])
    header = ["variant", *map(case_label, keys), "ops b1 (machinery)", "launches b1 (machinery)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_key in figures.items():
        cells = [name]
        for key in keys:
            value, full = by_key[key]["median"], figures["full"][key]["median"]
            cell = f"{value:.1f}" if name == "full" else f"{value:.1f} ({full / value:.2f}x)"
            if name.endswith("+graphs") and name != "full+graphs" and "full+graphs" in figures:
                cell = cell[:-1] + f"; {figures['full+graphs'][key]['median'] / value:.2f}x graphed full)"
            cells.append(cell)
        ops = result["operations"][name]
        cells.append(f"{ops['ops']} ({ops['machinery_ops']})")
        cells.append(f"{ops['launches']} ({ops['machinery_launches']})" if ops["launches"] else "n/a (CPU)")
        lines.append("| " + " | ".join(cells) + " |")
    env, config = result["environment"], result["config"]
    graphed = ("" if "full+graphs" not in figures else " (eager); graphed full: over `full+graphs`, the unpruned "
               "model under the same graphs (method `none`)")
    lines += ["", f"`model.generate(**inputs, max_new_tokens=N)` wall clock, ms; {config['model']}, budget "
              f"{config['budget']}, {config['text_tokens']} text tokens, {config['dtype']}, {config['attn']}; median "
              f"of {config['repeats']} interleaved repeats after {config['warmup']} warm-up; "
              f"{env.get('gpu', env['device'])}, torch {env['torch']}, transformers {env['transformers']}, "
              f"{env['date']}. (x): speed-up over full{graphed}. ops / launches: one batch-1 prefill, in all "
              "(inside the library's hooks)."]
    per_hook = {name: ops["per_hook"] for name, ops in result["operations"].items() if ops["per_hook"]}
    if per_hook:
        lines += ["", "| variant | hook | ops | launches |", "|---|---|---|---|"]
        for name, hooks in per_hook.items():
            for hook, counts in hooks.items():
                lines.append(f"| {name} | `{hook}` | {counts.get('ops', 0)} | {counts.get('launches', 0)} |")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """One panel per case: each variant's speed-up over ``full`` (interquartile bars)."""
    from . import latency

    latency.plot(result, path, label=lambda key, _: (case_label(key), False), what="model.generate()")


def save(result: dict, out) -> dict:
    from . import latency

    return latency.save(result, out, "generate", to_markdown, plot)
