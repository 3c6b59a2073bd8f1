"""Tiny random LLaVA models built from configs in code, for tests and examples.

Geometry matches LLaVA-1.5 where it matters for pruning: a CLIP tower with a [CLS]
token at 336 px / patch 14 (576 patches, 577 encoder tokens), features from the
penultimate layer, and a Llama LM with grouped-query attention.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from .models.video_llava import image_input_key

IMAGE_TOKEN_ID = 250
PAD_TOKEN_ID = 0
VOCAB_SIZE = 256


def padded_batch(rows: list[list[int]], padding_side: str = "left", pad_id: int = PAD_TOKEN_ID
                 ) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token ``rows`` padded to one length."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


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
    return _sharpened(LlavaForConditionalGeneration(config))


def _sharpened(model):
    """Eval mode, and larger random projection weights: attention gets peaky, so token
    choices are not ties."""
    model.eval()
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
    out = padded_batch(rows, padding_side)
    vision = model.config.vision_config
    pixel_values = torch.randn(sum(images_per_row), 3, vision.image_size, vision.image_size, generator=generator)
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


# ------------------------------------------------------------------ LLaVA-NeXT
NEXT_PINPOINTS = [[112, 224], [224, 112], [224, 224], [112, 336], [336, 112]]


def tiny_llava_next(seed: int = 0, num_layers: int = 8, attn_implementation: str = "sdpa"):
    """A tiny random ``LlavaNextForConditionalGeneration``: 112 px crops of 8 x 8 patches,
    LLaVA-NeXT-7B's pinpoint shapes scaled by 1/3 (at most 4 tiles + the base crop, so
    320 tokens per image at most, as 2880 = 5 x 576 on the 7B)."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    base = tiny_llava_config(num_layers=num_layers, attn_implementation=attn_implementation, image_size=112)
    config = LlavaNextConfig(vision_config=base.vision_config, text_config=base.text_config,
                             image_token_id=IMAGE_TOKEN_ID, vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_grid_pinpoints=NEXT_PINPOINTS,
                             projector_hidden_act="gelu")
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    return _sharpened(LlavaNextForConditionalGeneration(config))


def llava_next_image_tokens(model, size: tuple[int, int]) -> int:
    """Placeholders transformers' LLaVA-NeXT expects for one image of ``size`` (H, W):
    its own packing (unpadding, newlines) run on dummy features."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    config = model.config
    crops = image_size_to_num_patches(list(size), config.image_grid_pinpoints, config.vision_config.image_size)
    side = config.vision_config.image_size // config.vision_config.patch_size
    dummy = torch.zeros(crops, side * side, 1)
    packed, _ = model.model.pack_image_features([dummy], torch.tensor([size]), "default",
                                                image_newline=torch.zeros(1))
    return packed[0].shape[0]


def llava_next_prompt(model, text_lengths: list[int], sizes: list[list[tuple[int, int]]], seed: int = 0
                      ) -> dict[str, torch.Tensor]:
    """A left-padded LLaVA-NeXT batch: row i holds the images of ``sizes[i]`` (H, W)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    generator = torch.Generator().manual_seed(seed)
    rows, all_sizes = [], []
    for length, row_sizes in zip(text_lengths, sizes):
        row = torch.randint(1, 200, (3,), generator=generator).tolist()
        for size in row_sizes:
            row += [IMAGE_TOKEN_ID] * llava_next_image_tokens(model, size)
            row += torch.randint(1, 200, (2,), generator=generator).tolist()
            all_sizes.append(size)
        rows.append(row + torch.randint(1, 200, (length,), generator=generator).tolist())
    out = padded_batch(rows)
    if all_sizes:
        config = model.config
        crop = config.vision_config.image_size
        crops = [image_size_to_num_patches(list(s), config.image_grid_pinpoints, crop) for s in all_sizes]
        out["pixel_values"] = torch.randn(len(all_sizes), max(crops), 3, crop, crop, generator=generator)
        out["image_sizes"] = torch.tensor(all_sizes)
    return out


