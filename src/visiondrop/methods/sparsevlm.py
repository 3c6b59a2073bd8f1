"""SparseVLM (Zhang et al., ICML 2025), as its v1.5 release (the ICML version).

- Raters: once per prompt, from the embeddings entering the LM: the text tokens after
  the image whose relevance to the visual tokens is above the mean
  (:func:`~visiondrop.core.recycling.select_raters`).
- Scores: attention from the raters to each visual token in layer l (softmax over the
  whole causal row, mean over heads and raters), recomputed from layer l's own
  projections; the tokens are pruned on layer l's output, i.e. the input of l + 1.
- Where: after layers 2, 6 and 15 of a 32-layer LM (before 3, 7, 16; scaled with
  depth); all N visual tokens enter the LLM; prefill only.
- Recycling: of each stage's pruned tokens, the top 30 % (+1) by score are clustered
  (DPC-KNN) into 10 % (+1) tokens, each the mean of its cluster, placed after the kept
  tokens (:func:`~visiondrop.core.recycling.recycle`).
- Budget: the release ships fixed kept counts for 192/128/64 measured by its own
  convention (each pruning layer counted with its post-pruning count); they average
  206.5/145.4/82.3 tokens by ours (tokens entering each layer). We fit the stage totals
  (kept + recycled) geometrically so that our average is B, like every other method.
- Positions: renumbered after each stage (release), ``positions="reindex"``.

Differences from the release (Gumpest/SparseVLMs v1.5): batch size 1 there, any batch
here; fp16 attention there, float32 scores here; random tie-breaking noise in the
clustering there, index order here. The paper's rank-adaptive ratio is not in the
release (v1.5 uses fixed counts), so it is not here either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.merging import ContextualMerge
from ..core.recycling import recycle, recycled_count, select_raters
from ..core.scoring import text_query_scores
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec
from . import register_method
from ._text import llm_only_plan
from .base import DecoderStage, ModelGeometry, PruningMethod, Reduction, check_positions

SPARSEVLM_LAYERS = (3, 7, 16)  # inputs pruned on a 32-layer LM (after layers 2, 6, 15)


@dataclass
class SparseVLMConfig:
    """Options of :class:`SparseVLM`.

    Attributes:
        budget: visual tokens averaged over decoder layers.
        schedule: not supported (must stay None).
        layers: decoder layers whose input each stage prunes (scored by the layer
            before); None: 3, 7, 16 of a 32-layer LM, in proportion on others.
        positions: "reindex" (release) or "keep".
        recycle_ratio: share of each stage's pruned tokens that are recycled (+1).
        cluster_ratio: clusters per recycled token (+1).
    """

    budget: int | None = None
    schedule: Schedule | None = None
    layers: tuple[int, ...] | None = None
    positions: str = "reindex"
    recycle_ratio: float = 0.3
    cluster_ratio: float = 0.1


@register_method
class SparseVLM(PruningMethod):
    name = "sparsevlm"
    summary = "text-guided: attention of relevant text raters, prune after layers 2, 6, 15, recycle pruned tokens"
    Config = SparseVLMConfig
    fixed_shapes = False  # how many raters a prompt has depends on its text (select_raters)
    score_layer_offset = -1

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        for name in ("recycle_ratio", "cluster_ratio"):
            if not 0 <= getattr(cfg, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
        totals = llm_only_plan(self.name, cfg.budget, cfg.schedule, cfg.layers, SPARSEVLM_LAYERS, geometry)
        stages, entering = [], geometry.llm_tokens
        for stage in totals.llm:  # split each stage's total into kept + recycled
            kept = stage.total
            while kept > 1 and kept + self._recycled(entering - kept) > stage.total:
                kept -= 1
            stages.append(StageSpec(kept, min(self._recycled(entering - kept), entering - kept)))
            entering = stages[-1].total
        return Schedule(llm=tuple(stages), layers=totals.layers).validated(
            geometry.num_layers, geometry.llm_tokens, geometry.llm_tokens)

    def _recycled(self, pruned: int) -> int:
        return recycled_count(pruned, self.config.recycle_ratio, self.config.cluster_ratio)

    def prepare_llm(self, entry: DecoderStage) -> None:
        columns = torch.arange(entry.row_mask.shape[1], device=entry.row_mask.device)
        after_image = columns[None, :] > entry.visual_columns[:, -1:]
        text = entry.row_mask & ~entry.row_visual & after_image
        entry.memo["raters"] = select_raters(entry.hidden, entry.row_hidden, text)  # (S, L) at LM entry

    def reduce_llm(self, stage: DecoderStage, spec: StageSpec) -> Reduction:
        raters = stage.memo["raters"]
        origin = stage.origins.clamp(min=0)
        is_rater = raters.gather(1, origin) & (stage.origins >= 0)  # (S, L) where the raters are now
        count = int(is_rater.sum(1).max())
        order = torch.sort(is_rater.long(), dim=1, descending=True, stable=True).indices[:, :max(count, 1)]
        weights = is_rater.gather(1, order)
        scores = text_query_scores(stage.project_queries(order), stage.keys, stage.scaling,
                                   stage.query_mask(order), stage.visual_columns, weights)
        dominant = select_dominant(scores, spec.dominant)
        num_segments, num_tokens = scores.shape
        pruned_mask = torch.ones_like(scores, dtype=torch.bool).scatter_(1, dominant, False)
        pruned = torch.arange(num_tokens, device=scores.device).expand(num_segments, -1)[pruned_mask]
        pruned = pruned.view(num_segments, num_tokens - spec.dominant)
        width = stage.hidden.shape[-1]
        tokens, picked, assignment, centres = recycle(
            stage.hidden.gather(1, pruned[..., None].expand(-1, -1, width)), scores.gather(1, pruned),
            self.config.recycle_ratio, self.config.cluster_ratio)
        merged_into = torch.full((num_segments, num_tokens), -1, dtype=torch.long, device=scores.device)
        merged_into.scatter_(1, pruned.gather(1, picked), assignment)
        targets = pruned.gather(1, picked.gather(1, centres))
        return Reduction(dominant, ContextualMerge(tokens.to(stage.hidden.dtype), targets, merged_into))
