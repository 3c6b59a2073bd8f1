"""Kept-token pictures: what every stage of a pruned prefill kept, drawn on the image.

The paper's Figures 3 and 4 (../shared/paper/VisionDrop-paper.md) draw, on the input
image, the visual tokens that text-guided pruning keeps inside the LLM: they cluster at
the bottom of the image (positional bias of the causal last instruction token, Figure 3)
and miss the object the question is about (modal entanglement, Figure 4). This module
draws the same pictures for every method of the library on every supported model, from
``handle.report``, so methods can be set side by side on one image:

- :class:`Layout` says where each patch id of the report lies on the picture: one square
  grid (LLaVA-1.5), the base crop beside the tiled high-resolution crops placed as in the
  original image (LLaVA-NeXT, LLaVA-OneVision), frames side by side (videos), the grid of
  merged 2 x 2 blocks over the resized image (Qwen2.5-VL). :func:`layout_for` picks it
  from the model and the processor's output.
- :func:`stage_pictures` maps a report to one picture per stage (pure: no model).
- :func:`compare_methods` runs methods one after the other and composes rows = methods,
  columns = input + stages.
- :func:`add_parser` / :func:`main`: ``visiondrop visualize``.

Drawing convention (as :mod:`visiondrop.viz`): dominant tokens' patches as they are, with
a white outline; patches merged into a contextual token tinted with one colour per
contextual token, its target outlined in black; every other patch (dropped by this stage
or gone before it) darkened. Tokens with no place on the image ([CLS] -1, a newline -2, a
token of a downsized OneVision grid -3) cannot be drawn; a title counts those that were kept.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..viz import _PALETTE as PALETTE
from ..viz import TINT as VIZ_TINT
from ..viz import legend

if TYPE_CHECKING:  # annotations only: the command line's parser imports this module
    from ..report import PruningReport, SegmentRecord, StageRecord

DARK = 0.25  # brightness of patches no token carries after the stage (as viz.stage_panel)
TINT = VIZ_TINT  # share of a contextual token's colour on merged patches: the scene shows beneath
GAP = 8  # pixels between the pieces of a picture (base crop | tiles, frames)


# ------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class Grid:
    """One encoder unit (an image, a crop, a frame) as ``rows x cols`` cells of a pixel
    box; its cells hold patch ids ``first .. first + rows * cols - 1``, row-major."""

    first: int
    rows: int
    cols: int
    top: int
    left: int
    height: int
    width: int

    def holds(self, patch: int) -> bool:
        return self.first <= patch < self.first + self.rows * self.cols

    def cell(self, patch: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of ``patch`` (integer edges: boxes need not divide evenly)."""
        r, c = divmod(patch - self.first, self.cols)
        return (self.top + r * self.height // self.rows, self.top + (r + 1) * self.height // self.rows,
                self.left + c * self.width // self.cols, self.left + (c + 1) * self.width // self.cols)


@dataclass(frozen=True)
class View:
    """Where the input (or one of its frames) is drawn: ``mode`` is how the processor
    fitted it to the box: "cover" (shortest edge resized, centre crop: CLIP), "fit"
    (aspect kept, centred, black padding: anyres tiles) or "stretch" (resized: a base
    crop, Qwen2.5-VL's resized image)."""

    top: int
    left: int
    height: int
    width: int
    mode: str = "stretch"
    frame: int | None = None


@dataclass(frozen=True)
class Layout:
    """How a model's patch ids map to pixel cells of one picture of ``height x width``.

    ``unit_patches > 0`` says the encoder stage's records hold unit-local ids (LLaVA-NeXT
    and OneVision record each crop's own 0..n-1): the k-th record of an image is offset by
    ``k * unit_patches``. LLM stages (and Video-LLaVA's frame records) hold image-wide ids.
    """

    height: int
    width: int
    views: tuple[View, ...]
    grids: tuple[Grid, ...]
    unit_patches: int = 0

    def cell(self, patch: int) -> tuple[int, int, int, int] | None:
        """Pixel box of ``patch``, or None for a token with no place on the image."""
        if patch < 0:
            return None
        for grid in self.grids:
            if grid.holds(patch):
                return grid.cell(patch)
        return None

    def covered(self) -> np.ndarray:
        """``(height, width)`` bool: the pixels of a view (the rest is the white between views)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        for view in self.views:
            mask[view.top:view.top + view.height, view.left:view.left + view.width] = True
        return mask

    def render(self, media: np.ndarray) -> np.ndarray:
        """The picture's background: ``media`` (uint8 ``H x W x 3``, or ``T x H x W x 3``
        for a video) placed in every view, white between views."""
        canvas = np.full((self.height, self.width, 3), 255, dtype=np.uint8)
        for view in self.views:
            source = media if view.frame is None else media[min(view.frame, len(media) - 1)]
            canvas[view.top:view.top + view.height, view.left:view.left + view.width] = _placed(source, view)
        return canvas


def _placed(image: np.ndarray, view: View) -> np.ndarray:
    """``image`` fitted to ``view``'s box as the processor fits it."""
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    width, height = picture.size
    if view.mode == "stretch":
        return np.asarray(picture.resize((view.width, view.height), Image.BICUBIC))
    if view.mode == "cover":
        scale = max(view.width / width, view.height / height)
        size = (max(view.width, round(width * scale)), max(view.height, round(height * scale)))
        resized = picture.resize(size, Image.BICUBIC)
        left, top = (size[0] - view.width) // 2, (size[1] - view.height) // 2
        return np.asarray(resized.crop((left, top, left + view.width, top + view.height)))
    if view.mode == "fit":  # transformers' get_patch_output_size + centred padding (anyres tiles)
        if view.width / width < view.height / height:
            size = (view.width, min(math.ceil(height * view.width / width), view.height))
        else:
            size = (min(math.ceil(width * view.height / height), view.width), view.height)
        out = np.zeros((view.height, view.width, 3), dtype=np.uint8)
        top, left = (view.height - size[1]) // 2, (view.width - size[0]) // 2
        out[top:top + size[1], left:left + size[0]] = np.asarray(picture.resize(size, Image.BICUBIC))
        return out
    raise ValueError(f"view mode must be 'cover', 'fit' or 'stretch', got {view.mode!r}")


