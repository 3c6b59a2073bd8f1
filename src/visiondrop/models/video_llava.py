"""Video-LLaVA (``VideoLlavaForConditionalGeneration``): two CLIP towers (images,
videos) with separate weights, one shared projector, a Llama-family LM.

- Images go through ``image_tower`` as on LLaVA-1.5: the feature layer's tokens without
  [CLS] (256 placeholders on the 7B), one LLM segment per image, planned as usual.
- Videos go through ``video_tower``: every frame is a CLIP image and keeps its [CLS]
  (transformers ignores the select strategy for video), so a video of F frames is
  F x 257 placeholders on the 7B (8 x 257 = 2056), frame-major, [CLS] first in each
  frame. A video is ONE LLM segment; its encoder stage runs on every frame with the
  same (D, C), so it enters the LLM with F x (D + C) tokens, frame after frame.
- Budgets: a video is planned per frame (:func:`~visiondrop.models.base.plan_per_unit`
  with the frame geometry, ``modality="video"``): B / F per frame, so B must be a
  multiple of F; the LLM stages keep F times a frame's counts of the whole video, which
  averages B over the LM's layers within F / 2 + 1 tokens of rounding (a plan that misses
  by more is refused with :class:`~visiondrop.schedule.BudgetInfeasible`). VisionDrop lets
  3 x B enter the LLM for video (``video_entry_factor``, the paper's Implementation
  Details). The paper evaluates Video-LLaVA-7B at ``budget=256``. The same budget is
  also planned for images (their own geometry), so it must suit both: at most 256 on
  the 7B.
- The number of frames F comes from the config (``video_seq_length`` / tokens per
  frame: 2056 / 257 = 8); every video must have F frames.

Hooks: q/k/output of the feature layer of BOTH towers (stashed per modality) and one
pre-hook on the shared projector, which reduces whichever tower's pass is pending
(one call per modality: images, then videos). ``generate()`` encodes both modalities
before the prefill, a plain forward inside it; the reduction of each modality waits
in its own pending slot until the LM starts.

Patch ids (in :class:`~visiondrop.report.PruningReport`): an image's as on LLaVA-1.5;
in a video, frame ``f`` patch ``p`` is ``f * patches_per_frame + p`` and every frame's
[CLS] is -1. The encoder stage has one record for both modalities (one
:class:`~visiondrop.report.SegmentRecord` per image and per frame, ``image`` = the
segment's index); its counts are the larger of the two modalities'.
"""

from __future__ import annotations

import inspect

import torch

from ..core.layout import Segment
from ..methods.base import EncoderStage, ModelGeometry, PruningMethod
from ..report import SegmentRecord, StageRecord
from ..schedule import BudgetInfeasible, Schedule
from .base import ModelAdapter, plan_per_unit
from .decoder import DecoderPruner
from .llava import LlavaAdapter, find_segments

MODALITIES = ("image", "video")


def image_input_key() -> str:
    """The keyword Video-LLaVA's forward takes images by: ``pixel_values`` from
    transformers 5.23, ``pixel_values_images`` before."""
    from transformers.models.video_llava.modeling_video_llava import VideoLlavaModel

    return "pixel_values" if "pixel_values" in inspect.signature(VideoLlavaModel.forward).parameters \
        else "pixel_values_images"


