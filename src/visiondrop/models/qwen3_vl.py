"""Qwen3-VL (``Qwen3VLForConditionalGeneration``, and the MoE ``Qwen3VLMoeForConditionalGeneration``,
which differs only in the LM's MLP): a ViT with full attention per image and a 2 x 2 patch
merger, DeepStack, and a Qwen3 LM (per-head q/k norms) with interleaved mRoPE.

Everything is as on Qwen2.5-VL (:mod:`visiondrop.models.qwen2_5_vl`: the encoder stage
after the merger, scores from the last vision block's own attention, shortening before
the LM with explicit mRoPE positions, per-image budgets, the same methods and refusals),
except:

- **Token order.** The tower has no windows: its merged tokens come out in raster order,
  so the scores need no reordering.
- **DeepStack.** Vision blocks ``deepstack_visual_indexes`` feed extra mergers whose
  features (``deepstack_features``, one per level, one row per merged token) are added to
  the visual positions' hidden states after LM layers 0 .. k-1 (k levels). The encoder
  stage reduces every level with the image's own reduction: dominant rows gathered, each
  contextual token's rows merged with the same assignment as its main features
  (:func:`~visiondrop.core.merging.merge_like`), so every kept token gets the features the
  unpruned model would add to it (a merged one, the merge of its members').
- **LLM stages** must come at layer k or later: the injection's mask and features are
  fixed at LM entry, so a sequence shortened before layer k no longer lines up with them.
  Such a schedule (FastV's default layer 2, SparseVLM's first stage) is refused at
  ``apply`` with the layer to use instead; from layer k on nothing else changes.
- **Scores in the LM** apply the attention's ``q_norm`` / ``k_norm`` (in
  :class:`~visiondrop.models.decoder.DecoderPruner`, as the model does before RoPE).
- **Videos.** Qwen3-VL gives a video one placeholder run per temporal step (two frames), with
  timestamp text between the runs; each step is a segment of its own, planned on its token
  count with ``modality="video"`` (the budget is per step, as it is per image), and its encoder
  stage runs on that step's tokens (the tower attends within each step too).
"""

from __future__ import annotations

import functools

import torch

from ..core.merging import merge_like
from ..methods.base import PruningMethod
from ..schedule import Schedule
from .base import ImageCounts
from .qwen2_5_vl import REFUSED, Qwen2_5_VLAdapter

