"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower without [CLS] (896 px, 14-px
patches: 64 x 64 patches), a projector that average-pools each 4 x 4 square of patches into one
token (256 tokens per image), normalises and projects them, and a Gemma 3 LM (1-D RoPE with one
table per layer type; five sliding-window layers to one full one).

**Image blocks.** In a prefill, an image's tokens attend to each other both ways
(``token_type_ids``: each run of image tokens is one block), on top of the causal mask. The
pruned sequence keeps that structure: ``token_type_ids`` is shortened with ``input_ids`` (the
model builds layer 0's masks from it), every LLM stage rebuilds its masks with the model's own
rule over the stage's runs of visual tokens (:class:`ImageBlockMasks`), and the stages' scores
see the same attention (:attr:`~visiondrop.methods.base.DecoderStage.blocks`; the sliding window
too). Decode steps are text and attend causally, as in transformers.

**Encoder stage, at the pooled tokens** (the projector's norm input: after the 4 x 4 average
pool, before the norm and projection, as the LLaVA-1.5 adapter prunes at its projector's input):
scores are visual-only (paper, "Visual Query Selection", Eq. 2-4): the mean attention each patch
receives from the image's 4,096 patches at the last SigLIP layer (the one whose output is
pooled), summed over the 4 x 4 square each token stands for; merge keys are the layer's keys
averaged over heads and over the square (:meth:`LlavaAdapter._reduce_blocks`).

**Budgets: tokens per image** (of 256), averaged over the LM's decoder layers, as LLaVA-1.5's
of 576. With pan and scan, each crop is its own placeholder run and is planned as an image.

**Methods.** visiondrop, fastv, pdrop, pdrop-visual, sparsevlm, random. Refused: visionzip and
vispruner (they rank by [CLS] attention; SigLIP has no [CLS]), pool (Gemma 3 already averages
4 x 4 squares; pool's own cell rule would pool the pooled grid).
"""

from __future__ import annotations

from ..core.layout import image_blocks
from ..methods.base import ModelGeometry, PruningMethod
from ..schedule import Schedule
from ..timing import machinery
from .base import ModelAdapter
from .decoder import MaskRule
from .llava import LlavaAdapter

REFUSED = {
    "visionzip": "visionzip ranks patches by [CLS] attention; Gemma 3's SigLIP tower has no [CLS] token",
    "vispruner": "vispruner ranks patches by [CLS] attention; Gemma 3's SigLIP tower has no [CLS] token",
    "pool": "pool averages the encoder's patch grid; Gemma 3's projector already averages each 4 x 4 square",
}


class ImageBlockMasks(MaskRule):
    """Gemma 3's prefill masks: causal OR within an image block (full layers), and that AND
    the sliding window (sliding layers), built by transformers' own Gemma 3 function from the
    stage's runs of visual tokens. Decode steps take :class:`MaskRule`'s causal masks."""

    bidirectional_images = True

    def build(self, config, layer_type, index, hidden, mask_2d, cache, visual) -> dict:
        if visual is None:
            return super().build(config, layer_type, index, hidden, mask_2d, cache, visual)
        from transformers.models.gemma3.modeling_gemma3 import create_masks_for_vision_model

        # No cache: a pruned prefill starts from an empty one (refused otherwise), and the
        # layers' caches differ in length once earlier layers have run; positional
        # arguments: the cache keyword differs between transformers versions.
        return create_masks_for_vision_model(config, hidden, mask_2d, None, None, image_blocks(visual))


class Gemma3Adapter(LlavaAdapter):
    model_classes = ("Gemma3ForConditionalGeneration",)
    aligned_inputs = {"token_type_ids": 1}
    mask_rule = ImageBlockMasks()

    def __init__(self, model) -> None:
        ModelAdapter.__init__(self, model)
        config = model.config
        self.base = model.model
        self.tower = self.base.vision_tower
        if type(self.tower).__name__ != "SiglipVisionModel":
            raise ValueError(f"model: vision tower {type(self.tower).__name__} is not supported on Gemma 3 "
                             "(SiglipVisionModel only)")
        tower = getattr(self.tower, "vision_model", self.tower)  # transformers < 5.20 nests it
        self.feature_layer = tower.encoder.layers[-1]  # its output is pooled
        projector = self.base.multi_modal_projector
        self.side, self.block = projector.patches_per_image, projector.kernel_size
        self.llm_tokens = self.encoder_tokens = config.mm_tokens_per_image
        if (self.side // self.block) ** 2 != self.llm_tokens or self.side % self.block:
            raise ValueError(f"model: mm_tokens_per_image={self.llm_tokens} does not pool the {self.side} x "
                             f"{self.side} patch grid in equal squares")
        self.num_patches = self.side ** 2
        self.has_cls = False
        self.patch_offset = 0
        self._init_state(config)

    def geometry(self) -> ModelGeometry:
        """One image: its 256 pooled tokens."""
        return ModelGeometry(num_layers=len(self.language_model.layers), encoder_tokens=self.llm_tokens,
                             llm_tokens=self.llm_tokens, has_cls=False)

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        if method.name in REFUSED:
            raise ValueError(f"method {method.name!r} is not supported on Gemma 3: {REFUSED[method.name]}")
        return super().plan(method)

    def _encoder_hooks(self) -> list:
        attention = self.feature_layer.self_attn
        return [
            attention.q_proj.register_forward_hook(self._stash_output("queries")),
            attention.k_proj.register_forward_hook(self._stash_output("keys")),
            self.base.multi_modal_projector.mm_soft_emb_norm.register_forward_pre_hook(self._projector_pre_hook),
        ]

    @machinery
    def _projector_pre_hook(self, module, args):
        # args[0]: (images, 256, C), the pooled tokens entering the projector's norm
        return (self._reduce_blocks(args[0], self.feature_layer.self_attn, self.side, self.block, skip=0),)