def square_layout(image_size: int, patch_size: int, mode: str = "cover") -> Layout:
    """LLaVA-1.5 (and a Video-LLaVA image): one square grid over the processor's image."""
    side = image_size // patch_size
    return Layout(image_size, image_size, (View(0, 0, image_size, image_size, mode),),
                  (Grid(0, side, side, 0, 0, image_size, image_size),))


def anyres_layout(image_hw: Sequence[int], crop_size: int, patch_size: int, pinpoints: Sequence[Sequence[int]],
                  tiled: bool = True) -> Layout:
    """LLaVA-NeXT / OneVision: the base crop (patch ids ``0 .. n-1``), then, to its right,
    the tiles in their places over the best pinpoint's canvas (tile ``t`` holds ids
    ``(1 + t) * n ..``, tiles row-major), the image fitted into that canvas as the
    processor pads it. ``tiled=False``: only the base crop (OneVision's multi-image crops)."""
    from transformers.image_processing_utils import select_best_resolution

    side = crop_size // patch_size
    per_crop = side * side
    views = [View(0, 0, crop_size, crop_size, "stretch")]
    grids = [Grid(0, side, side, 0, 0, crop_size, crop_size)]
    height, width = crop_size, crop_size
    if tiled:
        best_h, best_w = select_best_resolution(tuple(int(v) for v in image_hw), [list(p) for p in pinpoints])
        rows, cols = best_h // crop_size, best_w // crop_size
        left = crop_size + GAP
        views.append(View(0, left, rows * crop_size, cols * crop_size, "fit"))
        for t in range(rows * cols):
            r, c = divmod(t, cols)
            grids.append(Grid((1 + t) * per_crop, side, side, r * crop_size, left + c * crop_size, crop_size,
                              crop_size))
        height, width = max(crop_size, rows * crop_size), left + cols * crop_size
    return Layout(height, width, tuple(views), tuple(grids), unit_patches=per_crop)


