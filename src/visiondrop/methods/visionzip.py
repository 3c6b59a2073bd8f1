"""VisionZip (Yang et al., arXiv 2412.04467): dominant tokens by [CLS] attention plus
contextual tokens merged from the rest, once, in the vision encoder. Follows the
release (dvlab-research/VisionZip, ``visionzip/``).

- Scores: attention from [CLS] to every token at the encoder's feature layer (the
  layer whose output feeds the projector: layer -2 for LLaVA-1.5), mean over heads.
- Where: one stage at the projector's input; every decoder layer sees B tokens.
- Budget: B = D + C with C = round(5 B / 32) (half up, within [1, B - 1]), the
  release's ratio: 64, 128, 192 give 54+10, 108+20, 162+30. Or ``dominant`` and
  ``contextual`` explicitly. D counts the [CLS] token, which reaches the LLM.
- Merging: C targets at a uniform stride over the non-dominant tokens, every other
  one joins the target with the most similar head-averaged key; a contextual token
  is target + mean(members) (:func:`~visiondrop.core.merging.contextual_merge`).

Differences: the release sums attention over heads (we average: the same ranking),
takes it in fp16 from eager attention (we recompute it in fp32 from the layer's own
q/k, on any backend), and breaks ties by ``topk`` (we: the lower index). The paper
describes a plain average of each target's members; the release, and we, add the
target to its members' mean. Encoders without [CLS] (SigLIP) are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.merging import contextual_merge
from ..core.scoring import cls_attention_scores
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec
from . import register_method
from .base import EncoderStage, ModelGeometry, PruningMethod, Reduction, check_budget, check_positions


@dataclass
class VisionZipConfig:
    """Options of :class:`VisionZip`.

    Attributes:
        budget: visual tokens per image at the LLM input, split into D + C by the
            release's ratio (exclusive with ``dominant``/``contextual``).
        schedule: not supported (must stay None).
        dominant: D, dominant tokens including the [CLS] token (with ``contextual``).
        contextual: C, merged contextual tokens (with ``dominant``).
        positions: "reindex" (positions renumbered 0..len-1, as the release) or "keep".
    """

    budget: int | None = None
    schedule: Schedule | None = None
    dominant: int | None = None
    contextual: int | None = None
    positions: str = "reindex"


def split_budget(budget: int) -> StageSpec:
    """The release's D + C split of ``budget`` (54+10, 108+20, 162+30 for 64, 128, 192)."""
    contextual = min(max(1, (5 * budget + 16) // 32), budget - 1)
    return StageSpec(budget - contextual, contextual)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@register_method
class VisionZip(PruningMethod):
    name = "visionzip"
    summary = "encoder: D tokens by [CLS] attention (CLS kept) + C contextual tokens merged from the rest"
    Config = VisionZipConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        if cfg.schedule is not None:
            raise ValueError("schedule: method 'visionzip' takes budget=... or dominant=... and contextual=... "
                             "(one stage in the encoder); schedule=... is not supported")
        if not geometry.has_cls:
            raise ValueError("visionzip needs an encoder with a [CLS] token; this model's encoder has none")
        available = min(geometry.llm_tokens, geometry.encoder_tokens)
        if cfg.dominant is None and cfg.contextual is None:
            if cfg.budget is None:
                raise ValueError("budget: method 'visionzip' needs budget=... or dominant=... and contextual=...")
            check_budget(cfg.budget, available)
            spec = split_budget(cfg.budget)
        else:
            if cfg.budget is not None:
                raise ValueError("budget: give budget=... or dominant=... and contextual=..., not both")
            for name, value, low in (("dominant", cfg.dominant, 1), ("contextual", cfg.contextual, 0)):
                if not _is_int(value) or value < low:
                    raise ValueError(f"{name} must be an int >= {low}, got {value!r} (give dominant and "
                                     "contextual together; dominant counts the [CLS] token)")
            if cfg.dominant + cfg.contextual > available:
                raise ValueError(f"dominant + contextual = {cfg.dominant + cfg.contextual} exceeds the {available} "
                                 "visual tokens per image of this model")
            spec = StageSpec(cfg.dominant, cfg.contextual)
        return Schedule(encoder=spec).validated(geometry.num_layers, available, geometry.llm_tokens)

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        if not stage.has_cls:
            raise ValueError("visionzip needs an encoder with a [CLS] token")
        scores = cls_attention_scores(stage.queries, stage.keys, stage.scaling)
        dominant = select_dominant(scores, spec.dominant, always_keep=0)
        merge = contextual_merge(stage.hidden, stage.keys.mean(dim=1), dominant, spec.contextual)
        return Reduction(dominant, merge)
