"""None: keeps every visual token (``apply(model, "none")``; not listed by
``available_methods()``). The unpruned model through the same hooks as every
method, for a like-for-like baseline: ``apply(model, "none", cuda_graphs=True)`` times
the full model under the same CUDA graphs as a pruned one (issue 19), and its report
shows every token kept."""

from __future__ import annotations

from dataclasses import dataclass

from ..schedule import Schedule
from . import register_method
from .base import ModelGeometry, PruningMethod, check_positions


@dataclass
class NoneConfig:
    """Options of :class:`KeepAll`.

    Attributes:
        budget: not supported (must stay None: every token is kept).
        schedule: not supported (must stay None).
        positions: "reindex" or "keep" (the same positions: nothing is removed).
    """

    budget: int | None = None
    schedule: Schedule | None = None
    positions: str = "reindex"


@register_method
class KeepAll(PruningMethod):
    name = "none"
    summary = "keeps every visual token (the unpruned model through the same hooks: a baseline)"
    Config = NoneConfig
    listed = False  # not a pruning method: loops over available_methods() skip it

    def plan(self, geometry: ModelGeometry) -> Schedule:
        check_positions(self.config.positions)
        for name in ("budget", "schedule"):
            if getattr(self.config, name) is not None:
                raise ValueError(f"{name}: method 'none' keeps every visual token; drop {name}")
        return Schedule(encoder=None, llm=(), layers=()).validated(geometry.num_layers, geometry.llm_tokens,
                                                                  geometry.llm_tokens)