def frames_layout(frames: int, size: int, side: int, mode: str = "cover", frame_step: int = 1) -> Layout:
    """A video: frames side by side, frame ``f`` holding ids ``f * side^2 ..`` (Video-LLaVA's
    patches; OneVision's pooled grid). ``frame_step``: input frames per unit."""
    views, grids = [], []
    for f in range(frames):
        left = f * (size + GAP)
        views.append(View(0, left, size, size, mode, frame=f * frame_step))
        grids.append(Grid(f * side * side, side, side, 0, left, size, size))
    return Layout(size, frames * (size + GAP) - GAP, tuple(views), tuple(grids))


def merged_layout(grid_thw: Sequence[int], patch_size: int, merge: int = 2, frame_step: int = 2) -> Layout:
    """Qwen2.5-VL: the resized image (``h x w`` patches of ``patch_size``) as a grid of
    merged ``merge x merge`` blocks; a video's ``t`` temporal units side by side (unit ``u``
    shows input frame ``u * frame_step``, the first of the frames it merges)."""
    t, h, w = (int(v) for v in grid_thw)
    rows, cols = h // merge, w // merge
    height, width = h * patch_size, w * patch_size
    views, grids = [], []
    for u in range(t):
        left = u * (width + GAP)
        views.append(View(0, left, height, width, "stretch", frame=None if t == 1 else u * frame_step))
        grids.append(Grid(u * rows * cols, rows, cols, 0, left, height, width))
    return Layout(height, t * (width + GAP) - GAP, tuple(views), tuple(grids))


def layout_for(model, batch, index: int = 0, modality: str = "image", processor=None) -> Layout:
    """The layout of media ``index`` (among the batch's images, or its videos) of
    ``batch`` (the processor's output) on ``model``."""
    config = model.config
    kind = type(model).__name__
    vision = config.vision_config
    mode = "cover"
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and getattr(image_processor, "do_center_crop", True) is False:
        mode = "stretch"
    if kind == "Qwen2_5_VLForConditionalGeneration":
        key = "image_grid_thw" if modality == "image" else "video_grid_thw"
        return merged_layout(batch[key][index].tolist(), vision.patch_size, vision.spatial_merge_size,
                             getattr(vision, "temporal_patch_size", 2))
    side = vision.image_size // vision.patch_size
    if kind in ("LlavaNextForConditionalGeneration", "LlavaOnevisionForConditionalGeneration"):
        if modality == "video":  # OneVision pools each frame's grid to half its side
            frames = batch["pixel_values_videos"].shape[1]
            return frames_layout(frames, vision.image_size, math.ceil(side / 2), "stretch")
        size = batch["image_sizes"][index].tolist()
        per_row = batch.get("batch_num_images") if hasattr(batch, "get") else None
        tiled = per_row is None or max(np.asarray(per_row).reshape(-1).tolist()) == 1  # several images: base only
        return anyres_layout(size, vision.image_size, vision.patch_size, config.image_grid_pinpoints, tiled)
    if modality == "video":
        frames = batch["pixel_values_videos"].shape[1]
        return frames_layout(frames, vision.image_size, side, mode)
    return square_layout(vision.image_size, vision.patch_size, mode)


# ------------------------------------------------------------------ pictures
def stage_title(stage: StageRecord, records: Sequence[SegmentRecord]) -> str:
    """"vision encoder: 576 -> 48 kept + 8 merged" / "before LLM layer 8: 72 -> 30 kept + 2 merged": its tokens
    (summed over its crops or frames) in, then dominant + contextual out."""
    where = "vision encoder" if stage.layer is None else f"before LLM layer {stage.layer}"
    tokens_in = sum(r.input_patches.numel() for r in records)
    dominant = sum(r.dominant.numel() for r in records)
    contextual = sum(r.targets.numel() for r in records)
    return f"{where}: {tokens_in} -> {dominant} kept + {contextual} merged"


