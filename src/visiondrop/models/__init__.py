"""Model adapters, looked up by the class name of the model given to ``apply``."""

from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .video_llava import VideoLlavaAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter,
                                            VideoLlavaAdapter, Qwen2_5_VLAdapter)


def supported_models() -> list[str]:
    return sorted(name for adapter in ADAPTERS for name in adapter.model_classes)


def adapter_for(model: nn.Module) -> ModelAdapter:
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter(model)
    raise ValueError(f"model: {name} is not supported; supported model classes: {', '.join(supported_models())}")


__all__ = ["ADAPTERS", "ModelAdapter", "adapter_for", "supported_models"]