def save_tiny_next_checkpoint(path, seed: int = 0) -> None:
    """Write a tiny random LLaVA-NeXT and its processor to ``path`` (``from_pretrained``-loadable)."""
    from transformers import LlavaNextProcessor

    try:
        from transformers import LlavaNextImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import LlavaNextImageProcessor as ImageProcessor

    model = tiny_llava_next(seed=seed)
    model.config.text_config.eos_token_id = 3
    model.save_pretrained(path)
    tokenizer = tiny_processor().tokenizer
    crop = model.config.vision_config.image_size
    images = ImageProcessor(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop},
                            image_grid_pinpoints=NEXT_PINPOINTS)
    LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                       vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(path)


# ------------------------------------------------------------------ Video-LLaVA
VIDEO_TOKEN_ID = 251
video_llava_image_key = image_input_key  # the forward's keyword for images (it changed in 5.23)


def tiny_video_llava(seed: int = 0, num_layers: int = 16, attn_implementation: str = "sdpa", frames: int = 8,
                     image_size: int = 56, patch_size: int = 14):
    """A tiny random ``VideoLlavaForConditionalGeneration``: two CLIP towers at
    ``image_size`` px (56 / 14: 16 patches, so 16 tokens per image without [CLS] and
    17 per video frame with it, as 256 and 257 on Video-LLaVA-7B), ``frames`` frames per
    video (its ``video_seq_length``), a Llama LM of ``num_layers`` layers."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    base = tiny_llava_config(num_layers=num_layers, attn_implementation=attn_implementation,
                             image_size=image_size, patch_size=patch_size)
    frame_tokens = (image_size // patch_size) ** 2 + 1
    config = VideoLlavaConfig(vision_config=base.vision_config, text_config=base.text_config,
                              image_token_index=IMAGE_TOKEN_ID, video_token_index=VIDEO_TOKEN_ID,
                              vision_feature_layer=-2, vision_feature_select_strategy="default",
                              image_seq_length=frame_tokens - 1, video_seq_length=frames * frame_tokens,
                              projector_hidden_act="gelu")
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = _sharpened(VideoLlavaForConditionalGeneration(config))
    with torch.no_grad():
        model.lm_head.weight[[IMAGE_TOKEN_ID, VIDEO_TOKEN_ID]] = 0.0
    return model


def video_llava_prompt(model, text_lengths: list[int], media: list[list[str]], seed: int = 0,
                       padding_side: str = "left") -> dict[str, torch.Tensor]:
    """A padded Video-LLaVA batch: row i is [3 text tokens, then for each item of
    ``media[i]`` ("image" or "video") its placeholders and 2 text tokens, then
    ``text_lengths[i]`` text tokens]. ``pixel_values`` (:func:`video_llava_image_key`) holds every image and
    ``pixel_values_videos`` every video of the batch, in row order (as transformers
    expects: not aligned to rows)."""
    config = model.config
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    frames = config.video_seq_length // (patches + 1)
    per_item = {"image": patches + int(config.vision_feature_select_strategy == "full"),
                "video": frames * (patches + 1)}
    token = {"image": IMAGE_TOKEN_ID, "video": VIDEO_TOKEN_ID}
    generator = torch.Generator().manual_seed(seed)
    rows, counts = [], {"image": 0, "video": 0}
    for length, items in zip(text_lengths, media):
        row = torch.randint(1, 200, (3,), generator=generator).tolist()
        for item in items:
            if item not in token:
                raise ValueError(f"media items must be 'image' or 'video', got {item!r}")
            row += [token[item]] * per_item[item] + torch.randint(1, 200, (2,), generator=generator).tolist()
            counts[item] += 1
        rows.append(row + torch.randint(1, 200, (length,), generator=generator).tolist())
    out = padded_batch(rows, padding_side)
    side = vision.image_size
    if counts["image"]:
        out[video_llava_image_key()] = torch.randn(counts["image"], 3, side, side, generator=generator)
    if counts["video"]:
        out["pixel_values_videos"] = torch.randn(counts["video"], frames, 3, side, side, generator=generator)
    return out


# ------------------------------------------------------------------ LLaVA-OneVision
# LLaVA-OneVision-7B: 384 px SigLIP crops of 27 x 27 patches, tile grids up to 6 x 6
# (37 crops) and "anyres_max_9" (tiled grids larger than ~9 crops are downsized). Tiny:
# 56 px crops of 4 x 4 patches, grids up to 3 x 3 (10 crops), "anyres_max_4", so grids of
# 6 or more tiles are downsized as on the 7B.
ONEVISION_PINPOINTS = [[56 * rows, 56 * cols] for rows in range(1, 4) for cols in range(1, 4)]
ONEVISION_ASPECT_RATIO = "anyres_max_4"


def tiny_llava_onevision(seed: int = 0, num_layers: int = 8, attn_implementation: str = "sdpa",
                         sliding_window: int | None = None):
    """A tiny random ``LlavaOnevisionForConditionalGeneration``: a SigLIP tower without
    [CLS] (56 px crops, 16 patches, features of the last layer before ``post_layernorm``,
    strategy "full"), a Qwen2 LM (q/k/v biases, grouped-query attention).
    ``sliding_window``: the upper half of the LM's layers use sliding-window attention
    of that many tokens (``layer_types``), the lower half full attention."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=56, patch_size=14, vision_use_head=False)
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=VOCAB_SIZE, max_position_embeddings=2048,
                       pad_token_id=PAD_TOKEN_ID, rope_theta=10000.0, use_sliding_window=sliding_window is not None,
                       sliding_window=sliding_window, max_window_layers=num_layers // 2)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID,
                                  video_token_id=VIDEO_TOKEN_ID, vision_feature_layer=-1,
                                  vision_feature_select_strategy="full", image_grid_pinpoints=ONEVISION_PINPOINTS,
                                  vision_aspect_ratio=ONEVISION_ASPECT_RATIO, projector_hidden_act="gelu")
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = _sharpened(LlavaOnevisionForConditionalGeneration(config))
    with torch.no_grad():  # never generate a placeholder token
        model.lm_head.weight[[IMAGE_TOKEN_ID, VIDEO_TOKEN_ID]] = 0.0
    return model


