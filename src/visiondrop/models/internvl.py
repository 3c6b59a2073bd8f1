"""InternVL (``InternVLForConditionalGeneration``: InternVL3 and 3.5 as transformers ships
them): an InternViT tower with a [CLS] token, a pixel shuffle that turns each 2 x 2 block of
patches into one token (1,024 patches of a 448-px tile -> 256 tokens), an MLP projector, and a
Qwen2 or Llama LM with 1-D RoPE.

**Tiles.** The processor cuts an image into up to ``max_patches`` 448-px tiles plus a
thumbnail; ``pixel_values`` holds every tile of the batch, and an image is one placeholder run
of 256 tokens per tile (no tile count reaches the model: it is the run's length / 256).

**Encoder stage, at the projector's input** (after the pixel shuffle, before the MLP, as the
LLaVA-1.5 adapter prunes at its projector's input): one stage per tile, on its 256 shuffled
tokens. Scores stay visual-only (paper, "Visual Query Selection", Eq. 2-4): the mean attention
each patch receives from the tile's tokens at the feature layer (``vision_feature_layer``),
from that layer's own normalised queries and keys (any attention backend), summed over the
2 x 2 block each token stands for, as Qwen2.5-VL's scores are summed over its merger's blocks
(the token is the block: it should score what the block receives). The merge keys are the
layer's keys averaged over heads and over the block. The [CLS] token is dropped by the model
(strategy ``"default"``); it still attends and is attended in the tower, so it shares the
softmax, but scores only patches.

**Budgets: tokens per tile.** ``budget=B`` is a tile's visual tokens averaged over the LM's
decoder layers (at most 256); an image of k tiles keeps k x B on average: the encoder stage
keeps D + C tokens of every tile, and the LLM stages prune the image's tokens together, keeping
k times a tile's counts (:meth:`~visiondrop.schedule.Schedule.repeated`, as LLaVA-NeXT's crops).

**Methods.** visiondrop, fastv, pdrop, pdrop-visual, sparsevlm, random. Refused: visionzip and
vispruner (they rank a tile's tokens by [CLS] attention to each; here a token is a 2 x 2 block
after the shuffle, and summing [CLS] attention per block is not their rule), pool (it pools the
encoder's patch grid with its own cell rule; the pixel shuffle already fixes the 16 x 16 grid).

Patch ids (in :class:`~visiondrop.report.PruningReport`): tile ``t`` token ``r * 16 + c`` of an
image is ``t * 256 + r * 16 + c``; a contextual token carries its target's.
"""

from __future__ import annotations

import torch

from ..core.layout import Segment
from ..methods.base import ModelGeometry, PruningMethod
from ..report import SegmentRecord
from ..schedule import Schedule
from ..timing import machinery
from .base import ImageCounts, ModelAdapter
from .llava import LlavaAdapter, placeholder_runs

REFUSED = {
    "visionzip": "visionzip ranks patches by [CLS] attention; InternVL's tokens are 2 x 2 patch blocks after its "
                 "pixel shuffle",
    "vispruner": "vispruner ranks patches by [CLS] attention; InternVL's tokens are 2 x 2 patch blocks after its "
                 "pixel shuffle",
    "pool": "pool averages the encoder's patch grid; InternVL's pixel shuffle already fixes its 16 x 16 grid",
}


