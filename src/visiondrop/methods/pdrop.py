"""PyramidDrop (Xing et al., CVPR 2025) and its visual-only twin, the controlled study
of the VisionDrop paper (Figure 2).

- ``pdrop`` scores: attention of the last instruction token to each visual token,
  computed with the pruning layer's own input norm, q/k projections and RoPE on the
  sequence entering it (softmax over the whole causal row, float32, mean over heads).
- ``pdrop-visual`` scores: VisionDrop's visual-to-visual attention (visual queries
  only), everything else identical.
- Where: before layers 2, 8, 16, 24 of a 32-layer LM (scaled with depth); all N visual
  tokens enter the LLM; dropped tokens are discarded (no merging); prefill only.
- Budget: stage counts N x lambda^s (s = 1..4) with lambda solved so that the average
  over decoder layers is B. The release ships only [8, 16, 24] with lambda = 0.5 (an
  average of 270 on LLaVA-1.5-7B); for budgets 192/128/64 its maintainer suggests
  adding an early layer and solving lambda, which is what we do.
- Positions: renumbered after each stage (release), ``positions="reindex"``.

Differences from the release (Cooperx521/PyramidDrop): it runs batch size 1 with
right padding; here batches of any padding work, each row scored by its own last token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.merging import contextual_merge
from ..core.scoring import visual_query_scores
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec
from . import register_method
from ._text import last_token_scores, llm_only_plan
from .base import DecoderStage, ModelGeometry, PruningMethod, Reduction, check_positions

PDROP_LAYERS = (2, 8, 16, 24)  # of a 32-layer LM


@dataclass
class PyramidDropConfig:
    """Options of :class:`PyramidDrop` and :class:`PyramidDropVisual`.

    Attributes:
        budget: visual tokens averaged over decoder layers.
        schedule: not supported (must stay None).
        layers: decoder layers whose input each stage prunes; None: 2, 8, 16, 24 of a
            32-layer LM, in proportion on others.
        positions: "reindex" (release) or "keep".
    """

    budget: int | None = None
    schedule: Schedule | None = None
    layers: tuple[int, ...] | None = None
    positions: str = "reindex"


@register_method
class PyramidDrop(PruningMethod):
    name = "pdrop"
    summary = "text-guided: last instruction token's attention, drop geometrically before layers 2, 8, 16, 24"
    Config = PyramidDropConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        return llm_only_plan(self.name, cfg.budget, cfg.schedule, cfg.layers, PDROP_LAYERS, geometry)

    def scores(self, stage: DecoderStage):
        return last_token_scores(stage)

    def reduce_llm(self, stage: DecoderStage, spec: StageSpec) -> Reduction:
        dominant = select_dominant(self.scores(stage), spec.dominant)
        return Reduction(dominant, contextual_merge(stage.hidden, stage.hidden, dominant, 0))


@register_method
class PyramidDropVisual(PyramidDrop):
    name = "pdrop-visual"
    summary = "PyramidDrop's schedule with visual-only scores (VisionDrop's controlled study, Figure 2)"

    def scores(self, stage: DecoderStage):
        queries = stage.project_queries(stage.visual_columns)
        return visual_query_scores(queries, stage.keys, stage.scaling, stage.key_mask, stage.visual_columns)
