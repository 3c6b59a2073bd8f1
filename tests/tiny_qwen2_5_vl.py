"""Tiny random Qwen2.5-VL models, prompts and a saved checkpoint, built in code.

Vision: 4 blocks (full attention in blocks 1 and 3, so the scoring block attends to
whole images/frames), 14-px patches, 2 x 2 merger, windows of 2 x 2 merged tokens.
LM: 8 Qwen2 layers with GQA (4 query / 2 key heads, head_dim 16, mrope_section [2, 3, 3]).
A grid ``(t, h, w)`` in patches gives ``t * h * w / 4`` tokens in the LM.
"""

from __future__ import annotations

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from visiondrop.testing import padded_batch

PAD, VSTART, VEND, IMG, VID = 0, 120, 121, 122, 123
EOS = 3
VOCAB = 128


def tiny_qwen(seed: int = 0, num_layers: int = 8, attn: str = "sdpa"):
    """A tiny random ``Qwen2_5_VLForConditionalGeneration`` in eval mode, float32."""
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, in_channels=3, window_size=56,
                           fullatt_block_indexes=[1, 3], out_hidden_size=64, tokens_per_second=2),
        text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         pad_token_id=PAD, bos_token_id=1, eos_token_id=EOS),
        image_token_id=IMG, video_token_id=VID, vision_start_token_id=VSTART, vision_end_token_id=VEND)
    return prepared(Qwen2_5_VLForConditionalGeneration(config), attn)


def prepared(model, attn: str):
    """``model`` in eval mode with ``attn``, peaky attention (so token choices are not
    ties), no vision tokens generated, and always ``max_new_tokens``."""
    model.eval().set_attn_implementation(attn)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("proj.weight", "qkv.weight")):
                param.mul_(4.0)
        model.lm_head.weight[[VSTART, VEND, IMG, VID]] = 0
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None
    return model


def tokens(grid) -> int:
    t, h, w = grid
    return t * h * w // 4


def qwen_batch(rows: list[list[tuple[str, tuple[int, int, int]]]], prefix: list[int], seed: int = 0,
               suffix: int = 3) -> dict[str, torch.Tensor]:
    """A left-padded batch; row r is ``prefix[r]`` text tokens, then each of its media
    (``("image" | "video", (t, h, w))``) as vision_start, placeholders, vision_end, two
    text tokens, and ``suffix`` text tokens."""
    generator = torch.Generator().manual_seed(seed)

    def text(n):
        return torch.randint(3, 100, (n,), generator=generator).tolist()

    sequences, pixels = [], {"image": [], "video": []}
    grids = {"image": [], "video": []}
    for media, before in zip(rows, prefix):
        sequence = text(before)
        for kind, grid in media:
            sequence += [VSTART] + [IMG if kind == "image" else VID] * tokens(grid) + [VEND] + text(2)
            grids[kind].append(grid)
            pixels[kind].append(torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, generator=generator))
        sequences.append(sequence + text(suffix))
    batch = padded_batch(sequences, pad_id=PAD)
    input_ids = batch["input_ids"]
    batch["mm_token_type_ids"] = (input_ids == IMG).long() + 2 * (input_ids == VID).long()
    if grids["image"]:
        batch["pixel_values"] = torch.cat(pixels["image"])
        batch["image_grid_thw"] = torch.tensor(grids["image"])
    if grids["video"]:
        batch["pixel_values_videos"] = torch.cat(pixels["video"])
        batch["video_grid_thw"] = torch.tensor(grids["video"])
    return batch


def row_alone(batch: dict, rows: list[list[tuple[str, tuple[int, int, int]]]], row: int) -> dict:
    """Row ``row`` of a :func:`qwen_batch` batch without its padding, with its own media."""
    keep = batch["attention_mask"][row].bool()
    out = {k: batch[k][row][keep][None] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    for kind, pixel_key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        before = [g for media in rows[:row] for k, g in media if k == kind]
        mine = [g for k, g in rows[row] if k == kind]
        if mine:
            first = sum(t * h * w for t, h, w in before)
            count = sum(t * h * w for t, h, w in mine)
            out[pixel_key] = batch[pixel_key][first:first + count]
            out[f"{kind}_grid_thw"] = torch.tensor(mine)
    return out


def tiny_tokenizer():
    """A word-level tokenizer built in code (no download) with Qwen2.5-VL's vision tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(100)] + [
        "user:", "assistant:", "what", "is", "this", "?"]
    vocab = {word: i for i, word in enumerate(words)}
    specials = {"<|vision_start|>": VSTART, "<|vision_end|>": VEND, "<|image_pad|>": IMG, "<|video_pad|>": VID}
    vocab.update(specials)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=list(specials), padding_side="left")


def tiny_image_processor():
    """Qwen2-VL's PIL image processor; images become at most 4 x 4 merged tokens."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, patch_size=14,
                                    temporal_patch_size=2, merge_size=2)


class TinyQwenProcessor:
    """What ``Qwen2_5_VLProcessor`` does for images, without torchvision (transformers
    5.23 cannot build that processor without it, even with no video processor): the
    chat format, one ``<|image_pad|>`` per merged token, ``mm_token_type_ids``."""

    chat_template = "vision_start, image_pad, vision_end per image"

    def __init__(self, tokenizer, image_processor) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor

    @classmethod
    def from_pretrained(cls, path):
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        return cls(AutoTokenizer.from_pretrained(path), Qwen2VLImageProcessorPil.from_pretrained(path))

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True) -> str:
        parts = []
        for message in conversation:
            parts.append(f"{message['role']}:")
            for item in message["content"]:
                parts.append("<|vision_start|> <|image_pad|> <|vision_end|>" if item["type"] == "image"
                             else item["text"])
        return " ".join(parts + (["assistant:"] if add_generation_prompt else []))

    def __call__(self, text: str, images=None, videos=None, return_tensors: str = "pt"):
        from transformers import BatchFeature

        if videos is not None:
            raise ValueError("videos: this tiny processor takes images only")
        data = {}
        if images is not None:
            data = dict(self.image_processor(images=images if isinstance(images, list) else [images],
                                             return_tensors=return_tensors))
            for grid in data["image_grid_thw"]:
                text = text.replace("<|image_pad|>", " ".join(["<|placeholder|>"] * tokens(grid.tolist())), 1)
            text = text.replace("<|placeholder|>", "<|image_pad|>")
        encoded = self.tokenizer(text, return_tensors=return_tensors)
        data.update(encoded)
        data["mm_token_type_ids"] = (encoded["input_ids"] == IMG).long()
        return BatchFeature(data)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)


def save_tiny_qwen_checkpoint(path, seed: int = 0) -> None:
    """Write a tiny random Qwen2.5-VL, its tokenizer and image processor to ``path``
    (load the processor with :meth:`TinyQwenProcessor.from_pretrained`)."""
    model = tiny_qwen(seed=seed)
    model.config.text_config.eos_token_id = EOS
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