def _stage_picture(base: np.ndarray, records: Sequence[SegmentRecord], layout: Layout, local_ids: bool
                   ) -> tuple[Image.Image, int]:
    """One stage of one image drawn on ``base``; also the number of kept tokens that have
    no cell ([CLS], newlines, blended tokens)."""
    # darken the image only: the white between a base crop and its tiles, or between frames, stays white
    canvas = np.where(layout.covered()[..., None], base * DARK, base).astype(np.float64)
    outlines: list[tuple[tuple[int, int, int, int], str]] = []
    off_image, slots_before = 0, 0
    for unit, record in enumerate(records):
        offset = unit * layout.unit_patches if local_ids else 0
        cells = [layout.cell(p + offset) if p >= 0 else None for p in record.input_patches.tolist()]
        for local, slot in enumerate(record.merged_into.tolist()):
            if slot >= 0 and cells[local] is not None:
                y0, y1, x0, x1 = cells[local]
                # one colour per contextual token of the image: slots restart at 0 in every crop or frame
                tint = PALETTE[(slots_before + slot) % len(PALETTE)]
                canvas[y0:y1, x0:x1] = (1 - TINT) * base[y0:y1, x0:x1] + TINT * tint
        for local in record.targets.tolist():
            if cells[local] is None:
                off_image += 1
            else:
                outlines.append((cells[local], "black"))
        for local in record.dominant.tolist():
            if cells[local] is None:
                off_image += 1
                continue
            y0, y1, x0, x1 = cells[local]
            canvas[y0:y1, x0:x1] = base[y0:y1, x0:x1]
            outlines.append((cells[local], "white"))
        slots_before += record.targets.numel()
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for (y0, y1, x0, x1), colour in outlines:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour)
    return picture, off_image


def stage_pictures(image_rgb: np.ndarray, report: PruningReport, row: int, layout: Layout,
                   image: int | None = None) -> list[tuple[str, Image.Image]]:
    """``[("input", picture), (stage title, picture), ...]`` for one image of a report.

    ``image_rgb``: the input as given to the processor (uint8 ``H x W x 3``; a video
    ``T x H x W x 3``); ``row``: its batch row; ``image``: its index among the batch's
    images (the records' ``image``; default the row's first); ``layout``: how the model's
    patch ids map to cells (:func:`layout_for`). Stages that did not touch the image are
    left out. Pure: reads the report only.
    """
    media = np.asarray(image_rgb)
    base = layout.render(media)
    pictures = [("input", Image.fromarray(base))]
    if image is None:
        seen = [s.image for stage in report.stages for s in stage.rows(row)]
        image = min(seen) if seen else 0
    for stage in report.stages:
        records = [s for s in stage.rows(row) if s.image == image]
        if not records:
            continue
        picture, off_image = _stage_picture(base, records, layout, stage.layer is None and layout.unit_patches > 0)
        title = stage_title(stage, records)
        if off_image:
            title += f" (+{off_image} off-image)"
        pictures.append((title, picture))
    return pictures


