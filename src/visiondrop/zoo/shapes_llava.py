"""shapes-llava: the small LLaVA-1.5 this project trains on ShapesVQA and ships.

Architecture is LLaVA-1.5's in miniature, built from transformers' own classes:
``LlavaForConditionalGeneration`` with a CLIP ViT (CLS token, 336 px, patch 14, so
576 patch tokens; features from the penultimate layer, CLS dropped), a two-layer
GELU MLP projector and a Llama decoder. Tokenizer (word level, built in code with
the ``tokenizers`` library) and processor load with ``from_pretrained(path)``.
Weights, model card and training log: ``src/visiondrop/zoo/shapes-llava/``;
recipe: ``scripts/train_shapes_llava.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.shapes import IMAGE_SIZE, PATCH_SIZE, vocabulary

SHAPES_LLAVA_DIR = Path(__file__).with_name("shapes-llava")
PROMPT = "USER: <image>\n{question} ASSISTANT:"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
PAD_ID, EOS_ID = 0, 3
IMAGE_TOKEN = "<image>"
VOCAB_SIZE = 128  # padded: the word list has ~90 entries
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %} </s> "
    "{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def word_list() -> list[str]:
    """Token strings in id order: specials, chat words, ShapesVQA words, image token."""
    return [*SPECIAL_TOKENS, "USER:", "ASSISTANT:", *vocabulary(), IMAGE_TOKEN]


def image_token_id() -> int:
    return len(word_list()) - 1


def shapes_llava_config(attn_implementation: str = "sdpa"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if len(word_list()) > VOCAB_SIZE:
        raise RuntimeError(f"ShapesVQA vocabulary ({len(word_list())}) outgrew VOCAB_SIZE={VOCAB_SIZE}")
    vision = CLIPVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=192)
    text = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=8, vocab_size=VOCAB_SIZE, max_position_embeddings=1024,
                       pad_token_id=PAD_ID, bos_token_id=2, eos_token_id=EOS_ID, rope_theta=10000.0,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id(),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = attn_implementation
    return config


def shapes_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(word_list())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>", padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def shapes_processor():
    from transformers import LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers without the split image-processor backends
        from transformers import CLIPImageProcessor as ImageProcessor
    images = ImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=images, tokenizer=shapes_tokenizer(), patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def pixel_values(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 336, 336, 3)`` -> normalised float ``(B, 3, 336, 336)``, as the
    processor computes for a 336 px image (no resize, no crop), without PIL."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


def load_shapes_llava(path: str | Path | None = None, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """``(model, processor)`` of the shipped model (or a checkpoint at ``path``)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path) if path is not None else SHAPES_LLAVA_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no shapes-llava checkpoint at {path} (expected config.json and safetensors weights); "
            "train one with scripts/train_shapes_llava.py"
        )
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval()
    model.generation_config.pad_token_id = PAD_ID
    return model, AutoProcessor.from_pretrained(path)
