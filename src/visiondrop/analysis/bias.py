"""Positional bias of pruning: where in the patch grid the kept tokens sit.

The paper's "Rethinking Text-guided Visual Token Reduction" section (*Causal*
misalignment, Figure 3) argues that text-guided scoring in shallow LLM layers keeps
tokens near the end of the visual sequence: the last instruction token attends most
to the visual tokens just before it, which in LLaVA's row-major sequence are the
bottom rows of the image. This module measures that claim on any LLaVA-1.5 model
through the handle's :class:`~visiondrop.report.PruningReport`.

Statistics (:func:`position_stats`) of a set of kept patch ids on an ``R x C`` grid:

* ``mean_row``: mean of ``row / (R - 1)`` (0 = top row, 1 = bottom row);
* ``mean_distance``: mean of ``(N - 1 - pos) / (N - 1)``, the normalised distance
  from the end of the visual sequence of ``N`` tokens (0 = the last token);
* ``row_histogram``: the share of kept tokens in each grid row (sums to 1).

[CLS] (patch id ``-1``) and any other negative id is no grid position and is left out.
:func:`uniform_reference` gives the same quantities for a uniformly random subset,
exactly (mean row 0.5, mean distance 0.5 when ``N = R x C``, a flat histogram), and
the exact standard deviation of the means for the subset sizes actually kept, so a
deviation can be read as a z-score.

:func:`measure_bias` runs every method on every sample (one forward pass per batch)
and aggregates per method and per stage: the stage's *input* tokens (the reference a
random choice among them would match), its *dominant* tokens (what it kept) and its
*contextual* targets (where merged tokens live). :func:`save` writes ``bias.json``,
``bias.md`` (:func:`to_markdown`) and ``bias.png`` (:func:`plot`); ``visiondrop bias``
(:func:`add_parser`, :func:`main`) is the command line.

Result (``format`` ``"visiondrop-bias"``, ``version`` 1)::

    {"format", "version",
     "metadata": {"model", "dataset", "samples", "budget", "grid": [R, C],
                  "sequence_length", "template", "batch_size", "device", "dtype",
                  "seconds", "versions" {...}, "command"},
     "reference": {"mean_row", "mean_distance", "row_histogram"},
     "methods": {name: {"text_guided": bool, "schedule": str | None,
                        "infeasible": str | None,
                        "stages": {"encoder" | "llm@<layer>": {
                            "name", "layer", "samples",
                            "dominant_tokens", "contextual_tokens" (the report's counts per image),
                            "cls_kept" (samples whose [CLS] stayed dominant),
                            "draws" (kept counts of the independent draws the reference_sd assumes),
                            "input" | "dominant" | "contextual": {"count", "per_sample", "mean_row",
                                "mean_distance", "row_histogram", "sample_mean_row_sd"},
                            "reference_sd": {"mean_row", "mean_distance"} (uniform over the grid),
                            "input_sd": {"mean_row"} (uniform among the stage's input)}}}}}
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FORMAT = "visiondrop-bias"
VERSION = 1
DEFAULT_METHODS = ("visiondrop", "fastv", "pdrop", "pdrop-visual", "sparsevlm", "visionzip", "random")
# Methods whose scores come from the instruction (the paper's "text-guided" family);
# pdrop-visual keeps PyramidDrop's schedule with visual-only scores, the controlled pair.
TEXT_GUIDED = frozenset({"fastv", "pdrop", "sparsevlm"})
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "bias.json", "bias.md", "bias.png"
PARTS = ("input", "dominant", "contextual")


def _inference_mode(function):
    """``torch.inference_mode()`` as a decorator that imports torch only when called (the
    command line's parser imports this module)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return function(*args, **kwargs)

    return wrapper


class BiasConfigError(ValueError):
    """A bad argument of :func:`measure_bias`, found before any compute; ``parameter``
    names it (``methods``, ``budget``, ``samples``, ``batch_size``, ``model``, ``template``)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


# ---------------------------------------------------------------- statistics


def _check_grid(grid_rows: int, grid_cols: int, sequence_length: int | None) -> int:
    """The sequence length (default ``R x C``), after checking the grid."""
    for name, value in (("grid_rows", grid_rows), ("grid_cols", grid_cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be an int >= 1, got {value!r}")
    cells = grid_rows * grid_cols
    length = cells if sequence_length is None else sequence_length
    if isinstance(length, bool) or not isinstance(length, int) or length < cells:
        raise ValueError(f"sequence_length: must be an int >= grid_rows x grid_cols = {cells}, got {length!r}")
    return length


def position_stats(kept_patches: Sequence[int] | torch.Tensor, grid_rows: int, grid_cols: int,
                   sequence_length: int | None = None) -> dict:
    """Where the patch ids ``kept_patches`` (row-major over a ``grid_rows x grid_cols``
    grid) sit; negative ids ([CLS]) are left out. Paper: "Rethinking", *Causal*.

    Returns ``{"count", "mean_row", "mean_distance", "row_histogram"}``: ``mean_row`` the
    mean of ``row / (rows - 1)`` (0 top, 1 bottom; 0 on a one-row grid), ``mean_distance``
    the mean of ``(N - 1 - id) / (N - 1)`` with ``N = sequence_length`` (default the grid's
    size; 0 = the visual sequence's last token), ``row_histogram`` the share of the kept
    tokens in each row. With nothing kept the means are None and the histogram all 0.
    """
    import torch
    length = _check_grid(grid_rows, grid_cols, sequence_length)
    ids = torch.as_tensor(kept_patches, dtype=torch.long).reshape(-1)
    ids = ids[ids >= 0]
    cells = grid_rows * grid_cols
    if ids.numel() and int(ids.max()) >= cells:
        raise ValueError(f"kept_patches: patch id {int(ids.max())} is outside a {grid_rows}x{grid_cols} grid "
                         f"(ids 0..{cells - 1})")
    count = int(ids.numel())
    if count == 0:
        return {"count": 0, "mean_row": None, "mean_distance": None, "row_histogram": [0.0] * grid_rows}
    rows = ids // grid_cols
    row_scale = max(grid_rows - 1, 1)  # a one-row grid has every token in row 0
    end_scale = max(length - 1, 1)
    histogram = torch.bincount(rows, minlength=grid_rows).double() / count
    return {
        "count": count,
        "mean_row": rows.double().mean().item() / row_scale,
        "mean_distance": (length - 1 - ids).double().mean().item() / end_scale,
        "row_histogram": histogram.tolist(),
    }


def uniform_reference(grid_rows: int, grid_cols: int, sequence_length: int | None = None,
                      kept: int | Sequence[int] | None = None) -> dict:
    """The expectation of :func:`position_stats` for a uniformly random subset of the
    grid's patches, computed in closed form (no sampling).

    Every cell is equally likely to be kept, so the expected histogram is flat
    (``1 / rows``), the expected mean row is the grid's mean row (0.5) and the expected
    mean distance is ``(N - 1 - (R*C - 1) / 2) / (N - 1)`` (0.5 when ``N = R*C``).

    With ``kept`` (the subset size, or one size per sample for a pooled mean) the result
    also has ``mean_row_sd`` and ``mean_distance_sd``: the exact standard deviation of
    the pooled mean when each sample keeps a uniformly random ``k_i``-subset without
    replacement, ``sqrt(sum_i k_i (M - k_i) / (M - 1)) * sigma / sum_i k_i`` with
    ``M = R*C`` and ``sigma`` the quantity's standard deviation over all cells.
    """
    length = _check_grid(grid_rows, grid_cols, sequence_length)
    cells = grid_rows * grid_cols
    row_scale = max(grid_rows - 1, 1)
    end_scale = max(length - 1, 1)
    reference = {
        "mean_row": 0.5 if grid_rows > 1 else 0.0,
        "mean_distance": (length - 1 - (cells - 1) / 2) / end_scale,
        "row_histogram": [1.0 / grid_rows] * grid_rows,
    }
    if kept is None:
        return reference
    sizes = [kept] if isinstance(kept, int) else list(kept)
    if not sizes or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= cells for k in sizes):
        raise ValueError(f"kept: subset sizes must be ints in [1, {cells}], got {kept!r}")
    # Population variances over the M cells: rows are uniform on 0..R-1 (C cells each),
    # ids uniform on 0..M-1; both discrete uniforms with variance (n^2 - 1) / 12.
    row_var = (grid_rows ** 2 - 1) / 12 / row_scale ** 2
    id_var = (cells ** 2 - 1) / 12 / end_scale ** 2
    # Each sample's sum of k_i draws without replacement has variance k_i (M - k_i) / (M - 1) sigma^2;
    # samples are independent, and the pooled mean divides the total by sum k_i.
    spread = sum(k * (cells - k) for k in sizes) / (cells - 1) if cells > 1 else 0.0
    total = sum(sizes)
    reference["mean_row_sd"] = math.sqrt(spread * row_var) / total
    reference["mean_distance_sd"] = math.sqrt(spread * id_var) / total
    return reference


def _pooled(per_sample: list[torch.Tensor], rows: int, cols: int, length: int) -> dict:
    """position_stats of all samples' ids together, plus how the per-sample mean rows spread."""
    import torch
    stats = position_stats(torch.cat(per_sample) if per_sample else [], rows, cols, length)
    means = [s["mean_row"] for s in (position_stats(ids, rows, cols, length) for ids in per_sample)
             if s["mean_row"] is not None]
    stats["per_sample"] = stats["count"] / max(len(per_sample), 1)
    stats["sample_mean_row_sd"] = float(torch.tensor(means).std().item()) if len(means) > 1 else None
    return stats


# ---------------------------------------------------------------- measuring


def _independent_draws(kept: list[torch.Tensor], inputs: list[torch.Tensor],
                       images: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(kept patch ids, input patch ids) of the independent draws among the samples, for
    the standard deviations. Conservative: samples of one image count once (their
    selections are correlated, and the average of correlated draws varies no more than
    one draw), and images given the identical selection count once (a choice that
    ignores the image, such as ``random``'s fixed seed, is a single draw however many
    images). Draws that kept no patch are left out."""
    first: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for ids, given, image in zip(kept, inputs, images):
        first.setdefault(image, (ids[ids >= 0], given[given >= 0]))
    distinct = {tuple(sorted(ids.tolist())): (ids, given) for ids, given in first.values() if ids.numel()}
    return list(distinct.values())


def _input_sd(draws: list[tuple[torch.Tensor, torch.Tensor]], grid_rows: int, grid_cols: int) -> float | None:
    """Standard deviation of the pooled kept mean row if each draw had kept a uniformly
    random subset of the same size *of its stage's input*: the fair null for a stage
    after another (whose input is already a selection). Exact per draw, as in
    :func:`uniform_reference`, with the input's own spread of rows."""
    total = sum(ids.numel() for ids, _ in draws)
    if not total:
        return None
    scale = max(grid_rows - 1, 1)
    variance = 0.0
    for ids, given in draws:
        k, n = ids.numel(), given.numel()
        if n > 1:
            rows = (given // grid_cols).double() / scale
            variance += k * (n - k) / (n - 1) * rows.var(unbiased=False).item()
    return math.sqrt(variance) / total


def _stage_key(name: str, layer: int | None) -> str:
    return "encoder" if layer is None else f"{name}@{layer}"


def _stage_order(key: str) -> tuple[int, int]:
    """Encoder first, then LLM stages by layer."""
    return (0, 0) if key == "encoder" else (1, int(key.rpartition("@")[2]))


def _grid_of(model) -> tuple[int, int]:
    """The patch grid of a LLaVA-1.5 model (one square grid per image, row-major tokens)."""
    if type(model).__name__ != "LlavaForConditionalGeneration":
        raise BiasConfigError("model", f"{type(model).__name__} is not supported: positions are read on LLaVA-1.5's "
                              "single patch grid (LlavaForConditionalGeneration)")
    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size
    return side, side


def _check_arguments(model, samples, methods, budget, batch_size, template) -> list[str]:
    """Everything checked before any forward pass; returns the method names."""
    import visiondrop
    from visiondrop.api import _HANDLE_ATTR

    from ..eval.harness import TEMPLATES

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = list(methods)
    if not names:
        raise BiasConfigError("methods", "give at least one method")
    known = visiondrop.available_methods()
    unknown = [m for m in names if m not in known]
    if unknown:
        raise BiasConfigError("methods", f"unknown {unknown}; available: {', '.join(sorted(known))}")
    if len(set(names)) != len(names):
        raise BiasConfigError("methods", f"a method is listed twice: {names}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise BiasConfigError("budget", f"must be an int >= 1, got {budget!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BiasConfigError("batch_size", f"must be an int >= 1, got {batch_size!r}")
    if template not in TEMPLATES:
        raise BiasConfigError("template", f"one of {sorted(TEMPLATES)}, got {template!r}")
    if not samples:
        raise BiasConfigError("samples", "no samples")
    without = [s.id for s in samples if s.image is None]
    if without:
        raise BiasConfigError("samples", f"sample {without[0]!r} has no image; positions need one image per sample")
    existing = getattr(model, _HANDLE_ATTR, None)
    if existing is not None and existing.active:
        raise RuntimeError("the model has an active visiondrop handle; remove it first")
    return names


def _plan_or_infeasible(model, name: str, budget: int) -> tuple[str | None, str | None]:
    """(schedule text, None), or (None, why) for a budget this method cannot reach here."""
    import visiondrop
    from visiondrop.schedule import BudgetInfeasible

    try:
        return str(visiondrop.plan(model, name, budget=budget)), None
    except BudgetInfeasible as error:
        return None, str(error)
    except ValueError as error:  # e.g. a budget above the image's tokens
        raise BiasConfigError("budget", f"method {name!r} at budget {budget}: {error}") from None


def _batches(model, processor, samples, template: str, batch_size: int):
    """Processor batches of ``samples`` (left padding, so every row's question ends last)."""
    from ..eval.harness import prompt_text
    from ..eval.prompts import mean_background, pad_to_square

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    processor.tokenizer.padding_side = "left"
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        # LLaVA-1.5's evaluation pads to a square first (a square image is unchanged).
        images = [pad_to_square(s.image(), mean_background(mean)) for s in chunk]
        # Which samples share an image (ShapesVQA asks six questions per scene): they are no independent draws.
        keys = [hashlib.sha1(image.tobytes()).hexdigest() for image in images]
        texts = [prompt_text(processor, s, template) for s in chunk]
        batch = processor(images=images, text=texts, padding=True, return_tensors="pt").to(device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        yield start, keys, batch


def _collect(report, start: int, keys: list[str], store: dict) -> None:
    """Append this batch's per-sample patch ids (and image keys) to ``store[stage key]``."""
    for stage in report.stages:
        entry = store.setdefault(_stage_key(stage.name, stage.layer), {
            "name": stage.name, "layer": stage.layer, "dominant_tokens": stage.dominant,
            "contextual_tokens": stage.contextual, "cls_kept": 0, "ids": {part: [] for part in PARTS},
            "images": []})
        entry["images"] += keys
        for row in range(len(keys)):
            segments = stage.rows(row)
            if len(segments) != 1:
                raise RuntimeError(f"sample {start + row}: {len(segments)} image segments at stage "
                                   f"{_stage_key(stage.name, stage.layer)}; one image per sample is expected")
            segment = segments[0]
            dominant = segment.output_patches[:segment.dominant.numel()].cpu()
            entry["cls_kept"] += int((dominant < 0).sum())
            entry["ids"]["input"].append(segment.input_patches.cpu())
            entry["ids"]["dominant"].append(dominant)
            entry["ids"]["contextual"].append(segment.output_patches[segment.dominant.numel():].cpu())


@_inference_mode
def measure_bias(model, processor, samples=None, methods: Sequence[str] | str = DEFAULT_METHODS, budget: int = 64,
                 *, batch_size: int = 8, template: str = "plain", limit: int | None = None,
                 model_name: str = "shapes-llava", dataset: str = "shapes", command: str = "",
                 progress: bool = False) -> dict:
    """Where each method's kept tokens sit, per stage, over ``samples``.

    Args:
        model, processor: a LLaVA-1.5 model (``LlavaForConditionalGeneration``) and its
            processor; no pruning handle may be active.
        samples: :class:`~visiondrop.eval.base.Sample` s with an image each (e.g.
            ``load_dataset("shapes").samples()``); None: the held-out ShapesVQA questions.
        methods: registered method names (or a comma list).
        budget: visual tokens per image averaged over the LLM's layers; a method that
            cannot reach it on this model is recorded as ``infeasible``, not run.
        batch_size: samples per forward pass. template: the harness's prompt format
            (``plain`` for shapes-llava, ``llava_v1`` for LLaVA-1.5 checkpoints).
        limit: only the first ``limit`` samples.

    Returns the result dict described in the module docstring. Paper: "Rethinking
    Text-guided Visual Token Reduction", *Causal* misalignment (Figure 3).

    Raises:
        BiasConfigError: (a ValueError) naming the bad argument, before any forward pass.
    """
    import visiondrop

    from ..eval.datasets import load_dataset

    if samples is None:
        samples = load_dataset("shapes").samples()
    samples = list(samples)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BiasConfigError("limit", f"must be an int >= 1, got {limit!r}")
        samples = samples[:limit]
    names = _check_arguments(model, samples, methods, budget, batch_size, template)
    grid_rows, grid_cols = _grid_of(model)
    length = grid_rows * grid_cols  # LLaVA-1.5 feeds the LLM exactly the grid, row-major
    plans = {name: _plan_or_infeasible(model, name, budget) for name in names}
    if all(schedule is None for schedule, _ in plans.values()):
        raise BiasConfigError("budget", f"no method can reach budget {budget} on this model: "
                              f"{next(iter(plans.values()))[1]}")

    began = time.perf_counter()
    results: dict[str, dict] = {}
    for name in names:
        schedule, infeasible = plans[name]
        record = {"text_guided": name in TEXT_GUIDED, "schedule": schedule, "infeasible": infeasible, "stages": {}}
        results[name] = record
        if infeasible is not None:
            continue
        store: dict[str, dict] = {}
        handle = visiondrop.apply(model, name, budget=budget)
        try:
            batches = _batches(model, processor, samples, template, batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, total=-(-len(samples) // batch_size), desc=name, leave=False, unit="batch")
            for start, keys, batch in batches:
                model(**batch, logits_to_keep=1)  # the prefill is all the report needs
                _collect(handle.report, start, keys, store)
        finally:
            handle.remove()
        for key in sorted(store, key=_stage_order):
            entry = store[key]
            ids, images = entry.pop("ids"), entry.pop("images")
            for part in PARTS:
                entry[part] = _pooled(ids[part], grid_rows, grid_cols, length)
            entry["samples"] = len(ids["dominant"])
            draws = _independent_draws(ids["dominant"], ids["input"], images)
            entry["draws"] = sizes = [ids.numel() for ids, _ in draws]
            # The noise a uniformly random choice of the same sizes from the whole grid would show ...
            spread = uniform_reference(grid_rows, grid_cols, length, sizes) if sizes else {}
            entry["reference_sd"] = {"mean_row": spread.get("mean_row_sd"),
                                     "mean_distance": spread.get("mean_distance_sd")}
            # ... and from the stage's own input: a later stage can only choose among what is left.
            entry["input_sd"] = {"mean_row": _input_sd(draws, grid_rows, grid_cols)}
            record["stages"][key] = entry

    return {
        "format": FORMAT,
        "version": VERSION,
        "metadata": {
            "model": model_name, "dataset": dataset, "samples": len(samples), "budget": budget,
            "grid": [grid_rows, grid_cols], "sequence_length": length, "template": template,
            "batch_size": batch_size, "device": next(model.parameters()).device.type,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "seconds": round(time.perf_counter() - began, 3), "versions": _versions(), "command": command,
        },
        "reference": uniform_reference(grid_rows, grid_cols, length),
        "methods": results,
    }


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import visiondrop

    return {"visiondrop": getattr(visiondrop, "__version__", "unknown"), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------- reporting


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _z(entry: dict) -> float | None:
    """How many standard deviations of a random choice among the stage's input the kept
    mean row sits above (toward the bottom) or below its input's mean row."""
    mean, given, sd = entry["dominant"]["mean_row"], entry["input"]["mean_row"], entry["input_sd"]["mean_row"]
    return None if mean is None or given is None or not sd else (mean - given) / sd


def _shallowest_llm(record: dict) -> tuple[str, dict] | None:
    keys = [k for k in sorted(record["stages"], key=_stage_order) if k != "encoder"]
    return (keys[0], record["stages"][keys[0]]) if keys else None


def to_markdown(result: dict) -> str:
    """A table per method and stage (kept tokens' mean row, its shift from the stage's
    input, z against a uniformly random choice, mean distance from the sequence end),
    then the paper's claim read off the shallowest LLM stage of each method."""
    meta, ref = result["metadata"], result["reference"]
    rows, cols = meta["grid"]
    lines = [
        f"# Positional bias of kept tokens ({meta['model']}, {meta['dataset']}, budget {meta['budget']})",
        "",
        f"{meta['samples']} samples, {rows}x{cols} patch grid (row-major, {meta['sequence_length']} visual tokens). "
        "mean row: 0 = top, 1 = bottom; distance: 0 = the end of the visual sequence. "
        f"Uniform-random reference: mean row {ref['mean_row']:.3f}, distance {ref['mean_distance']:.3f}, "
        f"{1 / rows:.3f} of the tokens per row. shift: kept mean row - the stage input's mean row "
        "(for a stage on the whole grid, - 0.5); z: shift / the standard deviation of a uniformly random choice "
        "of the same size among the stage's input, counting samples of one image (and identical selections) "
        "as one draw.",
        "",
        "| method | stage | kept / sample | mean row | input mean row | shift | z | distance from end "
        "| contextual targets' mean row |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, record in result["methods"].items():
        label = f"{name} (text-guided)" if record["text_guided"] else name
        if record["infeasible"]:
            lines.append(f"| {label} | infeasible | - | - | - | - | - | - | - |")
            continue
        for key, entry in record["stages"].items():
            kept, given = entry["dominant"], entry["input"]
            shift = None if kept["mean_row"] is None else kept["mean_row"] - given["mean_row"]
            z = _z(entry)
            lines.append(f"| {label} | {key} | {kept['per_sample']:.1f} | {_fmt(kept['mean_row'])} | "
                         f"{_fmt(given['mean_row'])} | {_fmt(shift, 3) if shift is None else f'{shift:+.3f}'} | "
                         f"{_fmt(z, 1)} | {_fmt(kept['mean_distance'])} | {_fmt(entry['contextual']['mean_row'])} |")
    lines += ["", "## The paper's claim: text-guided scoring in shallow layers keeps the bottom of the image", "",
              "Shallowest LLM stage of each method (paper, \"Rethinking\", causal misalignment, Figure 3); "
              "|z| < 3 reads as no clear bias.", ""]
    for name, record in result["methods"].items():
        if record["infeasible"]:
            lines.append(f"- {name}: infeasible at budget {meta['budget']} on this model ({record['infeasible']})")
            continue
        shallow = _shallowest_llm(record)
        if shallow is None:
            lines.append(f"- {name}: no LLM stage (prunes in the encoder only)")
            continue
        key, entry = shallow
        z = _z(entry)
        where = ("no clear bias" if z is None or abs(z) < 3
                 else "toward the bottom (sequence end)" if z > 0 else "toward the top (sequence start)")
        kind = "text-guided" if record["text_guided"] else "visual-only"
        lines.append(f"- {name} ({kind}), {key}: mean row {_fmt(entry['dominant']['mean_row'])} "
                     f"(input {_fmt(entry['input']['mean_row'])}, z {_fmt(z, 1)}): {where}")
    if meta.get("command"):
        lines += ["", f"Command: `{meta['command']}`"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str | Path) -> Path:
    """Per stage a column: the kept tokens' mean normalised row per method (bar; the
    stage input's mean as a tick; the 0.5 reference as a line) above their row
    histograms (the flat reference dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["metadata"]["grid"][0]
    ref = result["reference"]
    ran = {name: r for name, r in result["methods"].items() if not r["infeasible"]}
    keys = sorted({k for r in ran.values() for k in r["stages"]}, key=_stage_order)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(result["methods"])}
    columns = max(len(keys), 1)
    figure, axes = plt.subplots(2, columns, figsize=(3.6 * columns, 6.4), squeeze=False)
    for column, key in enumerate(keys):
        top, bottom = axes[0][column], axes[1][column]
        present = [(name, r["stages"][key]) for name, r in ran.items() if key in r["stages"]]
        for x, (name, entry) in enumerate(present):
            mean = entry["dominant"]["mean_row"]
            top.bar(x, 0.0 if mean is None else mean, color=colours[name],
                    hatch="//" if ran[name]["text_guided"] else None, edgecolor="black", linewidth=0.5)
            top.plot([x - 0.4, x + 0.4], [entry["input"]["mean_row"]] * 2, color="black", linewidth=1)
            bottom.plot(range(rows), entry["dominant"]["row_histogram"], color=colours[name], label=name,
                        linestyle="-" if ran[name]["text_guided"] else "--")
        top.axhline(ref["mean_row"], color="grey", linestyle=":", label="uniform random")
        top.set_xticks(range(len(present)), [name for name, _ in present], rotation=45, ha="right", fontsize=8)
        top.set_ylim(0, 1)
        top.set_title(key if key == "encoder" else f"LLM, before layer {key.rpartition('@')[2]}", fontsize=9)
        bottom.plot(range(rows), ref["row_histogram"], color="grey", linestyle=":", label="uniform random")
        bottom.set_xlabel("grid row (0 = top)", fontsize=8)
        bottom.legend(fontsize=6)
        if column == 0:
            top.set_ylabel("mean normalised row of kept\n(0 top, 1 bottom; tick: stage input)", fontsize=8)
            bottom.set_ylabel("share of kept tokens", fontsize=8)
    for column in range(len(keys), columns):
        axes[0][column].axis("off")
        axes[1][column].axis("off")
    meta = result["metadata"]
    figure.suptitle(f"Where kept tokens sit: {meta['model']}, {meta['samples']} samples, budget {meta['budget']} "
                    "(hatched / solid: text-guided)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def save(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``bias.json``, ``bias.md`` and ``bias.png`` into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "plot": out / PLOT_NAME}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(to_markdown(result), encoding="utf-8")
    plot(result, paths["plot"])
    return paths


# ---------------------------------------------------------------- command line


def add_parser(commands) -> argparse.ArgumentParser:
    """``visiondrop bias``: register the subcommand on ``commands`` (an argparse subparsers object)."""
    bias = commands.add_parser(
        "bias", help="positional bias: where in the patch grid each method's kept tokens sit, per stage",
        description="Run every method on every sample, read which patches each stage kept, and write the mean "
                    "normalised row, the distance from the visual sequence's end and row histograms, with a "
                    "uniform-random reference (bias.json, bias.md, bias.png). Tests the paper's claim that "
                    "text-guided scoring in shallow LLM layers keeps the bottom of the image.")
    bias.add_argument("--model", default=None,
                      help="LLaVA-1.5 checkpoint folder or hub id (default: the shipped shapes-llava)")
    bias.add_argument("--dataset", default="shapes", help="an eval dataset name (default shapes)")
    bias.add_argument("--data", action="append", metavar="KEY=PATH",
                      help="the dataset's files or options, e.g. --data scenes=16 (see visiondrop eval run)")
    bias.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma list of methods")
    bias.add_argument("--budget", default="64", help="visual tokens averaged over LLM layers (default 64)")
    bias.add_argument("--limit", default="64", help="the first N samples (default 64)")
    bias.add_argument("--batch-size", default="8", help="samples per forward pass (default 8)")
    bias.add_argument("--template", choices=("llava_v1", "plain", "chat"), default=None,
                      help="prompt format (default: plain for shapes-llava, llava_v1 for a checkpoint)")
    bias.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    bias.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    bias.add_argument("--out", default="bias-results", help="output folder (default ./bias-results)")
    return bias


def _positive(option: str, value: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise BiasConfigError(option, f"must be an integer >= 1, got {value!r}")
    return number


def _options(args: argparse.Namespace) -> dict:
    """The arguments checked without loading anything: raises BiasConfigError naming the option."""
    import torch

    import visiondrop

    from ..eval.datasets import DATASETS

    names = [m.strip() for m in args.methods.split(",")]
    if not all(names):
        raise BiasConfigError("--methods", f"expected a comma list of method names, got {args.methods!r}")
    unknown = [m for m in names if m not in visiondrop.available_methods()]
    if unknown:
        raise BiasConfigError("--methods", f"unknown {unknown}; available: "
                              f"{', '.join(sorted(visiondrop.available_methods()))}")
    if args.dataset not in DATASETS:
        raise BiasConfigError("--dataset", f"unknown name {args.dataset!r}; one of {', '.join(sorted(DATASETS))}")
    data = {}
    for pair in args.data or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BiasConfigError("--data", f"expected KEY=PATH, got {pair!r}")
        data[key.replace("-", "_")] = value
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BiasConfigError("--out", f"{args.out!r} exists and is not a folder")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise BiasConfigError("--device", f"{device!r} asked for, but CUDA is not available")
    except RuntimeError as error:
        raise BiasConfigError("--device", str(error)) from None
    return {"methods": names, "budget": _positive("--budget", args.budget), "limit": _positive("--limit", args.limit),
            "batch_size": _positive("--batch-size", args.batch_size), "data": data, "out": out, "device": device,
            "dtype": {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]}


def _load(model_path: str | None, device: str, dtype: torch.dtype):
    """(model, processor, default template)."""
    from ..eval.harness import default_template
    from ..inputs import load_model

    model, processor = load_model(model_path, device, dtype)
    return model, processor, default_template(model)


# measure_bias's parameter names -> the command-line option that sets them
_OPTION_OF = {"methods": "--methods", "budget": "--budget", "limit": "--limit", "batch_size": "--batch-size",
              "template": "--template", "model": "--model", "samples": "--dataset"}


def main(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``visiondrop bias``; 0 on success, 2 on a bad argument (named on stderr)."""
    import shlex

    from ..eval.datasets import load_dataset

    try:
        options = _options(args)
        try:
            dataset = load_dataset(args.dataset, **options["data"])
        except ValueError as error:  # a missing or unknown key, a malformed file (DataFormatError)
            raise BiasConfigError("--data", str(error)) from None
        try:
            model, processor, template = _load(args.model, options["device"], options["dtype"])
        except (OSError, ValueError) as error:
            raise BiasConfigError("--model", str(error)) from None
        command = "visiondrop " + shlex.join(argv) if argv is not None else ""
        result = measure_bias(model, processor, dataset.samples(), options["methods"], options["budget"],
                              batch_size=options["batch_size"], template=args.template or template,
                              limit=options["limit"], model_name=args.model or "shapes-llava",
                              dataset=args.dataset, command=command, progress=True)
    except BiasConfigError as error:
        option = _OPTION_OF.get(error.parameter, error.parameter)
        print(f"visiondrop: {option}: {error.message}", file=sys.stderr)
        return 2
    for name, record in result["methods"].items():
        if record["infeasible"]:
            print(f"visiondrop: note: {name} skipped: {record['infeasible']}", file=sys.stderr)
    paths = save(result, options["out"])
    print(to_markdown(result))
    for path in paths.values():
        print(f"wrote {path}")
    return 0