class InternVLAdapter(LlavaAdapter):
    model_classes = ("InternVLForConditionalGeneration",)
    layout_attributes = ("_tiles",)

    def __init__(self, model) -> None:  # noqa: PLR0915 (one constructor, read top to bottom)
        ModelAdapter.__init__(self, model)
        config = model.config
        self.base = model.model
        self.tower = self.base.vision_tower
        if getattr(config, "downsample_ratio", 0.5) != 0.5:
            raise ValueError(f"model: downsample_ratio={config.downsample_ratio} is not supported (0.5 only)")
        self.strategy = config.vision_feature_select_strategy
        if self.strategy != "default":
            raise ValueError(f"model: vision_feature_select_strategy={self.strategy!r} is not supported (the "
                             "model's own pixel shuffle needs the [CLS] token dropped)")
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"model: vision_feature_layer={layer!r} (several layers) is not supported")
        layers = self.tower.encoder.layer
        self.feature_layer = layers[layer % (len(layers) + 1) - 1] if layer != -1 else layers[-1]
        self.feature_attention = self.feature_layer.attention
        vision = config.vision_config
        size, patch = vision.image_size, vision.patch_size
        size, patch = (size[0] if isinstance(size, (list, tuple)) else size,
                       patch[0] if isinstance(patch, (list, tuple)) else patch)
        self.side = size // patch  # patches per tile side (32 on InternVL3)
        self.num_patches = self.side ** 2
        self.has_cls = True  # in the tower; dropped before the shuffle
        self.encoder_tokens = self.llm_tokens = self.num_patches // 4  # tokens per tile after the shuffle
        self.patch_offset = 0
        self._init_state(config)
        self._tiles: list[int] = []  # tiles of each image of the current prefill

    def geometry(self) -> ModelGeometry:
        """One tile: its 256 shuffled tokens (no [CLS] among them)."""
        return ModelGeometry(num_layers=len(self.language_model.layers), encoder_tokens=self.llm_tokens,
                             llm_tokens=self.llm_tokens, has_cls=False)

    def image_counts(self, schedule: Schedule | None, image_size=None) -> ImageCounts:
        """One image of one tile (a square image at the tile size: the processor adds no
        thumbnail); other sizes depend on the processor's tiling settings."""
        if image_size is not None:
            raise ValueError("image_size: InternVL's tile count follows its processor's settings; only the "
                             "one-tile image is modelled here")
        return super().image_counts(schedule)

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        if method.name in REFUSED:
            raise ValueError(f"method {method.name!r} is not supported on InternVL: {REFUSED[method.name]}")
        return super().plan(method)

    def _encoder_hooks(self) -> list:
        attention = self.feature_attention
        return [  # after the (optional) q/k norms: what the layer's attention uses
            attention.q_norm.register_forward_hook(self._stash_output("queries")),
            attention.k_norm.register_forward_hook(self._stash_output("keys")),
            self.base.multi_modal_projector.register_forward_pre_hook(self._projector_pre_hook),
        ]

    # --------------------------------------------------------------- encoder
    @machinery
    def _projector_pre_hook(self, module, args):
        # args[0]: (tiles, 256, 4 C), the shuffled tokens; the [CLS] token queries and is
        # attended in the tower (it shares the softmax) but is not scored
        return (self._reduce_blocks(args[0], self.feature_attention, self.side, 2, skip=1),)

    # ----------------------------------------------------------------- model
    def _image_segments(self, input_ids: torch.Tensor, kwargs) -> list[Segment]:
        """One segment per image: a placeholder run of 256 tokens per tile."""
        segments, tiles = [], []
        for row, start, end in placeholder_runs(input_ids == self.image_token_id):
            if (end - start) % self.llm_tokens:
                raise ValueError(f"input_ids: row {row} has a run of {end - start} image tokens, not a multiple of "
                                 f"the {self.llm_tokens} tokens per tile this model uses")
            segments.append(Segment(row, start, end - start))
            tiles.append((end - start) // self.llm_tokens)
        self._tiles = tiles
        return segments

    def _entry_counts(self, segments: list[Segment]) -> list[int]:
        per_tile = self.schedule.encoder.total if self.schedule.encoder is not None else self.llm_tokens
        return [tiles * per_tile for tiles in self._tiles]

    def _segment_stages(self, segments) -> list | None:
        if all(tiles == 1 for tiles in self._tiles):
            return None
        return [self.schedule.repeated(tiles).llm for tiles in self._tiles]

    def _entry_patches(self, segments, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each image's patch ids at LM entry (tile-major), which are also their columns in
        the image's original run; adds the encoder stage's record."""
        if self.schedule.encoder is None:
            patches = [torch.arange(segment.length, device=device) for segment in segments]
            return patches, patches
        reduction, encoder_patches, out_patches, record = self._encoder_record(sum(self._tiles), "tiles")
        patches, tile = [], 0
        for image, (segment, tiles) in enumerate(zip(segments, self._tiles)):
            offsets = torch.arange(tiles, device=out_patches.device)[:, None] * self.llm_tokens
            ids = out_patches[tile:tile + tiles] + offsets  # (tiles, D + C)
            patches.append(ids.flatten().to(device))  # tile by tile, as transformers scatters the features
            for t in range(tile, tile + tiles):
                record.segments.append(SegmentRecord(
                    row=segment.row, image=image, dominant=reduction.dominant[t], targets=reduction.merge.targets[t],
                    merged_into=reduction.merge.merged_into[t], input_patches=encoder_patches[t],
                    output_patches=out_patches[t]))
            tile += tiles
        self.report.stages.insert(0, record)
        return patches, patches
