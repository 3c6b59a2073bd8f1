"""Full-size configurations of the paper's models, for random-weight checks and
benchmarks (no download: latency, memory and FLOPs do not depend on weight values).

Values follow the public llava-hf checkpoints' config.json files.
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig

#: llava-hf/llava-v1.6-vicuna-7b-hf's anyres grids (height, width): at most 2 x 2 tiles + base = 5 crops
NEXT_7B_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _clip_l_336() -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5)


def _vicuna_7b() -> LlamaConfig:
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, rope_theta=10000.0, pad_token_id=32001)


def llava_1_5_7b_config() -> LlavaConfig:
    """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 (24 layers), Vicuna-7B (32 layers, MHA)."""
    return LlavaConfig(vision_config=_clip_l_336(), text_config=_vicuna_7b(), image_token_id=32000,
                       vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")


def llava_next_7b_config() -> LlavaNextConfig:
    """llava-hf/llava-v1.6-vicuna-7b-hf: LLaVA-1.5-7B's towers with anyres crops (up to 5)."""
    return LlavaNextConfig(vision_config=_clip_l_336(), text_config=_vicuna_7b(), image_token_id=32000,
                           vision_feature_layer=-2, vision_feature_select_strategy="default",
                           projector_hidden_act="gelu", image_grid_pinpoints=NEXT_7B_PINPOINTS)


CONFIGS = {"llava-1.5-7b": llava_1_5_7b_config, "llava-next-7b": llava_next_7b_config}
