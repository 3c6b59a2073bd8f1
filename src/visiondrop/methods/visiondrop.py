"""VisionDrop (Xu et al., AAAI 2026): visual-only, progressive, with contextual merging.

- Scores: encoder stage, attention from [CLS] to every patch (no CLS: mean attention
  received from all visual tokens); LLM stages, attention from the visual tokens
  only to the visual keys, softmax over the whole sequence (paper Eq. 2-4).
- Where: at the vision encoder's feature layer, and before decoder layers at 1/4,
  1/2, 3/4 of the depth (8, 16, 24 for 32 layers).
- Budget: B = visual tokens averaged over decoder layers; 1.5 x B enter the LLM and
  decay geometrically (see :mod:`visiondrop.schedule`).
- Every stage keeps D dominant tokens and merges the rest into C contextual tokens.

The ablations of the paper's Figure 6 are options: ``llm_scores="text"`` (the last
instruction token's attention instead of visual-only), ``contextual_ratio=0``
(merging off: the non-dominant tokens are dropped), ``encoder_stage=False`` (all
tokens enter the LLM), and ``entry_factor`` / ``contextual_ratio`` for the encoder
retention and the dominant:contextual split. Video (Video-LLaVA, planned per frame)
uses ``video_entry_factor`` = 3 instead of 1.5 (paper, Implementation Details).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.merging import contextual_merge
from ..core.scoring import (
    cls_attention_scores,
    text_query_scores,
    visual_query_scores,
)
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec, schedule_from_budget
from . import register_method
from .base import DecoderStage, EncoderStage, ModelGeometry, PruningMethod, Reduction, check_budget, check_positions

ENCODER_SCORES = ("auto", "cls", "received")
LLM_SCORES = ("visual", "text", "visual-visible")


@dataclass
class VisionDropConfig:
    """Options of :class:`VisionDrop`.

    Attributes:
        budget: visual tokens averaged over decoder layers (exclusive with ``schedule``).
        schedule: an explicit :class:`~visiondrop.schedule.Schedule` instead of a budget.
        positions: "reindex" (release: positions renumbered 0..len-1 after each stage
            and shifted in decode) or "keep" (each kept token keeps its original RoPE
            position; a contextual token takes its target's).
        keep_cls: pass the encoder's [CLS] state on as a dominant token (release quirk
            inherited from VisionZip). False: CLS only scores, patches fill the budget.
        encoder_score: "cls", "received" (mean attention received, for encoders
            without CLS), or "auto" (cls when the encoder has one).
        contextual_ratio: share of each stage's tokens that are contextual (ceil);
            1/8 reproduces the released preset.
        entry_factor: tokens entering the LLM = entry_factor x budget (1.5 images).
        video_entry_factor: the same for video (``geometry.modality == "video"``):
            3 x budget enter the LLM, the paper's rule for video understanding
            (Implementation Details: "1.5x the final count for image understanding
            and 3x for video understanding"); used instead of ``entry_factor``.
        encoder_stage: prune in the vision encoder (False: all tokens enter the LLM and
            only the LLM stages prune; Figure 6 ablation).
        llm_scores: "visual" (paper: visual queries only), "text" (the last
            instruction token as the query, as FastV/PyramidDrop; Figure 6 ablation), or
            "visual-visible" (beyond the paper: visual queries, each key's attention
            averaged over the queries that can see it rather than over all of them, so the
            causal mask does not favour the image's first tokens).
    """

    budget: int | None = None
    schedule: Schedule | None = None
    positions: str = "reindex"
    keep_cls: bool = True
    encoder_score: str = "auto"
    contextual_ratio: float = 1 / 8
    entry_factor: float = 1.5
    video_entry_factor: float = 3.0
    encoder_stage: bool = True
    llm_scores: str = "visual"


@register_method
class VisionDrop(PruningMethod):
    name = "visiondrop"
    summary = "visual-only scores, pruning in the encoder and after LLM layers 1/4, 1/2, 3/4, contextual merging"
    Config = VisionDropConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        if cfg.encoder_score not in ENCODER_SCORES:
            raise ValueError(f"encoder_score must be one of {ENCODER_SCORES}, got {cfg.encoder_score!r}")
        if cfg.encoder_score == "cls" and not geometry.has_cls:
            raise ValueError("encoder_score='cls' needs an encoder with a [CLS] token; this one has none "
                             "(use 'received' or 'auto')")
        if not 0 <= cfg.contextual_ratio < 1:
            raise ValueError(f"contextual_ratio must be in [0, 1), got {cfg.contextual_ratio}")
        if (cfg.budget is None) == (cfg.schedule is None):
            raise ValueError("give exactly one of budget=... or schedule=...")
        if cfg.entry_factor < 1:
            raise ValueError(f"entry_factor must be >= 1, got {cfg.entry_factor}")
        if cfg.video_entry_factor < 1:
            raise ValueError(f"video_entry_factor must be >= 1, got {cfg.video_entry_factor}")
        entry_factor = cfg.video_entry_factor if geometry.modality == "video" else cfg.entry_factor
        if cfg.llm_scores not in LLM_SCORES:
            raise ValueError(f"llm_scores must be one of {LLM_SCORES}, got {cfg.llm_scores!r}")
        if not isinstance(cfg.encoder_stage, bool):
            raise ValueError(f"encoder_stage must be True or False, got {cfg.encoder_stage!r}")
        # The encoder stage may keep CLS, but no more tokens than the image has placeholders.
        encoder_available = min(geometry.llm_tokens,
                                geometry.encoder_tokens - (1 if geometry.has_cls and not cfg.keep_cls else 0))
        if cfg.budget is not None:
            check_budget(cfg.budget, geometry.llm_tokens)
            schedule = schedule_from_budget(
                cfg.budget,
                geometry.num_layers,
                encoder_available if cfg.encoder_stage else geometry.llm_tokens,
                encoder_stage=cfg.encoder_stage,
                entry_factor=entry_factor,
                contextual_ratio=cfg.contextual_ratio,
            )
        else:
            schedule = cfg.schedule
            if not isinstance(schedule, Schedule):
                raise ValueError(f"schedule must be a visiondrop.Schedule, got {type(schedule).__name__}")
        return schedule.validated(geometry.num_layers, encoder_available, geometry.llm_tokens)

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        cfg = self.config
        use_cls = cfg.encoder_score == "cls" or (cfg.encoder_score == "auto" and stage.has_cls)
        scores = cls_attention_scores(stage.queries, stage.keys, stage.scaling) if use_cls else stage.received_scores()
        metric = stage.similarity_keys()
        if stage.has_cls and not cfg.keep_cls:
            # CLS only scores: select and merge among the patches, then re-offset.
            dominant = select_dominant(scores[:, 1:], spec.dominant) + 1
            merge = contextual_merge(stage.hidden[:, 1:], metric[:, 1:], dominant - 1, spec.contextual)
            merge.targets += 1
            merge.merged_into = torch.cat([merge.merged_into.new_full((merge.merged_into.shape[0], 1), -1),
                                           merge.merged_into], dim=1)
            return Reduction(dominant, merge)
        dominant = select_dominant(scores, spec.dominant, always_keep=0 if stage.has_cls else None)
        return Reduction(dominant, contextual_merge(stage.hidden, metric, dominant, spec.contextual))

    def reduce_llm(self, stage: DecoderStage, spec: StageSpec) -> Reduction:
        if self.config.llm_scores == "text":
            last = stage.last_columns[:, None]
            scores = text_query_scores(stage.project_queries(last), stage.keys, stage.scaling,
                                       stage.query_mask(last), stage.visual_columns)
        else:
            queries = stage.project_queries(stage.visual_columns)
            scores = visual_query_scores(queries, stage.keys, stage.scaling, stage.key_mask, stage.visual_columns,
                                         per_visible_query=self.config.llm_scores == "visual-visible")
        dominant = select_dominant(scores, spec.dominant)
        return Reduction(dominant, contextual_merge(stage.hidden, stage.visual_keys(), dominant, spec.contextual))
