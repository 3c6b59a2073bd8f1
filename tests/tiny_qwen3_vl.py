"""Tiny random Qwen3-VL models, built in code (prompts: tests/tiny_qwen2_5_vl.py's
``qwen_batch``, which shares the token ids and 14-px patches).

Vision: 4 blocks, 14-px patches, 2 x 2 merger, DeepStack after blocks 1 and 2 (two
levels: features added after LM layers 0 and 1). LM: 8 Qwen3 layers with GQA (4 query /
2 key heads, head_dim 16, per-head q/k norms, interleaved mRoPE [2, 3, 3]).
"""

from __future__ import annotations

import torch
from tiny_qwen2_5_vl import EOS, IMG, PAD, VEND, VID, VOCAB, VSTART, prepared


def tiny_qwen3(seed: int = 0, num_layers: int = 8, attn: str = "sdpa", moe: bool = False):
    """A tiny random ``Qwen3VLForConditionalGeneration`` (or the MoE variant) in eval mode, float32."""
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    torch.manual_seed(seed)
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True},
                pad_token_id=PAD, bos_token_id=1, eos_token_id=EOS)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, temporal_patch_size=2,
                  spatial_merge_size=2, in_channels=3, out_hidden_size=64, num_position_embeddings=64,
                  deepstack_visual_indexes=[1, 2])
    config_class, model_class = ((Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe
                                 else (Qwen3VLConfig, Qwen3VLForConditionalGeneration))
    config = config_class(vision_config=vision, text_config=text, image_token_id=IMG, video_token_id=VID,
                          vision_start_token_id=VSTART, vision_end_token_id=VEND, tie_word_embeddings=False)
    return prepared(model_class(config), attn)


def qwen3_batch(rows: list[list[tuple[str, tuple[int, int, int]]]], prefix: list[int], seed: int = 0,
                suffix: int = 3) -> dict[str, torch.Tensor]:
    """As ``tiny_qwen2_5_vl.qwen_batch``, with Qwen3-VL's video layout: a video of grid
    ``(t, h, w)`` is ``t`` runs of ``h * w / 4`` placeholders, each after two timestamp text
    tokens and between vision_start and vision_end (Qwen3VLProcessor's format)."""
    from tiny_qwen2_5_vl import qwen_batch

    from visiondrop.testing import padded_batch

    batch = qwen_batch(rows, prefix, seed=seed, suffix=suffix)  # the media's pixels and grids
    generator = torch.Generator().manual_seed(seed + 1)

    def text(n):
        return torch.randint(3, 100, (n,), generator=generator).tolist()

    sequences = []
    for media, before in zip(rows, prefix):
        sequence = text(before)
        for kind, (t, h, w) in media:
            if kind == "image":
                sequence += [VSTART] + [IMG] * (t * h * w // 4) + [VEND] + text(2)
            else:
                for _ in range(t):
                    sequence += text(2) + [VSTART] + [VID] * (h * w // 4) + [VEND]
                sequence += text(2)
        sequences.append(sequence + text(suffix))
    padded = padded_batch(sequences, pad_id=PAD)
    batch.update(padded)
    ids = padded["input_ids"]
    batch["mm_token_type_ids"] = (ids == IMG).long() + 2 * (ids == VID).long()
    return batch