def llava_onevision_image_tokens(model, size: tuple[int, int], multi_image: bool = False) -> int:
    """Placeholders transformers' LLaVA-OneVision expects for one image of ``size`` (H, W):
    its own packing (unpadding, downsizing, newlines) run on dummy features; an image of
    a multi-image prompt is one crop and a newline."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    config = model.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    if multi_image:
        return side * side + 1
    crops = image_size_to_num_patches(list(size), config.image_grid_pinpoints, config.vision_config.image_size)
    packed, _ = model.model.pack_image_features([torch.zeros(crops, side * side, 1)], torch.tensor([size]),
                                                image_newline=torch.zeros(1),
                                                vision_aspect_ratio=config.vision_aspect_ratio)
    return packed[0].shape[0]


def llava_onevision_video_tokens(model, frames: int) -> int:
    """Placeholders of one video: every frame's patch grid pooled to half its side, one newline."""
    vision = model.config.vision_config
    pooled = -(-(vision.image_size // vision.patch_size) // 2)
    return frames * pooled * pooled + 1


def llava_onevision_prompt(model, text_lengths: list[int], media: list[list], frames: int = 3, seed: int = 0
                           ) -> dict[str, torch.Tensor]:
    """A left-padded LLaVA-OneVision batch: row i is [3 text tokens, then for each item of
    ``media[i]`` (an image size ``(H, W)`` or ``"video"``) its placeholders and 2 text
    tokens, then ``text_lengths[i]`` text tokens]. A row with several images is a
    multi-image prompt (``batch_num_images``: one crop per image); videos have
    ``frames`` frames."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    config = model.config
    crop = config.vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    rows, sizes, crops, per_row, videos = [], [], [], [], 0
    for length, items in zip(text_lengths, media):
        row = torch.randint(1, 200, (3,), generator=generator).tolist()
        images = [item for item in items if item != "video"]
        per_row.append(len(images))
        for item in items:
            if item == "video":
                row += [VIDEO_TOKEN_ID] * llava_onevision_video_tokens(model, frames)
                videos += 1
            else:
                multi = len(images) > 1
                row += [IMAGE_TOKEN_ID] * llava_onevision_image_tokens(model, item, multi_image=multi)
                sizes.append(tuple(item))
                crops.append(1 if multi else image_size_to_num_patches(list(item), config.image_grid_pinpoints, crop))
            row += torch.randint(1, 200, (2,), generator=generator).tolist()
        rows.append(row + torch.randint(1, 200, (length,), generator=generator).tolist())
    out = padded_batch(rows)
    if sizes:
        out["pixel_values"] = torch.randn(len(sizes), max(crops), 3, crop, crop, generator=generator)
        out["image_sizes"] = torch.tensor(sizes)
        out["batch_num_images"] = torch.tensor(per_row)
    if videos:
        out["pixel_values_videos"] = torch.randn(videos, frames, 3, crop, crop, generator=generator)
    return out


def _onevision_tokenizer():
    """The tiny word-level tokenizer with ``<video>`` added."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(tiny_processor().tokenizer.get_vocab())
    vocab["<video>"] = VIDEO_TOKEN_ID
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})


