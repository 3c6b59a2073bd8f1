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
- **Videos** are refused at the prefill: Qwen3-VL gives a video one placeholder run per
  temporal step, with timestamp text between them, which this adapter does not map yet.
"""

from __future__ import annotations

import torch

from ..core.merging import merge_like
from ..methods.base import PruningMethod
from ..schedule import Schedule
from .qwen2_5_vl import REFUSED, Qwen2_5_VLAdapter


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    model_classes = ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")
    model_name = "Qwen3-VL"
    modalities = ("image",)
    refused = {name: reason.replace("Qwen2.5-VL", "Qwen3-VL") for name, reason in REFUSED.items()}

    def __init__(self, model) -> None:
        super().__init__(model)
        indexes = getattr(model.config.vision_config, "deepstack_visual_indexes", None) or ()
        self.deepstack_levels = len(indexes)

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

    # ------------------------------------------------------------------ model
    def _check_runs(self, runs, kwargs) -> None:
        if any(modality == "video" for _, modality in runs) or kwargs.get("pixel_values_videos") is not None:
            raise ValueError("pixel_values_videos: videos are not supported with pruning on Qwen3-VL yet (a video is "
                             "one placeholder run per temporal step, with timestamps between); prune images only")
        super()._check_runs(runs, kwargs)

    def _rope_extra(self, kwargs) -> dict:
        return {}  # Qwen3-VL's get_rope_index takes no second_per_grid_ts
