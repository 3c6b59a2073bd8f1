"""What a model adapter is. An adapter knows one architecture: where its visual
tokens are, which modules to hook, how its encoder is laid out. Adapters register
by model class name, so adding a model is one new module."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from ..methods.base import ModelGeometry, PruningMethod
from ..report import PruningReport
from ..schedule import Schedule


class ModelAdapter(ABC):
    model_classes: ClassVar[tuple[str, ...]]

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.report: PruningReport | None = None

    @abstractmethod
    def geometry(self) -> ModelGeometry:
        """Validate the model's configuration and describe it for planning."""

    @abstractmethod
    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        """Register this model's hooks; return their removable handles."""

    def reset(self) -> None:  # noqa: B027  (optional override)
        """Forget any in-flight state (called on remove)."""
