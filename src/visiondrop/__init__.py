"""visiondrop: training-free visual-token pruning for LLaVA-family models on plain
transformers. ``handle = visiondrop.apply(model, budget=64)``.

The public names load on first use (PEP 562), so ``import visiondrop`` and the command
line's ``--help`` and argument errors do not wait for torch and transformers."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "BudgetInfeasible": "schedule", "CapturedPrefill": "capture", "PruningHandle": "api", "PruningReport": "report",
    "Schedule": "schedule", "SegmentRecord": "report", "StageRecord": "report", "StageSpec": "schedule",
    "apply": "api", "available_methods": "methods", "capture_prefill": "capture", "get_method": "methods",
    "plan": "api", "register_method": "methods", "schedule_from_budget": "schedule", "supported_models": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    try:  # a subpackage, as ``visiondrop.models`` after a plain ``import visiondrop``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'visiondrop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