def _onevision_processor(image_processor, tokenizer, **options):
    """``LlavaOnevisionProcessor``; without torchvision (which transformers' OneVision video
    processor needs) it is built without a video processor and handles images only."""
    import importlib.util
    from unittest import mock

    from transformers import LlavaOnevisionProcessor
    from transformers.processing_utils import ProcessorMixin

    if importlib.util.find_spec("torchvision") is not None:
        from transformers import LlavaOnevisionVideoProcessor

        return LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                       video_processor=LlavaOnevisionVideoProcessor(), **options)
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None):
        return LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                       **options)


ONEVISION_PROCESSOR_OPTIONS = {"num_image_tokens": 16, "vision_feature_select_strategy": "full",
                               "vision_aspect_ratio": ONEVISION_ASPECT_RATIO}


def tiny_onevision_processor():
    """The processor of :func:`tiny_llava_onevision` (placeholder counts as the model's)."""
    try:
        from transformers import LlavaOnevisionImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import LlavaOnevisionImageProcessor as ImageProcessor

    images = ImageProcessor(size={"height": 56, "width": 56}, image_grid_pinpoints=ONEVISION_PINPOINTS)
    return _onevision_processor(images, _onevision_tokenizer(), **ONEVISION_PROCESSOR_OPTIONS)


def save_tiny_onevision_checkpoint(path, seed: int = 0) -> None:
    """Write a tiny random LLaVA-OneVision and its processor to ``path``. The model is
    ``from_pretrained``-loadable; ``AutoProcessor.from_pretrained`` also loads the video
    processor, which needs torchvision: without it, load the processor with
    :func:`load_tiny_onevision_processor`."""
    import json
    from pathlib import Path

    model = tiny_llava_onevision(seed=seed)
    model.config.text_config.eos_token_id = 3
    model.save_pretrained(path)
    processor = tiny_onevision_processor()
    if getattr(processor, "video_processor", None) is not None:
        processor.save_pretrained(path)
        return
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.save_pretrained(path)
    config = {"processor_class": "LlavaOnevisionProcessor", **ONEVISION_PROCESSOR_OPTIONS}
    (Path(path) / "processor_config.json").write_text(json.dumps(config, indent=2))


def load_tiny_onevision_processor(path):
    """The processor :func:`save_tiny_onevision_checkpoint` wrote, loaded without torchvision."""
    import json
    from pathlib import Path

    from transformers import AutoImageProcessor, AutoTokenizer

    options = json.loads((Path(path) / "processor_config.json").read_text())
    options = {key: options[key] for key in ONEVISION_PROCESSOR_OPTIONS}
    return _onevision_processor(AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                                **options)
