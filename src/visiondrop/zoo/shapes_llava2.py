"""shapes-llava-2: a LLaVA-1.5-shaped proxy meant to behave like the real model inside (issue 21).

shapes-llava (``shapes_llava.py``) is a regression guard whose internals differ from real
LLaVA's in the ways pruning methods depend on (an 8-layer LM that reads the image in layers
0-2 only, no attention sink, a tower trained with per-patch heads). shapes-llava-2 changes the
parts that matter, in transformers' own classes (``LlavaForConditionalGeneration``):

- **LM: 32 Llama layers**, so every published layer index (FastV's 2, PyramidDrop's and
  VisionDrop's 8 / 16 / 24) applies unscaled; narrow (hidden 224, 4 heads) so it ships. It is
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

from ..data.shapes2 import IMAGE_SIZE, PATCH_SIZE, SYSTEM_PROMPT, vocabulary
from .shapes_llava import CLIP_MEAN, CLIP_STD, EOS_ID, IMAGE_TOKEN, PAD_ID, SPECIAL_TOKENS, pixel_values

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
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if len(word_list()) > VOCAB_SIZE:
        raise RuntimeError(f"ShapesVQA-2 vocabulary ({len(word_list())}) outgrew VOCAB_SIZE={VOCAB_SIZE}")
    vision = CLIPVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=6, num_attention_heads=3,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=192)
    text = LlamaConfig(hidden_size=224, intermediate_size=512, num_hidden_layers=32, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=VOCAB_SIZE, max_position_embeddings=2048,
                       pad_token_id=PAD_ID, bos_token_id=2, eos_token_id=EOS_ID, rope_theta=10000.0,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id(),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = attn_implementation
    return config


def shapes2_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(word_list())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>", padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def shapes2_processor():
    from transformers import LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers without the split image-processor backends
        from transformers import CLIPImageProcessor as ImageProcessor
    images = ImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=images, tokenizer=shapes2_tokenizer(), patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def load_shapes_llava2(path: str | Path | None = None, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """``(model, processor)`` of the shipped shapes-llava-2 (or a checkpoint at ``path``)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path) if path is not None else SHAPES_LLAVA2_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no shapes-llava-2 checkpoint at {path} (expected config.json and safetensors "
                                "weights); train one with scripts/train_shapes_llava2.py")
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval()
    model.generation_config.pad_token_id = PAD_ID
    return model, AutoProcessor.from_pretrained(path)
