"""Registered pruning methods. Adding one is one new module that defines a
:class:`~visiondrop.methods.base.PruningMethod` subclass decorated with
:func:`register_method`, imported below."""

from __future__ import annotations

from .base import DecoderStage, EncoderStage, ModelGeometry, PruningMethod, Reduction

_REGISTRY: dict[str, type[PruningMethod]] = {}


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[PruningMethod]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {sorted(_REGISTRY)}") from None


def available_methods() -> dict[str, str]:
    """Pruning method name -> one-line summary (``none``, the unpruned baseline that
    :func:`get_method` also knows, is not listed: tools that loop over methods skip it)."""
    return {name: cls.summary for name, cls in sorted(_REGISTRY.items()) if cls.listed}


# Each module registers its method(s) on import.
from . import fastv as _fastv  # noqa: E402,F401
from . import none as _none  # noqa: E402,F401
from . import pdrop as _pdrop  # noqa: E402,F401
from . import pool as _pool  # noqa: E402,F401
from . import random as _random  # noqa: E402,F401
from . import sparsevlm as _sparsevlm  # noqa: E402,F401
from . import visiondrop as _visiondrop  # noqa: E402,F401
from . import visionzip as _visionzip  # noqa: E402,F401
from . import vispruner as _vispruner  # noqa: E402,F401

__all__ = [
    "DecoderStage",
    "EncoderStage",
    "ModelGeometry",
    "PruningMethod",
    "Reduction",
    "available_methods",
    "get_method",
    "register_method",
]
