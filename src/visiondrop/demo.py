"""``visiondrop demo``: VisionDrop on a shipped proxy model (shapes-llava by default), start to finish, on CPU.

Draws a few scenes from the proxy's held-out set (ShapesVQA for shapes-llava, ShapesVQA-2
for ``proxy="shapes-llava-2"``), asks each scene's questions with the full model and with
VisionDrop at budgets 192, 128, 64 and 32 (greedy ``generate``, the real cached path),
prints the answers, accuracy and wall time per budget, and writes a PNG showing, for each
scene, which patches every stage kept and which it merged into contextual tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import visiondrop

from .eval.vqa import items_of
from .viz import pruning_figure
from .zoo.proxies import DEFAULT_PROXY, Proxy, get_proxy

BUDGETS = (192, 128, 64, 32)
MAX_SCENES = 16  # all questions go through in one batch (the picture needs one report)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def run(num_scenes: int = 4, figure_budget: int = 64, out: str | Path = "visiondrop-demo.png",
        model_path: str | Path | None = None, threads: int | None = None, proxy: str | Proxy = DEFAULT_PROXY) -> int:
    proxy = proxy if isinstance(proxy, Proxy) else get_proxy(proxy)
    if not 1 <= num_scenes <= MAX_SCENES:
        raise ValueError(f"num_scenes must be in [1, {MAX_SCENES}], got {num_scenes}")
    if figure_budget not in BUDGETS:
        raise ValueError(f"figure_budget must be one of {BUDGETS}, got {figure_budget}")
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES or out.is_dir():
        raise ValueError(f"out must be an image file path ending in one of {IMAGE_SUFFIXES}, got {str(out)!r}")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model, processor = proxy.load(model_path)
    scenes = proxy.heldout(num_scenes)
    items = items_of(scenes)
    print(f"visiondrop demo: {proxy.name} (LLaVA-1.5 in miniature: CLIP ViT 336/14 with CLS, 576 patches, "
          f"{model.config.text_config.num_hidden_layers}-layer Llama) on {len(scenes)} {proxy.dataset} scenes, "
          f"{len(items)} questions, CPU\n")

    runs: list[tuple[str, object, list[str], float]] = []
    figure_report = figure_answers = None
    with torch.inference_mode():
        # warm-up, so no timing below includes first-call costs
        proxy.answer(model, processor, items[:1], generate=True)
        for budget in tqdm([None, *BUDGETS], desc="budgets", unit="run"):
            handle = None if budget is None else visiondrop.apply(model, budget=budget)
            tic = time.perf_counter()
            answers = proxy.answer(model, processor, items, batch_size=len(items), generate=True)
            seconds = time.perf_counter() - tic
            if handle is not None:
                if budget == figure_budget:
                    figure_report, figure_answers = handle.report, answers
                runs.append((f"budget {budget}", handle.schedule, answers, seconds))
                handle.remove()
            else:
                runs.append(("full", "576 visual tokens in every layer", answers, seconds))

    names = ["full"] + [str(b) for b in BUDGETS]
    print(f"{'question':<48} {'truth':>8} " + " ".join(f"{n:>8}" for n in names))
    for k, item in enumerate(items):
        given = [r[2][k] for r in runs]
        marks = " ".join(f"{g + ('' if g.split() == item.question.answer.split() else '*'):>8}" for g in given)
        print(f"{item.question.text:<48} {item.question.answer:>8} {marks}")
    print("(* = wrong)\n")
    print(f"{'run':<11} {'schedule (dominant+contextual per stage)':<58} {'accuracy':>8} {'seconds':>8}")
    for name, schedule, answers, seconds in runs:
        accuracy = proxy.accuracy_by_kind(items, answers)["overall"]
        print(f"{name:<11} {str(schedule):<58} {accuracy:>8.1%} {seconds:>8.2f}")
    first_rows = _first_rows(scenes)
    full_answers = runs[0][2]
    notes = [f"Q: {items[r].question.text}   truth: {items[r].question.answer}   full model: {full_answers[r]}   "
             f"budget {figure_budget}: {figure_answers[r]}" for r in first_rows]
    figure = pruning_figure([s.image for s in scenes], figure_report, first_rows,
                            model.config.vision_config.patch_size, titles=[f"scene {s.index}" for s in scenes],
                            heading=proxy.figure_heading(f"VisionDrop at budget {figure_budget}: what each stage "
                                                         "kept"), notes=notes)
    if figure is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.save(out)
        print(f"\nwrote {out}: what each stage kept at budget {figure_budget} (bright, white outline: dominant; "
              "tinted: merged into a contextual token, one colour each; dark: dropped)")
    if proxy.name == DEFAULT_PROXY:
        benchmark = "`visiondrop fidelity` (results in docs/fidelity/)"
    else:
        benchmark = f"`visiondrop fidelity --proxy {proxy.name}`"
    print(f"done in {time.perf_counter() - start:.1f}s. Full benchmark: {benchmark}.")
    return 0


def _first_rows(scenes) -> list[int]:
    """Each scene's first question's row in the batch (scenes may ask different numbers of questions)."""
    rows, row = [], 0
    for scene in scenes:
        rows.append(row)
        row += len(scene.questions)
    return rows
