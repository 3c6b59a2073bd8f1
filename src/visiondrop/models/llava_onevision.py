"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): anyres crops as on
LLaVA-NeXT, a SigLIP tower without [CLS], a Qwen2 LM; images, multi-image prompts and
videos.

The encoder. Features are the last SigLIP layer's output *before* ``post_layernorm``
(``vision_feature_layer=-1``, strategy ``"full"``), so the encoder stage hooks that
layer, as on LLaVA-1.5 with SigLIP. There is no [CLS]: VisionDrop scores each patch by
the mean attention it receives from all visual tokens (paper, Sec. "Visual Query
Selection"), ``keep_cls`` has nothing to keep, and VisionZip and VisPruner, whose rules
need a [CLS], are refused at ``apply()``.

Images (one per prompt): a base crop plus a grid of tiles (``image_grid_pinpoints``, up
to 6 x 6 on the 7B). Transformers unpads the tiled grid and, when it holds more than
about N crops' worth of patches (``vision_aspect_ratio="anyres_max_N"``, N = 9), shrinks
it bilinearly, so its tokens are no longer one per patch; one newline ends every row.

- Methods with an encoder stage (visiondrop, random, pool) use the release's crop layout,
  as on LLaVA-NeXT (docs/models.md): every crop reduced on its own to the same D + C, the
  base crop's tokens first, the tiles' dominant tokens in row-major order over the whole
  tiled grid, then their contextual tokens; no unpadding, no downsizing. Newlines:
  ``apply(..., newline="drop")`` (default: none) or ``"end"`` (one ``image_newline``
  after each image, never pruned, not counted as visual).
- LLM-only methods (fastv, pdrop, pdrop-visual, sparsevlm, visiondrop with
  ``encoder_stage=False``) see transformers' packed layout; its newlines and downsized
  tokens are visual tokens they may prune.

Multi-image prompts (``batch_num_images`` > 1 in a row): each image is one crop (no
anyres) and a newline; with an encoder stage, D + C tokens (and the newline option).

Budgets are planned per crop (:func:`~visiondrop.models.base.plan_per_unit`): B / k_max
for one crop, k_max = the largest crop count of the pinpoints (37 on the 7B), so B must
be a multiple of k_max. The largest image averages B over the LM's layers; any other
segment (fewer crops, a packed layout, one multi-image crop, a video) keeps the same
share of its own tokens at every LLM stage (``scale_stages``).

Videos (LLM-only methods): every frame's patch grid is pooled bilinearly to half its
side (27 x 27 -> 14 x 14 on the 7B) and the video ends with one newline, so a video is
one segment of ``frames x pooled + 1`` tokens, pruned together by the LLM stages. Like
any segment it keeps the reference image's share of its tokens, which is what planning
each frame as a crop would give. Methods with an encoder stage refuse videos (a
``ValueError`` before the tower runs): the pooling needs every frame's full patch grid,
and no per-frame rule of the release exists to follow.

``positions="keep"`` works without an encoder stage; with one it is refused at
``apply()`` (the release layout has no original position for unpadded or downsized
patches).

Patch ids (:class:`~visiondrop.report.PruningReport`): crop ``c`` (0 = base) patch ``p``
is ``c * patches_per_crop + p``; a newline is ``NEWLINE`` (-2); a token of a downsized
grid is ``BLENDED`` (-3); in a video, frame ``f`` pooled token ``p`` is
``f * pooled_per_frame + p`` (ids on the pooled grid, not the encoder's patches).

Under ``generate()`` transformers encodes images and videos before the prefill and
does not pass ``image_sizes`` or ``batch_num_images`` on: the adapter's
``pack_image_features`` and ``get_video_features`` (instance attributes, removed with
the handle) record what the prefill needs.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from transformers.models.llava_onevision.modeling_llava_onevision import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)

from ..core.layout import Segment
from ..methods.base import PruningMethod
from ..schedule import Schedule
from .base import plan_per_unit
from .guards import InstanceAttribute
from .llava import LlavaAdapter, find_segments
from .llava_next import NEWLINE, LlavaNextAdapter

BLENDED = -3  # a token of a bilinearly downsized tile grid: a blend of several patches


class ImageKey(NamedTuple):
    """One image as the packing sees it; ``crops`` 1: an image of a multi-image prompt."""

    height: int
    width: int
    crops: int


class VideoKey(NamedTuple):
    frames: int


class LlavaOnevisionAdapter(LlavaNextAdapter):
    model_classes = ("LlavaOnevisionForConditionalGeneration",)
    options = {"newline": ("drop", "end")}

    def __init__(self, model) -> None:
        # LLaVA-NeXT's own checks require a CLIP tower with [CLS]; OneVision's has none.
        LlavaAdapter.__init__(self, model)
        if self.has_cls or self.strategy != "full":
            raise ValueError(f"model: LLaVA-OneVision is supported with a SigLIP tower without [CLS] and "
                             f"vision_feature_select_strategy='full', got {type(self.tower).__name__} and "
                             f"{self.strategy!r}")
        config = model.config
        vision = config.vision_config
        self.crop_size = vision.image_size
        self.side = vision.image_size // vision.patch_size
        self.pinpoints = [list(p) for p in config.image_grid_pinpoints]
        self.units = max(h // self.crop_size * (w // self.crop_size) for h, w in self.pinpoints) + 1
        self.aspect_ratio = config.vision_aspect_ratio
        self.pooled_per_frame = math.ceil(self.side / 2) ** 2
        self.video_token_id = config.video_token_id
        self.newline = "drop"
        self._sizes = None
        self._images: list[ImageKey] | None = None  # the last image pass's
        self._frames: int | None = None  # the last video pass's
        self._layouts: dict = {}

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        runtime, schedule = plan_per_unit(method, self.geometry(), self.units, what="crops")
        if schedule.encoder is not None and getattr(method.config, "positions", "reindex") == "keep":
            raise ValueError("positions='keep' is not supported on LLaVA-OneVision with an encoder stage: the "
                             "release's crop layout has no original position for the patches transformers unpads "
                             "or downsizes; use positions='reindex' (the release's rule)")
        return runtime, schedule

    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        handles = super().install(method, schedule, positions)
        original = type(self.base).get_video_features.__get__(self.base)

        @functools.wraps(original)  # generate() reads the signature to pre-encode videos
        def get_video_features(*args, **kwargs):
            pixels = kwargs["pixel_values_videos"] if "pixel_values_videos" in kwargs else args[0]
            self._check_video_supported()
            self._frames = pixels.shape[1]
            return original(*args, **kwargs)

        handles.append(InstanceAttribute(self.base, "get_video_features", get_video_features))
        return handles

    def _check_video_supported(self) -> None:
        if self.schedule.encoder is not None:
            pooled = math.ceil(self.side / 2)
            raise ValueError(f"video: method {self.method.name!r} prunes in the vision encoder, which LLaVA-OneVision "
                             f"videos do not support: transformers pools every frame's {self.side} x {self.side} "
                             f"patch grid to {pooled} x {pooled}, which needs the full grid; use an LLM-only method "
                             "(fastv, pdrop, pdrop-visual, sparsevlm, or visiondrop with encoder_stage=False)")

    # ------------------------------------------------------------ image sizes
    def _crops(self, image: ImageKey) -> int:
        return image.crops

    def _image_sizes(self, kwargs) -> list[ImageKey]:
        sizes = kwargs.get("image_sizes")
        if sizes is None:
            if self._images is None:
                raise ValueError("image_sizes: LLaVA-OneVision needs each image's size to locate its tokens")
            return self._images
        per_row = kwargs.get("batch_num_images")
        sizes = sizes.tolist()
        if per_row is None:  # transformers' rule: every image is tiled
            anyres = [True] * len(sizes)
        else:
            anyres = [n == 1 for n in torch.as_tensor(per_row).tolist() for _ in range(n)]
        return [ImageKey(int(h), int(w), self._anyres_crops((h, w)) if tiled else 1)
                for (h, w), tiled in zip(sizes, anyres)]

    def _anyres_crops(self, size) -> int:
        return image_size_to_num_patches(list(size), self.pinpoints, self.crop_size)

    def _packed_ids(self, key) -> torch.Tensor:
        """Patch ids of transformers' packed layout of one image or video."""
        if key not in self._layouts:
            if isinstance(key, VideoKey):
                ids = torch.arange(key.frames * self.pooled_per_frame)
                self._layouts[key] = torch.cat([ids, torch.tensor([NEWLINE])])
            else:
                self._layouts[key] = self._packed_image_ids(key)
        return self._layouts[key]

    def _packed_image_ids(self, image: ImageKey) -> torch.Tensor:
        """Transformers' own ``pack_image_features`` run on ids instead of features."""
        per_crop = self.llm_tokens
        ids = torch.arange(image.crops * per_crop, dtype=torch.float64).view(image.crops, per_crop, 1)
        newline = torch.tensor([float(NEWLINE)], dtype=torch.float64)
        packed, _ = self._original_pack([ids], torch.tensor([[image.height, image.width]]), image_newline=newline,
                                        vision_aspect_ratio=self.aspect_ratio)
        packed = packed[0][:, 0]
        if image.crops > 1 and self._downsized(image):
            grid = packed[per_crop:]
            packed[per_crop:] = torch.where(grid == NEWLINE, grid, torch.full_like(grid, BLENDED))
        return packed.round().long()

    def _downsized(self, image: ImageKey) -> bool:
        """Whether transformers shrinks this image's unpadded tile grid (``pack_image_features``'
        ``anyres_max_N`` rule)."""
        rows, cols = get_anyres_image_grid_shape((image.height, image.width), self.pinpoints, self.crop_size)
        grid = unpad_image(torch.empty(1, rows * self.side, cols * self.side),
                           torch.tensor([image.height, image.width]))
        most = int(self.aspect_ratio.strip("anyres_max_"))  # transformers' parsing
        return math.sqrt(grid.shape[1] * grid.shape[2] / (most * self.side ** 2)) > 1.1

    # ------------------------------------------------------------ the prefill
    def _image_segments(self, input_ids: torch.Tensor, kwargs) -> list[Segment]:
        """Every image's and every video's placeholders in sequence order; their keys
        (:class:`ImageKey`, :class:`VideoKey`) in ``_prefill_sizes``."""
        images = super()._image_segments(input_ids, kwargs)
        found = list(zip(images, self._prefill_sizes)) if images else []
        found += self._video_segments(input_ids, kwargs)
        found.sort(key=lambda item: (item[0].row, item[0].start))
        self._prefill_sizes = [key for _, key in found]
        return [segment for segment, _ in found]

    def _video_segments(self, input_ids: torch.Tensor, kwargs) -> list[tuple[Segment, VideoKey]]:
        flags = input_ids == self.video_token_id
        if not bool(flags.any()):
            return []
        self._check_video_supported()
        pixels = kwargs.get("pixel_values_videos")
        frames = pixels.shape[1] if pixels is not None else self._frames
        if frames is None:
            raise ValueError("pixel_values_videos: LLaVA-OneVision needs the videos' frame count to locate their "
                             "tokens")
        key = VideoKey(frames)
        length = frames * self.pooled_per_frame + 1
        return [(segment, key) for segment in find_segments(flags, length, "video")]

    # ------------------------------------------------ the release's crop layout
    def _pack_image_features(self, image_features, image_sizes, image_newline=None,
                             vision_aspect_ratio="anyres_max_9"):
        """Replaces ``pack_image_features`` on this model instance (OneVision's signature):
        the release's crop layout with an encoder stage, transformers' own without one.
        Records each image's size and crop count for the prefill."""
        self._images = [ImageKey(int(h), int(w), features.shape[0])
                        for features, (h, w) in zip(image_features, image_sizes.tolist())]
        if self.schedule.encoder is None:
            return self._original_pack(image_features, image_sizes, image_newline=image_newline,
                                       vision_aspect_ratio=vision_aspect_ratio)
        return super()._pack_image_features(image_features, image_sizes, self.strategy, image_newline=image_newline)
