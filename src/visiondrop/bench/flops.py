"""FLOPs of one prefill of a LLaVA-family model, counted analytically from its config
and the visual tokens each decoder layer sees (a schedule's or a handle's report).

Convention (reproduces the paper's Table 4 within 3 %, docs/benchmarks/flops.md):

- a multiply-add is 2 FLOPs; only matrix products are counted (norms, activations,
  softmax and RoPE are below 1 %);
- per transformer layer over ``n`` tokens: the q, k, v, o projections
  (``2 n d (2 d + 2 d_kv)``), the MLP (``2 n d m`` per matrix: 3 gated, 2 plain) and
  attention's two products ``QK^T`` and ``AV`` over the full ``n x n`` square
  (``4 n^2 d``: the paper's count, as FastV's, does not halve it for causality);
- the vision tower runs every crop (or frame) in full, [CLS] included; the projector
  maps every visual token of the encoder's output (Qwen3-VL: its 2 x 2 merger and the
  DeepStack levels' mergers, on every merged token: the encoder stage comes after them);
- the LM head runs on every position the last layer outputs (a plain forward);
- the prompt has ``text_tokens`` text tokens besides the visual ones: 64 matches
  Table 4;
- sliding-window layers (Gemma 3) are counted as full attention: their window (1,024)
  is longer than a one-image prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TABLE4_TEXT_TOKENS = 64


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs of one prefill, by part."""

    vision: int
    projector: int
    llm: int
    lm_head: int

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.llm + self.lm_head

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {getattr(self, name) / 1e12:.3f}"
                          for name in ("vision", "projector", "llm", "lm_head"))
        return f"{self.total / 1e12:.2f} TFLOPs ({parts})"


def transformer_layer_flops(tokens: int, hidden: int, intermediate: int, kv_hidden: int | None = None,
                            gated_mlp: bool = True, attention_width: int | None = None) -> int:
    """FLOPs of one pre-norm transformer layer over ``tokens`` tokens attending to each other.
    ``attention_width``: query heads x head size where it is not ``hidden`` (Gemma 3)."""
    kv_hidden = hidden if kv_hidden is None else kv_hidden
    width = hidden if attention_width is None else attention_width
    projections = 2 * tokens * hidden * (2 * width + 2 * kv_hidden)
    mlp = 2 * tokens * hidden * intermediate * (3 if gated_mlp else 2)
    attention = 4 * tokens * tokens * width
    return projections + mlp + attention


