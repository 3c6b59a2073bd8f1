"""FastV (Chen et al., ECCV 2024, "An Image is Worth 1/2 Tokens After Layer 2").

- Scores: attention of the last instruction token to each visual token in layer
  K-1 (softmax over the whole causal row, mean over heads), recomputed from that
  layer's own projections on its input: the attention map the release reads.
- Where: once, on the input of decoder layer K (K = 2 on a 32-layer LM, scaled with
  depth); the kept visual tokens stay in order, text is untouched, prefill only.
- Budget: k tokens kept after layer K with (K x N + (L - K) x k) / L = B.
- Positions: the release keeps each kept token's original position (gaps), our
  default ``positions="keep"``; ``"reindex"`` renumbers.

Differences from the release (pkunlp-icler/FastV, KV-cache variant): it scores with
batch row 0 and applies that choice to every row (batch size 1 in practice), needs
eager attention, and hard-codes where the image starts; here every row is scored by
its own last token, on any backend, with the image located from ``input_ids``. The
paper describes the attention received from all tokens; the release, and we, use the
last token's row.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.merging import contextual_merge
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec
from . import register_method
from ._text import last_token_scores, llm_only_plan
from .base import DecoderStage, ModelGeometry, PruningMethod, Reduction, check_positions


@dataclass
class FastVConfig:
    """Options of :class:`FastV`.

    Attributes:
        budget: visual tokens averaged over decoder layers.
        schedule: not supported (must stay None).
        layer: K, the decoder layer whose input is pruned (scored by layer K-1).
            None: 2 on a 32-layer LM, in proportion on others.
        positions: "keep" (release) or "reindex".
    """

    budget: int | None = None
    schedule: Schedule | None = None
    layer: int | None = None
    positions: str = "keep"


@register_method
class FastV(PruningMethod):
    name = "fastv"
    summary = "text-guided: last instruction token's attention in layer K-1, prune once before layer K (2)"
    Config = FastVConfig
    score_layer_offset = -1

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        return llm_only_plan(self.name, cfg.budget, cfg.schedule, cfg.layer, (2,), geometry)

    def reduce_llm(self, stage: DecoderStage, spec: StageSpec) -> Reduction:
        dominant = select_dominant(last_token_scores(stage), spec.dominant)
        return Reduction(dominant, contextual_merge(stage.hidden, stage.hidden, dominant, 0))
