"""Shared pieces of the text-guided methods (FastV, PyramidDrop): the score of the
last instruction token, and the plan of an LLM-only schedule."""

from __future__ import annotations

import torch

from ..core.scoring import text_query_scores
from ..schedule import BudgetInfeasible, Schedule, check_layers, scale_layers, schedule_from_budget
from .base import DecoderStage, ModelGeometry, check_budget


def last_token_scores(stage: DecoderStage) -> torch.Tensor:
    """``(S, N)``: attention of each row's last instruction token to the visual tokens,
    softmax over the whole causal row, mean over heads (FastV, PyramidDrop)."""
    last = stage.last_columns[:, None]
    queries = stage.project_queries(last)
    return text_query_scores(queries, stage.keys, stage.scaling, stage.query_mask(last), stage.visual_columns)


def llm_only_plan(name: str, budget, schedule, layers, default_layers: tuple[int, ...],
                  geometry: ModelGeometry) -> Schedule:
    """All visual tokens enter the LLM; stages before ``layers`` keep a geometric
    sequence of counts whose average over decoder layers is ``budget``."""
    if schedule is not None:
        raise ValueError(f"schedule: method {name!r} takes budget=... (and layers=...); schedule=... is not "
                         "supported")
    if budget is None:
        raise ValueError(f"budget: method {name!r} needs budget=... (visual tokens averaged over LLM layers)")
    check_budget(budget, geometry.llm_tokens)
    num_layers = geometry.num_layers
    if layers is None:
        stage_layers = scale_layers(default_layers, num_layers)
    else:
        stage_layers = check_layers(layers, num_layers)
    try:
        planned = schedule_from_budget(budget, num_layers, geometry.llm_tokens, encoder_stage=False,
                                       contextual_ratio=0.0, layers=stage_layers)
    except BudgetInfeasible as error:
        raise BudgetInfeasible(f"budget: {error} (method {name!r}, stages before layers {list(stage_layers)})"
                               ) from None
    return planned.validated(num_layers, geometry.llm_tokens, geometry.llm_tokens)