# ------------------------------------------------------------------ figures
def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def compose(rows: Sequence[tuple[str, Sequence[tuple[str, Image.Image]], str | None]], panel_height: int = 336,
            title: str | None = None) -> Image.Image:
    """A figure: ``title`` and a legend of the colours on top, then one line per ``(heading,
    pictures, answer)``; pictures scaled to ``panel_height`` (aspect kept), each under its
    title; the answer, if any, below."""
    font = _font(14)
    line = 20
    scaled = [[(label, pic.resize((max(1, round(pic.width * panel_height / pic.height)), panel_height),
                                  Image.BILINEAR)) for label, pic in pictures] for _, pictures, _ in rows]
    width = GAP + max(sum(pic.width + GAP for _, pic in line_) for line_ in scaled)
    key = legend(max(width, 1100))
    width = max(width, key.width)
    band = (30 if title else 0) + key.height + GAP
    heights = [3 * line + panel_height + (line if answer else 0) + GAP for _, _, answer in rows]
    figure = Image.new("RGB", (width, band + GAP + sum(heights)), "white")
    draw = ImageDraw.Draw(figure)
    if title:
        draw.text((GAP, GAP), title, fill="black", font=_font(18))
    figure.paste(key, (0, band - key.height))
    top = band + GAP
    for (heading, _, answer), line_, height in zip(rows, scaled, heights):
        draw.text((GAP, top), heading, fill="black", font=font)
        left = GAP
        for label, pic in line_:
            where, _, counts = label.partition(": ")  # two lines: narrow panels keep their titles apart
            draw.text((left, top + line), where, fill="black", font=font)
            draw.text((left, top + 2 * line), counts, fill=(70, 70, 70), font=_font(13))
            figure.paste(pic, (left, top + 3 * line))
            left += pic.width + GAP
        if answer:
            draw.text((GAP, top + 3 * line + panel_height + 2), f"answer: {answer}", fill="black", font=font)
        top += height
    return figure


def _batch(model, processor, media, prompt: str):
    from .. import inputs

    video = isinstance(media, np.ndarray) and media.ndim == 4
    text = inputs.format_prompt(processor, prompt, not video, video)
    kwargs = {"videos": [media]} if video else {"images": media}
    batch = processor(text=text, return_tensors="pt", **kwargs).to(model.device)
    for key in ("pixel_values", "pixel_values_videos"):
        if key in batch and batch[key].is_floating_point():
            batch[key] = batch[key].to(model.dtype)
    return batch, ("video" if video else "image")


def compare_methods(model, processor, image, prompt: str, methods: Sequence[str], budget: int, *,
                    answer_tokens: int = 0, panel_height: int = 336, **options) -> Image.Image:
    """Rows = ``methods`` at ``budget``, columns = the input, then every stage of each
    method drawn on ``image`` (a PIL image, or a video as uint8 ``T x H x W x 3`` frames);
    the paper's Figures 3 and 4 side by side for any set of methods.

    Each method is applied, runs one prefill (``answer_tokens=0``: a forward) or a greedy
    ``generate`` of ``answer_tokens`` tokens whose text goes under its row, and is removed
    before the next. ``options`` go to every ``apply()``.
    """
    import torch

    import visiondrop

    media = np.asarray(image) if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
    batch, modality = _batch(model, processor, media if media.ndim == 4 else Image.fromarray(media), prompt)
    layout = layout_for(model, batch, 0, modality, processor)
    rows = []
    for name in methods:
        handle = visiondrop.apply(model, name, budget=budget, **options)
        try:
            with torch.inference_mode():
                answer = None
                if answer_tokens > 0:
                    out = model.generate(**batch, max_new_tokens=answer_tokens, do_sample=False)
                    answer = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                    answer = answer[0].strip() or "(empty)"
                else:
                    model(**batch)
            pictures = stage_pictures(media, handle.report, 0, layout)
            rows.append((f"{name}, budget {budget}: {handle.schedule}", pictures, answer))
        finally:
            handle.remove()
    model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    title = f"{model_name.rstrip('/').split('/')[-1] or type(model).__name__}: what each stage kept at budget " \
            f"{budget}; prompt: {prompt}"
    return compose(rows, panel_height, title)


