"""Tiny random Gemma 3 models and prompts, built in code.

Vision: 2 SigLIP layers at 32 px with 4-px patches (8 x 8 = 64 patches, no [CLS]); the projector
averages each 2 x 2 square into one of 16 tokens per image. LM: 8 Gemma 3 layers with GQA (4
query / 2 key heads), q/k norms, layer 5 full attention and the others a sliding window of 24
(shorter than the prompts, so the window matters). An image is ``<boi>``, 16 placeholders,
``<eoi>``; ``token_type_ids`` marks the placeholders, as Gemma3Processor does.
"""

from __future__ import annotations

import torch

from visiondrop.testing import padded_batch

PAD, IMG, BOI, EOI, VOCAB = 0, 250, 251, 252, 256
PER_IMAGE = 16
WINDOW = 24


def tiny_gemma3(seed: int = 0, num_layers: int = 8, attn: str = "sdpa"):
    """A tiny random ``Gemma3ForConditionalGeneration`` in eval mode, float32."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    config = Gemma3Config(
        text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                         pad_token_id=PAD, eos_token_id=3, sliding_window=WINDOW),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=32, patch_size=4),
        mm_tokens_per_image=PER_IMAGE, image_token_id=IMG, boi_token_id=BOI, eoi_token_id=EOI)
    model = Gemma3ForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    with torch.no_grad():  # peaky attention, so token choices are not ties
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(4.0)
            if name.endswith("mm_input_projection_weight"):  # zeros at init: the images would not matter
                param.normal_(0, 0.2)
        model.lm_head.weight[IMG] = 0  # never generate the image token
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None  # always max_new_tokens
    return model


def gemma3_batch(images: list[int], prefix: list[int], seed: int = 0, suffix: int = 3) -> dict:
    """A left-padded batch: row r is ``prefix[r]`` text tokens, then ``images[r]`` images (each
    ``<boi>``, its placeholders, ``<eoi>`` and two text tokens), then ``suffix`` text tokens."""
    generator = torch.Generator().manual_seed(seed)

    def text(n):
        return torch.randint(4, 200, (n,), generator=generator).tolist()

    rows = []
    for count, before in zip(images, prefix):
        row = text(before)
        for _ in range(count):
            row += [BOI] + [IMG] * PER_IMAGE + [EOI] + text(2)
        rows.append(row + text(suffix))
    batch = padded_batch(rows, pad_id=PAD)
    batch["token_type_ids"] = (batch["input_ids"] == IMG).long()
    if sum(images):
        batch["pixel_values"] = torch.randn(sum(images), 3, 32, 32, generator=generator)
    return batch


def row_alone(batch: dict, images: list[int], row: int) -> dict:
    """Row ``row`` without its padding, with its own images."""
    keep = batch["attention_mask"][row].bool()
    out = {k: batch[k][row][keep][None] for k in ("input_ids", "attention_mask", "token_type_ids")}
    first = sum(images[:row])
    if images[row]:
        out["pixel_values"] = batch["pixel_values"][first:first + images[row]]
    return out


CHAT_TEMPLATE = ("{% for message in messages %}{% for part in message['content'] %}"
                 "{% if part['type'] == 'image' %}<start_of_image> {% else %}{{ part['text'] }} {% endif %}"
                 "{% endfor %}{% endfor %}{% if add_generation_prompt %}w1{% endif %}")


def tiny_gemma3_processor():
    """transformers' own ``Gemma3Processor`` (PIL image processor at 32 px) over a word-level
    tokenizer with Gemma 3's image tokens, and a one-line chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(100)] + ["what", "is", "this", "?"]
    vocab = {word: i for i, word in enumerate(words)}
    vocab.update({"<image_soft_token>": IMG, "<start_of_image>": BOI, "<end_of_image>": EOI})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>"})
    return Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer,
                           image_seq_length=PER_IMAGE, chat_template=CHAT_TEMPLATE)
