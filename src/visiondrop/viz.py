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


#: share of a contextual token's colour on the patches merged into it: low enough that the
#: scene shows beneath the tint
TINT = 0.4
DARK = 0.25  # brightness of patches no token carries after the stage


def stage_panel(image: np.ndarray, segment: SegmentRecord, patch_size: int) -> Image.Image:
    """``image`` (uint8 HxWx3) with one stage's decision for one image drawn on it."""
    height, width = image.shape[:2]
    columns = width // patch_size
    base = image.astype(np.float64) * DARK  # everything not carried by a token after this stage
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
            canvas[ys, xs] = (1 - TINT) * image[ys, xs] + TINT * tint
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


def font(size: int):
    """Pillow's own font at ``size`` px (older Pillow: its small bitmap font)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def legend(width: int, patch: int = 14) -> Image.Image:
    """One line of swatches saying what the colours of a stage panel mean."""
    strip = Image.new("RGB", (width, 2 * patch + 8), "white")
    draw = ImageDraw.Draw(strip)
    grey, tint = np.array([150.0, 150.0, 150.0]), _PALETTE[0]
    items = [("dominant: kept as it is (white outline)", tuple(int(v) for v in grey), "white"),
             ("contextual: patches merged into one token, one colour each (its target outlined black)",
              tuple(int(v) for v in (1 - TINT) * grey + TINT * tint), "black"),
             ("dropped, or gone at an earlier stage", tuple(int(v) for v in grey * DARK), None)]
    left, text = 8, font(13)
    for label, colour, outline in items:
        draw.rectangle([left, 4, left + 2 * patch, 4 + 2 * patch], fill=colour, outline=outline or colour, width=2)
        draw.text((left + 2 * patch + 6, 4 + patch - 7), label, fill="black", font=text)
        left += 2 * patch + 14 + int(draw.textlength(label, font=text)) + 24
    return strip


def pruning_figure(images: Sequence[np.ndarray], report: PruningReport, rows: Sequence[int], patch_size: int,
                   titles: Sequence[str] | None = None, heading: str | None = None,
                   notes: Sequence[str] | None = None) -> Image.Image:
    """A grid: one line per image (``rows[i]`` = its batch row), columns = the image, then
    every stage of ``report`` in order; ``heading`` on top with a legend of the colours,
    ``notes[i]`` (a question and its answers) under line ``i``."""
    columns = 1 + len(report.stages)
    size = images[0].shape[0]
    caption, gap, note = 40, 8, 22 if notes else 0
    label_font, title_font, note_font = font(15), font(20), font(14)
    width = columns * (size + gap) + gap
    key = legend(width)
    top_band = (34 if heading else 0) + key.height + 6
    figure = Image.new("RGB", (width, top_band + len(images) * (size + caption + note + gap) + gap), "white")
    draw = ImageDraw.Draw(figure)
    if heading:
        draw.text((gap, 6), heading, fill="black", font=title_font)
    figure.paste(key, (0, top_band - key.height - 6))
    for i, (image, row) in enumerate(zip(images, rows)):
        top = top_band + i * (size + caption + note + gap)
        labels = [(titles[i] if titles else "input", "the image as the model sees it")]
        panels = [Image.fromarray(image)]
        for stage in report.stages:
            segment = stage.rows(row)[0]
            panels.append(stage_panel(image, segment, patch_size))
            where = "in the vision encoder" if stage.layer is None else f"before LLM layer {stage.layer}"
            labels.append((where, f"{stage.tokens_in} tokens -> {stage.dominant} kept + {stage.contextual} merged"))
        for j, (panel, (first, second)) in enumerate(zip(panels, labels)):
            left = gap + j * (size + gap)
            figure.paste(panel, (left, top + caption))
            draw.text((left, top + 2), first, fill="black", font=label_font)
            draw.text((left, top + 20), second, fill=(70, 70, 70), font=note_font)
        if notes:
            draw.text((gap, top + caption + size + 3), notes[i], fill="black", font=note_font)
    return figure