def vision_tokens(vision_config) -> int:
    """Tokens a vision tower runs per image (crop, tile): its patches, plus [CLS] for CLIP
    and InternViT."""
    size, patch = vision_config.image_size, vision_config.patch_size
    size, patch = (size[0] if isinstance(size, (list, tuple)) else size,
                   patch[0] if isinstance(patch, (list, tuple)) else patch)
    has_cls = vision_config.model_type.startswith(("clip", "internvl"))
    return (size // patch) ** 2 + int(has_cls)


def vision_flops(vision_config, images: int = 1, tokens: int | None = None) -> int:
    """The vision tower on ``images`` crops or frames of ``tokens`` tokens each (default: the
    config's image size), every layer on every token (Qwen3-VL's ``depth`` blocks too)."""
    tokens = vision_tokens(vision_config) if tokens is None else tokens
    per_layer = transformer_layer_flops(tokens, vision_config.hidden_size, vision_config.intermediate_size,
                                        gated_mlp=False)
    layers = getattr(vision_config, "num_hidden_layers", None) or vision_config.depth
    return images * layers * per_layer


def projector_flops(config, tokens: int) -> int:
    """LLaVA's two-layer MLP projector on ``tokens`` visual tokens (InternVL's takes the
    pixel shuffle's 4 x wider tokens; Qwen3-VL's merger takes 2 x 2 patches, 4 x wider, and
    runs once more per DeepStack level; Gemma 3's is one matrix after its average pool)."""
    vision, text = config.vision_config.hidden_size, config.text_config.hidden_size
    if config.model_type == "gemma3":
        return 2 * tokens * vision * text
    if config.model_type == "qwen3_vl":
        wide = vision * config.vision_config.spatial_merge_size ** 2
        mergers = 1 + len(config.vision_config.deepstack_visual_indexes or ())
        return mergers * 2 * tokens * (wide * wide + wide * text)
    vision = round(vision / getattr(config, "downsample_ratio", 1.0) ** 2)
    return 2 * tokens * (vision * text + text * text)


def llm_flops(text_config, tokens_per_layer: Sequence[int]) -> int:
    """The decoder stack, layer ``i`` running on ``tokens_per_layer[i]`` tokens."""
    if len(tokens_per_layer) != text_config.num_hidden_layers:
        raise ValueError(f"tokens_per_layer: {len(tokens_per_layer)} counts for a "
                         f"{text_config.num_hidden_layers}-layer LM")
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    kv_hidden = head_dim * getattr(text_config, "num_key_value_heads", heads)
    return sum(transformer_layer_flops(n, text_config.hidden_size, text_config.intermediate_size, kv_hidden,
                                       attention_width=head_dim * heads)
               for n in tokens_per_layer)


def prefill_flops(config, visual_tokens_per_layer: Sequence[int], *, text_tokens: int = TABLE4_TEXT_TOKENS,
                  images: int = 1, projected_tokens: int | None = None,
                  encoder_tokens: int | None = None) -> FlopsBreakdown:
    """FLOPs of one prefill of a LLaVA-family model (``config``: its composite config).

    Args:
        visual_tokens_per_layer: visual tokens each LM decoder layer sees (for the
            unpruned model: the image's placeholder count at every layer).
        text_tokens: text tokens of the prompt.
        images: vision-tower passes (crops of a LLaVA-NeXT image, frames of a video).
        projected_tokens: visual tokens through the projector (default: every
            encoder output token the LM would see unpruned, ``images x`` the feature
            tokens per pass).
        encoder_tokens: tokens per vision-tower pass (default: the config's image size;
            Qwen-VL's depend on the image).
    """
    if text_tokens < 0:
        raise ValueError(f"text_tokens must be >= 0, got {text_tokens}")
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    text = config.text_config
    tokens = [n + text_tokens for n in visual_tokens_per_layer]
    if projected_tokens is None:
        per_pass = vision_tokens(config.vision_config)
        if getattr(config, "vision_feature_select_strategy", "full") == "default":
            per_pass -= 1
        projected_tokens = images * per_pass
    return FlopsBreakdown(
        vision=vision_flops(config.vision_config, images, encoder_tokens),
        projector=projector_flops(config, projected_tokens),
        llm=llm_flops(text, tokens),
        lm_head=2 * tokens[-1] * text.hidden_size * text.vocab_size,
    )


def model_prefill_flops(model, schedule=None, *, method: str | None = None, budget: int | None = None,
                        options: dict | None = None, image_size: tuple[int, int] | None = None,
                        text_tokens: int = TABLE4_TEXT_TOKENS, extra_visual_tokens: int = 0) -> FlopsBreakdown:
    """FLOPs of one prefill of ``model`` (a supported model; a meta-device instance
    will do) with one image, pruned by ``schedule`` (from :func:`visiondrop.plan`; None:
    unpruned) or by ``method`` at ``budget`` (with its ``options``), planned here (needed where each image's stages
    follow its size: Qwen3-VL). ``extra_visual_tokens`` are added to every layer's count
    (Table 4's LLaVA-NeXT rows count the image's 48 newline tokens, docs/benchmarks/flops.md)."""
    from ..methods import get_method
    from ..models import adapter_for

    adapter = adapter_for(model)
    if method is not None:
        if schedule is not None:
            raise ValueError("schedule: give a schedule or a method, not both")
        _, schedule = adapter.plan(get_method(method).from_options(budget=budget, **(options or {})))
    counts = adapter.image_counts(schedule, image_size)
    return prefill_flops(model.config, [n + extra_visual_tokens for n in counts.per_layer], text_tokens=text_tokens,
                         images=counts.encoder_passes, projected_tokens=counts.projected,
                         encoder_tokens=counts.encoder_tokens)


# The paper's Table 4 (TFLOPs): (config, method, budget or None for the full model, paper value)
TABLE4 = (
    ("llava-1.5-7b", None, None, 9.06),
    ("llava-1.5-7b", "visiondrop", 64, 2.11),
    ("llava-next-7b", None, None, 46.25),
    ("llava-next-7b", "visiondrop", 320, 7.70),
)
#: Table 4's LLaVA-NeXT VisionDrop figure is met only if the 672 x 672 image's 48
#: newline tokens (one per row of its 48 x 48 tiled grid) stay in every layer.
TABLE4_NEXT_NEWLINES = 48


def meta_model(name: str):
    """A full-size model of :data:`visiondrop.model_configs.CONFIGS` ``name`` on the meta
    device (no memory, no weights) or, for a path or hub id, that checkpoint's config."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ..model_configs import CONFIGS

    if name in CONFIGS:
        config = CONFIGS[name]()
    else:
        from ..inputs import looks_local

        built_in = f"built-in configurations: {', '.join(CONFIGS)}"
        if not looks_local(name) and "/" not in name:  # not a folder, not a hub id (org/name)
            raise ValueError(f"{name!r} is not one of the {built_in}; or give a checkpoint folder or hub id")
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load {name!r} ({str(error).strip().splitlines()[0]}); {built_in}") from None
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def table4_rows() -> list[dict]:
    """Our count of every Table 4 cell beside the paper's."""
    from ..api import plan

    rows, models = [], {}
    for config, method, budget, paper in TABLE4:
        model = models.setdefault(config, meta_model(config))
        schedule = None if method is None else plan(model, method, budget=budget)
        newlines = TABLE4_NEXT_NEWLINES if config == "llava-next-7b" and method is not None else 0
        flops = model_prefill_flops(model, schedule, extra_visual_tokens=newlines)
        rows.append({"config": config, "method": method or "full", "budget": budget, "paper_tflops": paper,
                     "tflops": flops.total / 1e12, "gap": flops.total / 1e12 / paper - 1, "breakdown": flops})
    return rows
