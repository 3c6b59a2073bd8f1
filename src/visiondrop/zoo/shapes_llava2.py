"""shapes-llava-2: a LLaVA-1.5-shaped proxy meant to behave like the real model inside (issue 21).

shapes-llava (``shapes_llava.py``) is a regression guard whose internals differ from real
LLaVA's in the ways pruning methods depend on (an 8-layer LM that reads the image in layers
0-2 only, no attention sink, a tower trained with per-patch heads). shapes-llava-2 changes the
parts that matter, in transformers' own classes (``LlavaForConditionalGeneration``):

- **LM: 32 Llama layers**, so every published layer index (FastV's 2, PyramidDrop's and
  VisionDrop's 8 / 16 / 24) applies unscaled; narrow (hidden 192, 4 heads) so it ships and, at 33 MiB
  in float16, travels to a device call beside the repository. It is
  pre-trained on text first, and every prompt starts with a LLaVA-style system prompt of 33
  tokens before the image (``SYSTEM_PROMPT``).
- **Vision tower trained CLIP-style**: contrastive against a small text encoder on generated
  captions, no per-patch heads; read at layer -2, [CLS] dropped, as LLaVA does.
- **Data: ShapesVQA-2** (:mod:`visiondrop.data.shapes2`): objects of varied size anywhere,
  occlusion, textured backgrounds, small printed words, objects referred to by attributes,
  multi-token answers.

Whether its internals pass the proxy's gates is measured by ``scripts/proxy_gates.py`` and
written in its model card; until they pass, its method rankings mean no more than shapes-llava's.
Recipe: ``scripts/train_shapes_llava2.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.shapes2 import SYSTEM_PROMPT, vocabulary
from .shapes_llava import (
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    llava_config,
    load_checkpoint,
    pixel_values,
    shapes_processor,
    shapes_tokenizer,
)

SHAPES_LLAVA2_DIR = Path(__file__).with_name("shapes-llava-2")
#: "<s>" first, as Llama's tokenizer puts it before LLaVA's system prompt
PROMPT = "<s> " + SYSTEM_PROMPT + " USER: <image>\n{question} ASSISTANT:"
VOCAB_SIZE = 192  # padded: the word list has ~150 entries
CHAT_TEMPLATE = (
    "<s> " + SYSTEM_PROMPT + " "
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %} </s> "
    "{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)

__all__ = ["PROMPT", "SHAPES_LLAVA2_DIR", "load_shapes_llava2", "pixel_values", "shapes_llava2_config",
           "shapes2_processor", "shapes2_tokenizer", "word_list"]


def word_list() -> list[str]:
    """Token strings in id order: specials, chat words, ShapesVQA-2 words, image token."""
    return [*SPECIAL_TOKENS, "USER:", "ASSISTANT:", *vocabulary(), IMAGE_TOKEN]


def image_token_id() -> int:
    return len(word_list()) - 1


def shapes_llava2_config(attn_implementation: str = "sdpa"):
    return llava_config(word_list(), VOCAB_SIZE, dict(num_attention_heads=3),
                        dict(hidden_size=192, intermediate_size=512, num_hidden_layers=32, num_attention_heads=4,
                             num_key_value_heads=4, max_position_embeddings=2048), attn_implementation)


def shapes2_tokenizer():
    return shapes_tokenizer(word_list())


def shapes2_processor():
    return shapes_processor(shapes2_tokenizer(), CHAT_TEMPLATE)


def load_shapes_llava2(path: str | Path | None = None, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """``(model, processor)`` of the shipped shapes-llava-2 (or a checkpoint at ``path``)."""
    return load_checkpoint(path or SHAPES_LLAVA2_DIR, "shapes-llava-2", "scripts/train_shapes_llava2.py", device,
                           dtype, attn_implementation)
