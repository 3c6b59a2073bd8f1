"""Full-size configurations of the paper's models, for random-weight checks and
benchmarks (no download: latency, memory and FLOPs do not depend on weight values).

Values follow the public checkpoints' config.json files (llava-hf; OpenGVLab/InternVL3-8B-hf;
Qwen/Qwen3-VL-8B-Instruct; google/gemma-3-4b-it), written here by hand: nothing can be downloaded to compare them
with, and random-weight runs need only the geometry.
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


def internvl3_8b_config():
    """OpenGVLab/InternVL3-8B-hf: InternViT-300M (24 layers, 448-px tiles of 14-px patches, [CLS]),
    pixel shuffle 0.5 (256 tokens per tile), Qwen2.5-7B (28 layers, GQA 28 / 4)."""
    from transformers import InternVLConfig

    vision = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  image_size=[448, 448], patch_size=[14, 14], attention_bias=True, use_qk_norm=False,
                  layer_scale_init_value=0.1, norm_type="layer_norm", use_mean_pooling=True)
    text = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, vocab_size=151674, max_position_embeddings=32768,
                rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=151667, downsample_ratio=0.5,
                          vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=256,
                          tie_word_embeddings=False)


def qwen3_vl_8b_config():
    """Qwen/Qwen3-VL-8B-Instruct: a 27-block ViT (16-px patches, 2 x 2 merger, DeepStack after
    blocks 8, 16 and 24), Qwen3-8B (36 layers, GQA 32 / 8, interleaved mRoPE)."""
    from transformers import Qwen3VLConfig

    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                  temporal_patch_size=2, spatial_merge_size=2, in_channels=3, out_hidden_size=4096,
                  num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24])
    text = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True})
    return Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=151655, video_token_id=151656,
                         vision_start_token_id=151652, vision_end_token_id=151653)


def gemma3_4b_config():
    """google/gemma-3-4b-it: SigLIP-So400m (27 layers, 896 px, 14-px patches, no [CLS]), a 4 x 4
    average pool to 256 tokens, Gemma 3 4B (34 layers, GQA 8 / 4, head_dim 256; five sliding-window
    layers of 1,024 to one full layer)."""
    from transformers import Gemma3Config

    vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                  image_size=896, patch_size=14, vision_use_head=False, layer_norm_eps=1e-6)
    text = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                vocab_size=262208, max_position_embeddings=131072,
                rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    return Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=256, image_token_id=262144,
                        boi_token_id=255999, eoi_token_id=256000)


CONFIGS = {"llava-1.5-7b": llava_1_5_7b_config, "llava-next-7b": llava_next_7b_config,
           "internvl3-8b": internvl3_8b_config, "qwen3-vl-8b": qwen3_vl_8b_config, "gemma-3-4b": gemma3_4b_config}