# ------------------------------------------------------------------ command line
def add_parser(commands) -> argparse.ArgumentParser:
    """Adds ``visualize`` to ``commands`` (the CLI's subparsers); returns its parser."""
    parser = commands.add_parser(
        "visualize", help="draw what each stage kept, several methods side by side (PNG per image)",
        description="Run each method at --budget on one image (or video) and draw, per stage, the kept dominant "
                    "patches (bright, white outline), the contextual tokens (one tint each, target outlined) and "
                    "the dropped patches (dark): one PNG per input, rows = methods (the paper's Figures 3 and 4).")
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the shipped shapes-llava)")
    parser.add_argument("--image", action="append", default=None, help="image file; repeat for several images")
    parser.add_argument("--video", default=None,
                        help="video as a folder of frame images or a .npy uint8 array (frames, height, width, 3)")
    parser.add_argument("--frames", type=int, default=None, help="frames to sample from --video (default: the model's)")
    parser.add_argument("--prompt", required=True, help="the question; wrapped in the model's chat format")
    parser.add_argument("--methods", default="visiondrop", help="comma list of methods (default visiondrop)")
    parser.add_argument("--budget", type=int, default=64, help="visual-token budget (default 64)")
    parser.add_argument("--answer-tokens", type=int, default=0,
                        help="greedy tokens to generate and print under each row (default 0: prefill only)")
    parser.add_argument("--panel-height", type=int, default=336, help="height of each panel in pixels (default 336)")
    parser.add_argument("--out", default="visiondrop-visualize", help="output folder (default ./visiondrop-visualize)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    return parser


def _check_arguments(args) -> list[str]:
    """Everything that needs no model, before any is loaded; the method names."""
    from .. import inputs
    from ..methods import get_method

    if bool(args.image) == (args.video is not None):
        raise inputs.InputError("--image/--video", "give one or more --image files, or one --video")
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    if not names:
        raise inputs.InputError("--methods", "give at least one method")
    for name in names:
        try:
            get_method(name)
        except ValueError as error:
            raise inputs.InputError("--methods", str(error)) from None
    if args.budget < 1:
        raise inputs.InputError("--budget", f"must be >= 1, got {args.budget}")
    if args.answer_tokens < 0:
        raise inputs.InputError("--answer-tokens", f"must be >= 0, got {args.answer_tokens}")
    if args.panel_height < 16:
        raise inputs.InputError("--panel-height", f"must be >= 16, got {args.panel_height}")
    if args.frames is not None and args.frames < 1:
        raise inputs.InputError("--frames", f"must be >= 1, got {args.frames}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise inputs.InputError("--out", f"{args.out!r} exists and is not a folder")
    return names


def _check_plans(model, names: Sequence[str], budget: int) -> None:
    """Every method planned at ``budget`` on ``model`` before any forward."""
    import visiondrop

    from .. import inputs
    from ..schedule import BudgetInfeasible

    for name in names:
        try:
            visiondrop.plan(model, name, budget=budget)
        except BudgetInfeasible as error:
            raise inputs.InputError("--budget", f"{name}: {error}") from None
        except ValueError as error:
            parameter = "--budget" if "budget" in str(error).lower() else "--methods"
            raise inputs.InputError(parameter, f"{name}: {error}") from None


def main(args: argparse.Namespace) -> int:
    """``visiondrop visualize``: one PNG per --image (or the --video) in --out; 2 on a bad argument."""
    import torch

    from .. import inputs

    try:
        names = _check_arguments(args)
        media = [(Path(p).stem or "image", inputs.load_image(p)) for p in args.image or ()]
        device = inputs.check_device(args.device)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
        model, processor = inputs.load_model(args.model, device, dtype)
        if args.video is not None:
            frames = inputs.load_frames(args.video, inputs.check_frames(model.config, args.frames))
            media = [(Path(args.video.rstrip("/")).stem or "video", frames)]
        _check_plans(model, names, args.budget)
    except inputs.InputError as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for k, (stem, item) in enumerate(media):
        name = stem if stem not in used else f"{stem}-{k}"  # two inputs of one name keep both pictures
        used.add(name)
        try:
            figure = compare_methods(model, processor, item, args.prompt, names, args.budget,
                                     answer_tokens=args.answer_tokens, panel_height=args.panel_height)
        except ValueError as error:  # e.g. a Qwen2.5-VL image whose own plan cannot reach the budget
            print(f"visiondrop: {error}", file=sys.stderr)
            return 2
        path = out / f"{name}.png"
        figure.save(path)
        print(f"wrote {path}: {', '.join(names)} at budget {args.budget}")
    return 0
