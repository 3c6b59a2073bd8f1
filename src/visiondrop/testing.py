"""Tiny random LLaVA models built from configs in code, for tests and examples.

Geometry matches LLaVA-1.5 where it matters for pruning: a CLIP tower with a [CLS]
token at 336 px / patch 14 (576 patches, 577 encoder tokens), features from the
penultimate layer, and a Llama LM with grouped-query attention.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN_ID = 250
PAD_TOKEN_ID = 0
VOCAB_SIZE = 256


def tiny_llava_config(num_layers: int = 8, attn_implementation: str = "sdpa", vision_tower: str = "clip",
                      image_size: int = 336, patch_size: int = 14) -> LlavaConfig:
    if vision_tower == "clip":
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                  num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                                  projection_dim=32)
        strategy, feature_layer = "default", -2
    elif vision_tower == "siglip":
        from transformers import SiglipVisionConfig

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                    num_attention_heads=4, image_size=image_size, patch_size=patch_size)
        strategy, feature_layer = "full", -1
    else:
        raise ValueError(f"vision_tower must be 'clip' or 'siglip', got {vision_tower!r}")
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB_SIZE,
                       max_position_embeddings=2048, pad_token_id=PAD_TOKEN_ID, rope_theta=10000.0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID,
                         vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu")
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    return config


def tiny_llava(seed: int = 0, **kwargs) -> LlavaForConditionalGeneration:
    """A tiny random ``LlavaForConditionalGeneration`` in eval mode, float32."""
    torch.manual_seed(seed)
    config = tiny_llava_config(**kwargs)
    model = LlavaForConditionalGeneration(config).eval()
    # Larger random weights make attention peaky, so token choices are not ties.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("proj.weight"):
                param.mul_(4.0)
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model


def image_prompt(model, text_lengths: list[int], images_per_row: list[int] | None = None, seed: int = 0,
                 padding_side: str = "left") -> dict[str, torch.Tensor]:
    """A padded batch: each row is [prefix text, image placeholders..., text]."""
    generator = torch.Generator().manual_seed(seed)
    images_per_row = images_per_row or [1] * len(text_lengths)
    tokens_per_image = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    config = model.config
    if config.vision_feature_select_strategy == "full" and config.vision_config.model_type == "clip_vision_model":
        tokens_per_image += 1
    rows = []
    for length, n_images in zip(text_lengths, images_per_row):
        prefix = torch.randint(1, 200, (3,), generator=generator).tolist()
        suffix = torch.randint(1, 200, (length,), generator=generator).tolist()
        rows.append(prefix + [IMAGE_TOKEN_ID] * (tokens_per_image * n_images) + suffix)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), PAD_TOKEN_ID)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    vision = model.config.vision_config
    pixel_values = torch.randn(sum(images_per_row), 3, vision.image_size, vision.image_size, generator=generator)
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if sum(images_per_row):
        out["pixel_values"] = pixel_values
    return out


def tiny_processor(vocab_words: list[str] | None = None):
    """A LLaVA processor with a word-level tokenizer built in code (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlavaProcessor, PreTrainedTokenizerFast

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers name the PIL backend plainly
        from transformers import CLIPImageProcessor as ImageProcessor

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    words = vocab_words or [f"w{i}" for i in range(200)] + ["USER:", "ASSISTANT:", "?", "what", "is", "this"]
    vocab = {token: i for i, token in enumerate(specials + words[: IMAGE_TOKEN_ID - len(specials)])}
    vocab["<image>"] = IMAGE_TOKEN_ID
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    images = ImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def save_tiny_checkpoint(path, seed: int = 0) -> None:
    """Write a tiny random LLaVA and its processor to ``path`` (``from_pretrained``-loadable)."""
    model = tiny_llava(seed=seed)
    model.config.text_config.eos_token_id = 3
    model.save_pretrained(path)
    tiny_processor().save_pretrained(path)
