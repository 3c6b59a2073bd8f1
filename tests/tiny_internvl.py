"""Tiny random InternVL models and prompts, built in code.

Vision: 2 InternViT layers at 64 px with 8-px patches (8 x 8 = 64 patches and a [CLS] per
tile; the pixel shuffle makes 16 tokens per tile), an MLP projector; LM: 8 Qwen2 layers with
GQA (4 query / 2 key heads). An image of k tiles is one run of 16 k placeholders.
"""

from __future__ import annotations

import torch

from visiondrop.testing import padded_batch

PAD, IMG, VOCAB = 0, 250, 256
PER_TILE = 16


def tiny_internvl(seed: int = 0, num_layers: int = 8, attn: str = "sdpa"):
    """A tiny random ``InternVLForConditionalGeneration`` in eval mode, float32."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    torch.manual_seed(seed)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=[64, 64], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=PAD, eos_token_id=3),
        image_token_id=IMG, downsample_ratio=0.5, image_seq_length=PER_TILE)
    model = InternVLForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    with torch.no_grad():  # peaky attention, so token choices are not ties
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(4.0)
        model.lm_head.weight[IMG] = 0  # never generate the image token
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None  # always max_new_tokens
    return model


def internvl_batch(tiles: list[list[int]], prefix: list[int], seed: int = 0, suffix: int = 3) -> dict:
    """A left-padded batch: row r is ``prefix[r]`` text tokens, then for each of its images
    (``tiles[r]``: tile counts) its placeholders and two text tokens, then ``suffix`` text tokens."""
    generator = torch.Generator().manual_seed(seed)

    def text(n):
        return torch.randint(3, 200, (n,), generator=generator).tolist()

    rows, count = [], 0
    for images, before in zip(tiles, prefix):
        row = text(before)
        for k in images:
            row += [IMG] * (PER_TILE * k) + text(2)
            count += k
        rows.append(row + text(suffix))
    batch = padded_batch(rows, pad_id=PAD)
    if count:
        batch["pixel_values"] = torch.randn(count, 3, 64, 64, generator=generator)
    return batch


def row_alone(batch: dict, tiles: list[list[int]], row: int) -> dict:
    """Row ``row`` without its padding, with its own tiles."""
    keep = batch["attention_mask"][row].bool()
    out = {k: batch[k][row][keep][None] for k in ("input_ids", "attention_mask")}
    first, mine = sum(map(sum, tiles[:row])), sum(tiles[row])
    if mine:
        out["pixel_values"] = batch["pixel_values"][first:first + mine]
    return out


class TinyInternVLProcessor:
    """What ``InternVLProcessor`` does for one image, without torchvision (transformers
    builds InternVL's processor only with it, for its video processor): the image resized
    to one 64-px tile, ``<img>`` + one ``<IMG_CONTEXT>`` per token + ``</img>`` in the text."""

    chat_template = None

    def __init__(self) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        words = ["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(100)] + [
            "USER:", "ASSISTANT:", "what", "is", "this", "?", "<img>", "</img>"]
        vocab = {word: i for i, word in enumerate(words)}
        vocab["<IMG_CONTEXT>"] = IMG
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                                 additional_special_tokens=["<IMG_CONTEXT>"])

    def __call__(self, text: str, images=None, videos=None, return_tensors: str = "pt"):
        import numpy as np
        from transformers import BatchFeature

        data = {}
        if images is not None:
            image = (images if isinstance(images, list) else [images])[0].convert("RGB").resize((64, 64))
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            data["pixel_values"] = pixels[None]
            text = text.replace("<image>", " <img> " + "<IMG_CONTEXT> " * PER_TILE + "</img> ")
        data.update(self.tokenizer(text, return_tensors=return_tensors))
        return BatchFeature(data)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)
