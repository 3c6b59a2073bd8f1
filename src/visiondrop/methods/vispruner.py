"""VisPruner (Zhang et al., arXiv 2412.01818): important tokens by [CLS] attention plus
diverse tokens from the rest, once, in the vision encoder. Follows the release
(Theia-4869/VisPruner, ``llava/model/llava_arch.py``).

- Scores: attention from [CLS] to every patch at the encoder's feature layer (layer
  -2 for LLaVA-1.5), mean over heads; [CLS] itself is never kept.
- Where: one stage at the projector's input; every decoder layer sees B tokens.
- Budget: B = T patches; T_imp = int(T x important_ratio) by top attention, and
  T_div = T - T_imp diverse ones: the other patches, in descending attention, go
  through :func:`~visiondrop.core.diversity.remove_duplicates` on the L2-normalised
  feature-layer patch states until T_div remain. All T go on in raster order,
  nothing is merged.

Differences: the release crashes when the residual list has odd length (T_imp odd on
LLaVA-1.5); we handle it. We recompute attention in fp32 from the layer's own q/k on
any backend (the release: fp16 eager attention) and break ties to the lower index.
The paper describes the diverse step only as similarity-based duplicate removal; the
release, and we, use its 8-per-round even/odd bipartite scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.diversity import remove_duplicates
from ..core.merging import contextual_merge
from ..core.scoring import cls_attention_scores
from ..schedule import Schedule, StageSpec
from . import register_method
from .base import EncoderStage, ModelGeometry, PruningMethod, Reduction, check_budget, check_positions


@dataclass
class VisPrunerConfig:
    """Options of :class:`VisPruner`.

    Attributes:
        budget: T, patch tokens per image at the LLM input.
        schedule: not supported (must stay None).
        important_ratio: r in [0, 1]: int(T x r) important tokens, the rest diverse
            (release default 0.5).
        positions: "reindex" (positions renumbered 0..len-1, as the release) or "keep".
    """

    budget: int | None = None
    schedule: Schedule | None = None
    important_ratio: float = 0.5
    positions: str = "reindex"


@register_method
class VisPruner(PruningMethod):
    name = "vispruner"
    summary = "encoder: important patches by [CLS] attention + diverse ones by duplicate removal, no merging"
    Config = VisPrunerConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        if cfg.schedule is not None:
            raise ValueError("schedule: method 'vispruner' takes only budget=... (one stage in the encoder); "
                             "schedule=... is not supported")
        if not geometry.has_cls:
            raise ValueError("vispruner needs an encoder with a [CLS] token; this model's encoder has none")
        ratio = cfg.important_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ValueError(f"important_ratio must be a number in [0, 1], got {ratio!r}")
        if cfg.budget is None:
            raise ValueError("budget: method 'vispruner' needs budget=... (visual tokens per image)")
        available = min(geometry.llm_tokens, geometry.encoder_tokens - 1)  # patches only
        check_budget(cfg.budget, available)
        return Schedule(encoder=StageSpec(cfg.budget, 0)).validated(geometry.num_layers, available,
                                                                     geometry.llm_tokens)

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        if not stage.has_cls:
            raise ValueError("vispruner needs an encoder with a [CLS] token")
        total = spec.dominant
        important = int(total * self.config.important_ratio)  # truncation, as the release
        scores = cls_attention_scores(stage.queries, stage.keys, stage.scaling)[:, 1:]
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        diverse = remove_duplicates(stage.hidden[:, 1:], order[:, important:], total - important)
        dominant = torch.cat([order[:, :important], diverse], dim=1).sort(dim=1).values + 1
        return Reduction(dominant, contextual_merge(stage.hidden, stage.keys.mean(dim=1), dominant, 0))
