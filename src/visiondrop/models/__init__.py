"""Model adapters, looked up by the class name of the model given to ``apply``."""

from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .gemma3 import Gemma3Adapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen3_vl import Qwen3VLAdapter
from .video_llava import VideoLlavaAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter,
                                            VideoLlavaAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter,
                                            InternVLAdapter, Gemma3Adapter)


def supported_models() -> list[str]:
    return sorted(name for adapter in ADAPTERS for name in adapter.model_classes)


def model_options() -> dict[str, tuple]:
    """Options of the models rather than the methods (``newline`` of LLaVA-NeXT), with
    their allowed values, over every adapter."""
    return {name: allowed for adapter in ADAPTERS for name, allowed in adapter.options.items()}


def adapter_for(model: nn.Module) -> ModelAdapter:
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter(model)
    raise ValueError(f"model: {name} is not supported; supported model classes: {', '.join(supported_models())}")


__all__ = ["ADAPTERS", "ModelAdapter", "adapter_for", "model_options", "supported_models"]