#: the image FLOPs are counted for by default (the bench's Qwen-VL image: 256 merged tokens)
FLOPS_IMAGE_SIZE = (512, 512)


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    model_classes = ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")
    model_name = "Qwen3-VL"
    refused = {name: reason.replace("Qwen2.5-VL", "Qwen3-VL") for name, reason in REFUSED.items()}

    def __init__(self, model) -> None:
        super().__init__(model)
        indexes = getattr(model.config.vision_config, "deepstack_visual_indexes", None) or ()
        self.deepstack_levels = len(indexes)
        self._video_pass = False  # inside get_video_features (see _wrap_features)

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        runtime, schedule = super().plan(method)
        early = [layer for layer in schedule.layers if layer < self.deepstack_levels]
        if early:
            hint = " (fastv: layer=...)" if method.name == "fastv" else ""
            raise ValueError(
                f"schedule: Qwen3-VL adds its DeepStack features to the visual tokens after LM layers 0.."
                f"{self.deepstack_levels - 1}, so LLM stages must come at layer {self.deepstack_levels} or later; "
                f"{method.name} prunes before layer(s) {early}: move them{hint} or give schedule=... explicitly")
        return runtime, schedule

    def image_counts(self, schedule: Schedule | None, image_size=None) -> ImageCounts:
        """One image of ``image_size`` (default 512 x 512), each side rounded to the merged
        grid's 32 px as the processor's ``smart_resize`` does (its pixel limits aside). Its
        stages are planned for its own token count, as a prefill does: a pruned ``schedule``
        needs this adapter's :meth:`plan` first (``model_prefill_flops(method=...)``)."""
        if type(self.model).__name__ != "Qwen3VLForConditionalGeneration":
            raise NotImplementedError("model: FLOPs are modelled for the dense Qwen3-VL only (the MoE LM's "
                                      "active experts are not)")
        height, width = FLOPS_IMAGE_SIZE if image_size is None else image_size
        unit = self.model.config.vision_config.patch_size * self.merge
        tokens = max(1, round(height / unit)) * max(1, round(width / unit))
        layers = len(self.language_model.layers)
        per_layer = [tokens] * layers
        if schedule is not None:
            if getattr(self, "method", None) is None:
                raise ValueError("schedule: Qwen3-VL plans each image's stages for its size; plan the method on "
                                 "this adapter first (model_prefill_flops(model, method=..., budget=...))")
            self.schedule = schedule
            sized = self._segment_schedule(tokens, "image")
            if sized is not None:
                per_layer = sized.tokens_per_layer(layers, self._entry_count(tokens, "image"))
        return ImageCounts(per_layer, 1, tokens, encoder_tokens=tokens * self.merge ** 2)

    # ---------------------------------------------------------------- encoder
    def _raster_order(self, scores, metric, grid):
        return scores, metric  # no windows: already in raster order

    def _reduce_more(self, output, sizes: list[int], reductions: list) -> None:
        """Every DeepStack level follows its image's reduction. transformers >= 5.23 gives
        each level as a tuple of per-image tensors, earlier versions as one tensor."""
        levels = getattr(output, "deepstack_features", None)
        if not levels:
            return
        split = isinstance(levels[0], (tuple, list))
        reduced_levels = []
        for level in levels:
            per_image = list(level) if split else list(level.split(sizes))
            reduced = []
            for features, reduction in zip(per_image, reductions):
                if reduction is None:
                    reduced.append(features)
                    continue
                contextual = merge_like(features[None], reduction.merge)[0]
                reduced.append(torch.cat([features[reduction.dominant[0]], contextual.to(features.dtype)]))
            reduced_levels.append(tuple(reduced) if split else torch.cat(reduced))
        output.deepstack_features = reduced_levels

    def _wrap_features(self, modality: str):
        """As Qwen2.5-VL's, and the video wrapper marks its pass: transformers' own
        ``get_video_features`` calls ``get_image_features`` (the wrapped one), whose
        reduction must then wait for the video's."""
        handle = super()._wrap_features(modality)
        if modality == "video":
            wrapped = vars(self.base)["get_video_features"]

            @functools.wraps(wrapped)
            def get_video_features(*args, **kwargs):
                self._video_pass = True
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    self._video_pass = False

            vars(self.base)["get_video_features"] = get_video_features  # removed by ``handle``, by name
        return handle

    def _reduce_features(self, modality: str, output, grid: torch.Tensor) -> None:
        """Videos: every temporal step is reduced as a unit of its own (a placeholder run),
        then the steps are put back together per video, as transformers splits them."""
        if modality == "image" and self._video_pass:
            return None  # the video wrapper reduces these features
        if modality != "video":
            return super()._reduce_features(modality, output, grid)
        steps = grid[:, 0].tolist()
        step_grid = grid.repeat_interleave(grid[:, 0], dim=0)
        step_grid[:, 0] = 1

        def split_steps(videos):
            return tuple(chunk for video, t in zip(videos, steps) for chunk in video.split(video.shape[0] // t))

        def per_video(chunks):
            grouped, first = [], 0
            for t in steps:
                grouped.append(torch.cat(chunks[first:first + t]))
                first += t
            return tuple(grouped)

        levels = getattr(output, "deepstack_features", None)
        split = bool(levels) and isinstance(levels[0], (tuple, list))
        output.pooler_output = split_steps(output.pooler_output)
        if split:
            output.deepstack_features = [split_steps(level) for level in levels]
        super()._reduce_features(modality, output, step_grid)
        output.pooler_output = per_video(output.pooler_output)
        if split:
            output.deepstack_features = [per_video(level) for level in output.deepstack_features]

    # ------------------------------------------------------------------ model
    def _check_runs(self, runs, kwargs) -> None:
        grid = kwargs.get("video_grid_thw")
        if grid is not None:  # one run per temporal step: check them as grids of t = 1
            steps = grid.repeat_interleave(grid[:, 0], dim=0)
            steps[:, 0] = 1
            kwargs = {**kwargs, "video_grid_thw": steps}
        super()._check_runs(runs, kwargs)

    def _rope_extra(self, kwargs) -> dict:
        return {}  # Qwen3-VL's get_rope_index takes no second_per_grid_ts
