"""visiondrop: training-free visual-token pruning for LLaVA-family models on plain
transformers. ``handle = visiondrop.apply(model, budget=64)``."""

from .api import PruningHandle, apply, plan
from .capture import CapturedPrefill, capture_prefill
from .methods import available_methods, get_method, register_method
from .models import supported_models
from .report import PruningReport, SegmentRecord, StageRecord
from .schedule import BudgetInfeasible, Schedule, StageSpec, schedule_from_budget

__version__ = "0.1.0"

__all__ = [
    "BudgetInfeasible",
    "CapturedPrefill",
    "PruningHandle",
    "PruningReport",
    "Schedule",
    "SegmentRecord",
    "StageRecord",
    "StageSpec",
    "apply",
    "capture_prefill",
    "plan",
    "available_methods",
    "get_method",
    "register_method",
    "schedule_from_budget",
    "supported_models",
]