class VideoLlavaAdapter(LlavaAdapter):
    model_classes = ("VideoLlavaForConditionalGeneration",)
    layout_attributes = ("_modalities",)

    def __init__(self, model) -> None:
        ModelAdapter.__init__(self, model)
        config = model.config
        self.base = model.model
        self.towers = {"image": self.base.image_tower, "video": self.base.video_tower}
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"model: vision_feature_layer={layer!r} (several layers) is not supported")
        self.strategy = config.vision_feature_select_strategy
        if self.strategy not in ("default", "full"):
            raise ValueError(f"model: vision_feature_select_strategy={self.strategy!r} is not supported")
        self.feature_layers = {}
        for modality, tower in self.towers.items():
            name = type(tower).__name__
            if name != "CLIPVisionModel":
                raise ValueError(f"model: {modality} tower {name} is not supported; supported: CLIPVisionModel")
            tower = tower.vision_model if hasattr(tower, "vision_model") else tower
            layers = tower.encoder.layers
            hidden_index = layer % (len(layers) + 1)
            if hidden_index == 0:
                raise ValueError("model: vision_feature_layer selects the patch embeddings; no attention to score "
                                 "with")
            self.feature_layers[modality] = layers[hidden_index - 1]
        self.feature_layer = self.feature_layers["image"]
        self.has_cls = True  # CLIP
        vision = config.vision_config
        self.num_patches = (vision.image_size // vision.patch_size) ** 2
        self.encoder_tokens = self.num_patches + 1
        # images: LLaVA-1.5's rule; video frames keep [CLS] whatever the strategy
        self.llm_tokens = self.encoder_tokens - (1 if self.strategy == "default" else 0)
        self.patch_offset = 1 if self.strategy == "full" else 0
        self.frame_tokens = self.encoder_tokens
        video_length = getattr(config, "video_seq_length", None) or 8 * self.frame_tokens
        if video_length % self.frame_tokens:
            raise ValueError(f"model: video_seq_length={video_length} is not a whole number of frames of "
                             f"{self.frame_tokens} tokens")
        self.frames = video_length // self.frame_tokens
        self.video_tokens = self.frames * self.frame_tokens
        self.image_token_id = config.image_token_id
        self.video_token_id = config.video_token_id
        self.pad_token_id = config.text_config.pad_token_id or 0
        self.language_model = self.base.language_model
        self._forward_params = list(inspect.signature(self.base.forward).parameters)
        self._stash: dict = {m: {} for m in MODALITIES}
        self._stash_order: list[str] = []
        self._pending: dict = {}  # modality -> (reduction, encoder patch ids, output patch ids)
        self._modalities: list[str] = []  # modality of each segment of the current prefill
        self.video_schedule: Schedule | None = None
        self.pruner: DecoderPruner | None = None

    # ------------------------------------------------------------ planning
    def geometry(self) -> ModelGeometry:
        """The image geometry (LLaVA-1.5's); :meth:`frame_geometry` is a video frame's."""
        return ModelGeometry(num_layers=len(self.language_model.layers), encoder_tokens=self.encoder_tokens,
                             llm_tokens=self.llm_tokens, has_cls=True)

    def frame_geometry(self) -> ModelGeometry:
        return ModelGeometry(num_layers=len(self.language_model.layers), encoder_tokens=self.encoder_tokens,
                             llm_tokens=self.frame_tokens, has_cls=True, modality="video")

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        """Plans images as LLaVA-1.5 and videos per frame; returns the image schedule
        (the handle's) and keeps the video one in :attr:`video_schedule`. The method's
        reductions read their counts from each stage's spec, so one instance runs both."""
        budget = getattr(method.config, "budget", None)
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 and budget % self.frames:
            lower = budget - budget % self.frames
            raise ValueError(f"budget={budget}: Video-LLaVA plans a video per frame ({self.frames} frames per video), "
                             f"so the budget must be a multiple of {self.frames}; try {lower or lower + self.frames} "
                             f"or {lower + self.frames}")
        image_schedule = method.plan(self.geometry())
        _, video_schedule = plan_per_unit(method, self.frame_geometry(), self.frames, what="frames")
        if tuple(image_schedule.layers or ()) != tuple(video_schedule.layers or ()):
            raise ValueError(f"schedule: images prune before decoder layers {list(image_schedule.layers or ())} but "
                             f"videos before {list(video_schedule.layers or ())}; Video-LLaVA needs the same layers "
                             "for both")
        if (image_schedule.encoder is None) != (video_schedule.encoder is None):
            raise ValueError("schedule: images and videos must both have an encoder stage or both have none")
        if budget is not None:
            # A frame's plan may miss its share by 1 token, which F frames multiply.
            layers = len(self.language_model.layers)
            entering = self.frames * (video_schedule.encoder.total if video_schedule.encoder else self.frame_tokens)
            average = sum(video_schedule.tokens_per_layer(layers, entering)) / layers
            if abs(average - budget) > self.frames / 2 + 1:
                raise BudgetInfeasible(f"budget={budget}: planned per frame, a video would average {average:.1f} "
                                       f"tokens over the LM's layers, more than {self.frames / 2 + 1:g} from the "
                                       "budget; try a larger budget")
        self.video_schedule = video_schedule
        return method, image_schedule

    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        if self.video_schedule is None:
            raise RuntimeError("visiondrop: plan() must run before install() on Video-LLaVA")
        self.method, self.schedule = method, schedule
        self.pruner = DecoderPruner(self.language_model, method, schedule, positions)
        handles = [
            self.model.register_forward_pre_hook(self._reject_labels, with_kwargs=True),
            self.base.register_forward_pre_hook(self._model_pre_hook, with_kwargs=True),
        ]
        if schedule.encoder is not None:
            for modality, layer in self.feature_layers.items():
                attention = layer.self_attn
                handles += [
                    attention.q_proj.register_forward_hook(self._stash_modality(modality, "queries")),
                    attention.k_proj.register_forward_hook(self._stash_modality(modality, "keys")),
                    layer.register_forward_hook(self._stash_modality(modality, "hidden")),
                ]
            handles.append(self.base.multi_modal_projector.register_forward_pre_hook(self._projector_pre_hook))
        handles += self.pruner.register()
        return handles

    def reset(self) -> None:
        for stash in self._stash.values():
            stash.clear()
        self._stash_order.clear()
        self._pending = {}
        if self.pruner is not None:
            self.pruner.session = None

    # ------------------------------------------------------------- encoder
    def _stash_modality(self, modality: str, key: str):
        def hook(module, args, output):
            self._stash[modality][key] = output
            if key == "hidden":  # the layer's output comes after its q/k projections
                if modality in self._stash_order:
                    self._stash_order.remove(modality)
                self._stash_order.append(modality)

        return hook

    def _projector_pre_hook(self, module, args):
        features = args[0]
        count, tokens = features.shape[:2]
        expected = {"image": self.llm_tokens, "video": self.frame_tokens}
        pending = [m for m in self._stash_order if self._stash[m].get("hidden") is not None
                   and self._stash[m]["hidden"].shape[0] == count]
        matching = [m for m in pending if expected[m] == tokens]
        if not matching:
            raise RuntimeError("visiondrop: the projector ran without a matching vision-encoder pass")
        modality = matching[-1]  # the most recent pass (images and videos may match under "full")
        self._stash_order.remove(modality)
        stash = self._stash[modality]
        hidden, queries, keys = (stash.pop(k, None) for k in ("hidden", "queries", "keys"))
        spec = self.schedule.encoder if modality == "image" else self.video_schedule.encoder
        attention = self.feature_layers[modality].self_attn
        heads = attention.num_heads
        n_units, n_tokens, width = hidden.shape

        def per_head(x):
            return x.view(n_units, n_tokens, heads, -1).transpose(1, 2)

        stage = EncoderStage(hidden=hidden, queries=per_head(queries), keys=per_head(keys),
                             scaling=attention.scale, has_cls=True)
        reduction = self.method.reduce_encoder(stage, spec)
        kept = hidden.gather(1, reduction.dominant[..., None].expand(-1, -1, width))
        reduced = torch.cat([kept, reduction.merge.tokens.to(kept.dtype)], dim=1)
        encoder_patches = (torch.arange(n_tokens, device=hidden.device) - 1).expand(n_units, -1)
        out_patches = torch.cat([encoder_patches.gather(1, reduction.dominant),
                                 encoder_patches.gather(1, reduction.merge.targets)], dim=1)
        # Kept until the next pass of this modality (generate(use_cache=False) reuses features).
        self._pending[modality] = (reduction, encoder_patches, out_patches)
        return (reduced.to(features.dtype),)

    # ------------------------------------------------------------- prefill
    def _prefill(self, kwargs, cache):
        if kwargs.get("input_ids") is None and kwargs.get("pixel_values_videos") is not None:
            raise ValueError("input_ids: visiondrop locates video tokens from input_ids; "
                             "passing inputs_embeds with videos is not supported")
        return super()._prefill(kwargs, cache)

    def _image_segments(self, input_ids: torch.Tensor, kwargs) -> list[Segment]:
        """Every image's and every video's placeholders, in sequence order; their
        modalities in :attr:`_modalities`."""
        found = [(s, "image") for s in find_segments(input_ids == self.image_token_id, self.llm_tokens, "image")]
        found += [(s, "video") for s in find_segments(input_ids == self.video_token_id, self.video_tokens,
                                                          "video")]
        found.sort(key=lambda item: (item[0].row, item[0].start))
        self._modalities = [m for _, m in found]
        return [s for s, _ in found]

    def _entry_counts(self, segments: list[Segment]) -> list[int]:
        image_encoder, video_encoder = self.schedule.encoder, self.video_schedule.encoder
        image = image_encoder.total if image_encoder is not None else self.llm_tokens
        video = self.frames * (video_encoder.total if video_encoder is not None else self.frame_tokens)
        return [image if m == "image" else video for m in self._modalities]

    def _segment_stages(self, segments) -> list | None:
        if all(m == "image" for m in self._modalities):
            return None
        return [self.schedule.llm if m == "image" else self.video_schedule.llm for m in self._modalities]

    def _video_ids(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-local patch ids ``(F, n)`` (-1 = [CLS]) to the video's patch ids and to
        columns in the video's placeholder run."""
        frame = torch.arange(local.shape[0], device=local.device)[:, None]
        patches = torch.where(local < 0, -1, frame * self.num_patches + local)
        columns = frame * self.frame_tokens + local + 1
        return patches, columns

    def _entry_patches(self, segments, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Patch ids of each segment's tokens at LM entry and their columns in the
        segment's original placeholder run; adds the encoder stage's record."""
        modalities = self._modalities
        if self.schedule.encoder is None:
            frame = torch.arange(self.frame_tokens, device=device) - 1
            video, _ = self._video_ids(frame.expand(self.frames, -1))
            image = torch.arange(self.llm_tokens, device=device) - self.patch_offset
            patches = [image if m == "image" else video.flatten() for m in modalities]
            return patches, [torch.arange(len(p), device=device) for p in patches]
        counts = {"image": modalities.count("image"), "video": modalities.count("video") * self.frames}
        for modality, needed in counts.items():
            seen = self._pending[modality][2].shape[0] if modality in self._pending else 0
            if needed and seen != needed:
                what = "images" if modality == "image" else "video frames"
                raise RuntimeError(f"visiondrop: {needed} {what} in input_ids but this call's encoder stage saw {seen} "
                                   "(pass their pixel values with their placeholders)")
        specs = [s for s, m in ((self.schedule.encoder, "image"), (self.video_schedule.encoder, "video"))
                 if counts[m]]
        record = StageRecord("encoder", None, self.encoder_tokens, max(s.dominant for s in specs),
                             max(s.contextual for s in specs))
        patches, columns = [], []
        next_unit = {"image": 0, "video": 0}
        for index, (segment, modality) in enumerate(zip(segments, modalities)):
            reduction, encoder_patches, out_patches = self._pending[modality]
            first = next_unit[modality]
            units = 1 if modality == "image" else self.frames
            next_unit[modality] += units
            unit_range = range(first, first + units)
            if modality == "image":
                out, inputs = out_patches[first:first + 1], encoder_patches[first:first + 1]
                patches.append(out[0])
                columns.append((out[0] + self.patch_offset).clamp(min=0))
            else:
                out, out_columns = self._video_ids(out_patches[first:first + units])
                inputs, _ = self._video_ids(encoder_patches[first:first + units])
                patches.append(out.flatten())
                columns.append(out_columns.flatten())
            for local, unit in enumerate(unit_range):
                record.segments.append(SegmentRecord(
                    row=segment.row, image=index, dominant=reduction.dominant[unit],
                    targets=reduction.merge.targets[unit], merged_into=reduction.merge.merged_into[unit],
                    input_patches=inputs[local], output_patches=out[local]))
        self.report.stages.insert(0, record)
        return [p.to(device) for p in patches], [c.to(device) for c in columns]
