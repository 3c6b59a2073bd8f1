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
    return llava_config(word_list(), VOCAB_SIZE, dict(num_attention_heads=6),
                        dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                             num_key_value_heads=8, max_position_embeddings=1024), attn_implementation)


def llava_config(words: list[str], vocab_size: int, vision: dict, text: dict, attn_implementation: str = "sdpa"):
    """A LLaVA-1.5-shaped config over a word list: a CLIP ViT (width 192, 6 layers, 336 / 14,
    read at layer -2, [CLS] dropped), a Llama LM; ``vision`` and ``text`` set the rest."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if len(words) > vocab_size:
        raise RuntimeError(f"the vocabulary ({len(words)} words) outgrew vocab_size={vocab_size}")
    vision = CLIPVisionConfig(**{"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 6,
                                 "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "projection_dim": 192, **vision})
    text = LlamaConfig(vocab_size=vocab_size, pad_token_id=PAD_ID, bos_token_id=2, eos_token_id=EOS_ID,
                       rope_theta=10000.0, tie_word_embeddings=False, **text)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=len(words) - 1,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = attn_implementation
    return config


def shapes_tokenizer(words: list[str] | None = None):
    """The word-level tokenizer over ``words`` (default: shapes-llava's ``word_list()``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(word_list() if words is None else words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>", padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def shapes_processor(tokenizer=None, chat_template: str = CHAT_TEMPLATE):
    from transformers import LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers without the split image-processor backends
        from transformers import CLIPImageProcessor as ImageProcessor
    images = ImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer or shapes_tokenizer(), patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=chat_template)


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
    return load_checkpoint(path or SHAPES_LLAVA_DIR, "shapes-llava", "scripts/train_shapes_llava.py", device, dtype,
                           attn_implementation)


def load_checkpoint(path: str | Path, name: str, recipe: str, device, dtype, attn_implementation):
    """``(model, processor)`` of a LLaVA checkpoint folder this project trains (``name``,
    trained by ``recipe``: said when the folder holds none)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no {name} checkpoint at {path} (expected config.json and safetensors weights); "
                                f"train one with {recipe}")
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval()
    model.generation_config.pad_token_id = PAD_ID
    return model, AutoProcessor.from_pretrained(path)
