"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): anyres crops (a base image plus
tiles), CLIP tower, Llama-family LM.

The faithful default follows the authors' release (docs/faithfulness.md, "LLaVA-NeXT"):

- the encoder stage runs on every crop on its own with the same (D, C) counts, so an
  image of k crops enters the LLM with k x (D + C) tokens;
- the base crop's tokens come first as they are; the tiles' dominant patches follow in
  row-major order over the whole tiled grid, then the tiles' kept [CLS] tokens, then
  their contextual tokens; no unpadding;
- newline tokens: ``newline="drop"`` (the release: none) or ``"end"`` (one
  ``image_newline`` after each image's tokens, never pruned);
- the LLM stages prune all of an image's visual tokens together.

A budget is planned per crop (:func:`~visiondrop.models.base.plan_per_unit`): B / k_max
for one crop, where k_max is the largest crop count of ``image_grid_pinpoints`` (5 for
LLaVA-NeXT-7B: 2880 = 5 x 576), so the largest image averages B tokens over the LM's
layers and an image with fewer crops the same share (``scale_stages``). Methods without
an encoder stage (FastV, PDrop, SparseVLM) see transformers' own layout (unpadded, with
one newline per row of patches); those newlines are visual tokens they may prune
(patch id ``NEWLINE``).

Patch ids (in :class:`~visiondrop.report.PruningReport`): crop ``c`` (0 = base) patch
``p`` is ``c * patches_per_crop + p``; [CLS] is -1, a newline -2.
"""

from __future__ import annotations

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, image_size_to_num_patches

from ..core.layout import Segment, host_to_device
from ..methods.base import PruningMethod
from ..report import SegmentRecord, StageRecord
from ..schedule import Schedule, scale_stages
from ..timing import machinery
from .base import ImageCounts, plan_per_unit
from .guards import InstanceAttribute
from .llava import LlavaAdapter, placeholder_runs

NEWLINE = -2


class LlavaNextAdapter(LlavaAdapter):
    model_classes = ("LlavaNextForConditionalGeneration",)
    options = {"newline": ("drop", "end")}
    layout_attributes = ("_prefill_sizes",)

    def __init__(self, model) -> None:
        super().__init__(model)
        config = model.config
        self.crop_size = config.vision_config.image_size
        self.pinpoints = [list(p) for p in config.image_grid_pinpoints]
        if self.strategy != "default":
            raise ValueError(f"model: vision_feature_select_strategy={self.strategy!r} is not supported on "
                             "LLaVA-NeXT (its crops are packed as 24 x 24 grids without [CLS])")
        self.units = max(h // self.crop_size * (w // self.crop_size) for h, w in self.pinpoints) + 1
        self.newline = "drop"
        self._sizes: list[tuple[int, int]] | None = None  # image sizes of the last encoder pass
        self._prefill_sizes: list | None = None  # each image's size (its key on OneVision), in sequence order
        self._layouts: dict[tuple[int, int], torch.Tensor] = {}

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        runtime, schedule = plan_per_unit(method, self.geometry(), self.units, what="crops")
        if schedule.encoder is not None and getattr(method.config, "positions", "reindex") == "keep":
            raise ValueError("positions='keep' is not supported on LLaVA-NeXT with an encoder stage: the release's "
                             "crop layout has no original position for the patches transformers unpads away; "
                             "use positions='reindex' (the release's rule)")
        return runtime, schedule

    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        handles = super().install(method, schedule, positions)
        original = type(self.base).pack_image_features.__get__(self.base)
        self._original_pack = original
        handles.append(InstanceAttribute(self.base, "pack_image_features", self._pack_image_features))
        return handles

    # ------------------------------------------------------------ image sizes
    def _crops(self, size) -> int:
        return image_size_to_num_patches(list(size), self.pinpoints, self.crop_size)

    def _packed_ids(self, size: tuple[int, int]) -> torch.Tensor:
        """Patch ids of transformers' packed layout of one image (unpadded, newlines):
        its own ``pack_image_features`` run on ids instead of features."""
        if size not in self._layouts:
            crops, per_crop = self._crops(size), self.llm_tokens
            ids = torch.arange(crops * per_crop, dtype=torch.float64).view(crops, per_crop, 1)
            newline = torch.tensor([float(NEWLINE)], dtype=torch.float64)
            pack = type(self.base).pack_image_features.__get__(self.base)  # transformers' own, hooked or not
            packed, _ = pack([ids], torch.tensor([size]), self.strategy, image_newline=newline)
            self._layouts[size] = packed[0][:, 0].round().long()
        return self._layouts[size]

    def _image_sizes(self, kwargs) -> list[tuple[int, int]]:
        sizes = kwargs.get("image_sizes")
        if sizes is not None:
            return [tuple(int(v) for v in size) for size in sizes.tolist()]
        if self._sizes is None:
            raise ValueError("image_sizes: LLaVA-NeXT needs each image's size to locate its tokens")
        return self._sizes

    # ------------------------------------------------------------ the prefill
    def _image_segments(self, input_ids: torch.Tensor, kwargs) -> list[Segment]:
        flags = input_ids == self.image_token_id
        if not bool(flags.any()):
            return []
        sizes = self._image_sizes(kwargs)
        lengths = [len(self._packed_ids(size)) for size in sizes]
        segments, image = [], 0
        for row, start, end in placeholder_runs(flags):
            while start < end:
                if image >= len(lengths) or start + lengths[image] > end:
                    raise ValueError(f"input_ids: the image tokens in row {row} do not match image_sizes "
                                     f"({len(lengths)} images of {lengths} tokens)")
                segments.append(Segment(row, start, lengths[image]))
                start += lengths[image]
                image += 1
        if image != len(lengths):
            raise ValueError(f"input_ids: {image} images found but image_sizes has {len(lengths)}")
        self._prefill_sizes = sizes
        return segments

    def _entry_counts(self, segments: list[Segment]) -> list[int]:
        if self.schedule.encoder is None:
            return [segment.length for segment in segments]
        extra = 1 if self.newline == "end" else 0
        return [self._crops(size) * self.schedule.encoder.total + extra for size in self._prefill_sizes]

    def _llm_segments(self, entry_segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
        if self.schedule.encoder is None or self.newline == "drop":
            return entry_segments
        return tuple(Segment(s.row, s.start, s.length - 1) for s in entry_segments)

    def _reference_entry(self, schedule: Schedule) -> int:
        per_crop = schedule.encoder.total if schedule.encoder is not None else self.llm_tokens
        return self.units * per_crop

    def image_counts(self, schedule: Schedule | None, image_size=None) -> ImageCounts:
        """``image_size`` (H, W) defaults to the largest grid of the pinpoints (672 x 672 on
        the 7B: 5 crops, 2928 tokens with newlines)."""
        size = tuple(image_size) if image_size is not None else tuple(max(self.pinpoints, key=lambda p: p[0] * p[1]))
        crops, layers = self._crops(size), len(self.language_model.layers)
        packed = len(self._packed_ids(size))
        if schedule is None:
            return ImageCounts([packed] * layers, crops, crops * self.llm_tokens)
        entry = packed if schedule.encoder is None else crops * schedule.encoder.total
        stages = scale_stages(schedule.llm, self._reference_entry(schedule), entry)
        newline = 1 if schedule.encoder is not None and self.newline == "end" else 0
        counts = Schedule(encoder=None, llm=stages, layers=schedule.layers).tokens_per_layer(layers, entry)
        return ImageCounts([n + newline for n in counts], crops, crops * self.llm_tokens)

    def _segment_stages(self, segments) -> list | None:
        reference = self._reference_entry(self.schedule)
        if all(s.length == reference for s in segments):
            return None
        return [scale_stages(self.schedule.llm, reference, s.length) for s in segments]

    # ------------------------------------------------ the release's crop layout
    @machinery
    def _pack_image_features(self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None):
        """Replaces ``pack_image_features`` on this model instance: with an encoder stage,
        lay each image's reduced crops out as the release does; without one, transformers'
        own packing. Records the image sizes (``generate()`` encodes before the prefill
        and does not pass them on)."""
        self._sizes = [tuple(int(v) for v in size) for size in image_sizes.tolist()]
        if self.schedule.encoder is None:
            if image_newline is None:
                return self._original_pack(image_features, image_sizes, vision_feature_select_strategy)
            return self._pack_as_transformers(image_features, image_newline)
        reduction, encoder_patches, out_patches = self._pending
        spec = self.schedule.encoder
        side = self.crop_size // self.model.config.vision_config.patch_size
        per_crop = side * side
        images, lengths, patch_lists, first = [], [], [], 0
        for features, size in zip(image_features, image_sizes.tolist()):
            crops = features.shape[0]
            patches = out_patches[first:first + crops]  # (crops, D + C) local patch ids, -1 = CLS
            first += crops
            tokens = [features[0]]
            ids = [patches[0]]
            if crops > 1:
                rows, cols = get_anyres_image_grid_shape(size, self.pinpoints, self.crop_size)
                dominant = patches[1:, :spec.dominant]
                tile = torch.arange(1, crops, device=patches.device)[:, None].expand_as(dominant)
                tile_row, tile_col = (tile - 1) // cols, (tile - 1) % cols
                patch = dominant.clamp(min=0)
                spatial = (tile_row * side + patch // side) * (cols * side) + tile_col * side + patch % side
                # the tiles' [CLS] tokens go after every patch, in tile order
                key = torch.where(dominant < 0, rows * cols * per_crop + tile, spatial).flatten()
                order = torch.argsort(key, stable=True)
                width = features.shape[-1]
                context = patches[1:, spec.dominant:]
                context_tile = torch.arange(1, crops, device=patches.device)[:, None].expand_as(context)
                tokens += [features[1:, :spec.dominant].reshape(-1, width)[order],
                           features[1:, spec.dominant:].reshape(-1, width)]
                ids += [(dominant + tile * per_crop).masked_fill(dominant < 0, -1).flatten()[order],
                        (context + context_tile * per_crop).masked_fill(context < 0, -1).flatten()]
            if self.newline == "end" and image_newline is not None:
                tokens.append(image_newline[None].to(features))
            packed = torch.cat(tokens)
            images.append(packed)
            lengths.append(packed.shape[0])
            patch_lists.append(torch.cat(ids))
        self._release_patches = patch_lists
        return images, host_to_device(torch.tensor(lengths, dtype=torch.long), image_features[0].device)

    def _pack_as_transformers(self, image_features, image_newline):
        """transformers' packed layout (unpadded crops, a newline after each row of
        patches) as one gather per image along :meth:`_packed_ids`: no device-to-host
        copy or sync (transformers' own copies the lengths from host memory), so a CUDA
        graph can hold it (``apply(..., cuda_graphs=True)``)."""
        images, lengths = [], []
        for features, size in zip(image_features, self._sizes):
            ids = self._packed_ids(size)
            flat = features.reshape(-1, features.shape[-1])
            # the newline is the row after the last patch
            index = torch.where(ids == NEWLINE, flat.shape[0], ids)
            table = torch.cat([flat, image_newline[None].to(flat)])
            images.append(table[host_to_device(index, flat.device)])
            lengths.append(len(ids))
        return images, host_to_device(torch.tensor(lengths, dtype=torch.long), image_features[0].device)

    def _entry_patches(self, segments, device) -> tuple[list[torch.Tensor], int]:
        if self.schedule.encoder is None:
            patches = [host_to_device(self._packed_ids(size), device) for size in self._prefill_sizes]
            return patches, [torch.arange(len(p), device=device) for p in patches]
        if self._pending is None:
            raise RuntimeError("visiondrop: the image tokens entered the LM without an encoder pass")
        reduction, encoder_patches, out_patches = self._pending
        spec = self.schedule.encoder
        record = StageRecord("encoder", None, encoder_patches.shape[1], spec.dominant, spec.contextual)
        crop = 0
        for image, (segment, size) in enumerate(zip(segments, self._prefill_sizes)):
            for _ in range(self._crops(size)):
                record.segments.append(SegmentRecord(
                    row=segment.row, image=image, dominant=reduction.dominant[crop],
                    targets=reduction.merge.targets[crop], merged_into=reduction.merge.merged_into[crop],
                    input_patches=encoder_patches[crop], output_patches=out_patches[crop]))
                crop += 1
        self.report.stages.insert(0, record)
        return [p.to(device) for p in self._release_patches], None
