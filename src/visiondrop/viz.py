"""Pictures of what a pruned prefill kept: one panel per stage, drawn on the image.

In each panel the patches whose token is a *dominant* token after the stage are
shown as they are, outlined in white; patches merged into a *contextual* token
are tinted with one colour per contextual token (its target outlined); patches
whose token was gone before the stage, or dropped by it, are darkened. Patch ids
come from :class:`~visiondrop.report.SegmentRecord` (row-major over the grid,
``-1`` for the encoder's [CLS]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # annotations only: drawing needs no torch
    from .report import PruningReport, SegmentRecord

_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                     (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0)], dtype=np.float64)


def stage_panel(image: np.ndarray, segment: SegmentRecord, patch_size: int) -> Image.Image:
    """``image`` (uint8 HxWx3) with one stage's decision for one image drawn on it."""
    height, width = image.shape[:2]
    columns = width // patch_size
    base = image.astype(np.float64) * 0.25  # everything not carried by a token after this stage
    canvas = base.copy()
    outlines: list[tuple[int, str]] = []

    def cells(patch: int):
        r, c = divmod(patch, columns)
        return slice(r * patch_size, (r + 1) * patch_size), slice(c * patch_size, (c + 1) * patch_size)

    patches = segment.input_patches.tolist()
    merged = segment.merged_into.tolist()
    for local, slot in enumerate(merged):
        if slot >= 0 and patches[local] >= 0:
            ys, xs = cells(patches[local])
            tint = _PALETTE[slot % len(_PALETTE)]
            canvas[ys, xs] = 0.45 * image[ys, xs] + 0.55 * tint
    for local in segment.targets.tolist():
        if patches[local] >= 0:
            outlines.append((patches[local], "black"))
    for local in segment.dominant.tolist():
        if patches[local] >= 0:
            ys, xs = cells(patches[local])
            canvas[ys, xs] = image[ys, xs]
            outlines.append((patches[local], "white"))
    panel = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(panel)
    for patch, colour in outlines:
        r, c = divmod(patch, columns)
        draw.rectangle([c * patch_size, r * patch_size, (c + 1) * patch_size - 1, (r + 1) * patch_size - 1],
                       outline=colour)
    return panel


def pruning_figure(images: Sequence[np.ndarray], report: PruningReport, rows: Sequence[int], patch_size: int,
                   titles: Sequence[str] | None = None) -> Image.Image:
    """A grid: one line per image (``rows[i]`` = its batch row), columns = the
    image, then every stage of ``report`` in order."""
    columns = 1 + len(report.stages)
    size = images[0].shape[0]
    caption, gap = 34, 6
    figure = Image.new("RGB", (columns * (size + gap) + gap, len(images) * (size + caption + gap) + gap), "white")
    draw = ImageDraw.Draw(figure)
    for i, (image, row) in enumerate(zip(images, rows)):
        top = gap + i * (size + caption + gap)
        labels = [titles[i] if titles else "input"]
        panels = [Image.fromarray(image)]
        for stage in report.stages:
            segment = stage.rows(row)[0]
            panels.append(stage_panel(image, segment, patch_size))
            where = "vision encoder" if stage.layer is None else f"before LLM layer {stage.layer}"
            labels.append(f"{where}: {stage.tokens_in} -> {stage.dominant}+{stage.contextual}")
        for j, (panel, label) in enumerate(zip(panels, labels)):
            left = gap + j * (size + gap)
            figure.paste(panel, (left, top + caption))
            draw.text((left, top + 4), label, fill="black")
    return figure
