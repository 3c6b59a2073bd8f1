"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP or SigLIP tower, MLP projector,
Llama-family LM.

Hooks, all on this model instance:
- the encoder layer whose output LLaVA feeds the projector (``vision_feature_layer``):
  its ``q_proj``/``k_proj`` outputs (scores, merge keys) and its output (features);
- the projector's input: replaced by the encoder stage's D + C tokens;
- ``LlavaModel.forward`` (pre-hook): each image's placeholder run shrinks to D + C
  tokens so that transformers' own ``masked_scatter`` places the reduced features;
  in decode, the caller's full-length attention mask is mapped to the shorter one;
- the LM and its decoder layers: :class:`~visiondrop.models.decoder.DecoderPruner`.

Visual positions always come from ``input_ids`` (transformers 5.23 may encode images
before prefill and never pass ``pixel_values`` to the forward).
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import numpy as np
import torch

from ..core.layout import Segment, host_to_device, plan_compaction, remembered
from ..core.scoring import attention_probs, block_sums
from ..methods.base import EncoderStage, ModelGeometry, PruningMethod
from ..report import PruningReport, SegmentRecord, StageRecord
from ..schedule import Schedule
from ..timing import machinery
from .base import ForwardHooks, ImageCounts, ModelAdapter
from .decoder import DecoderPruner, MaskRule, Session, reindexed_positions

SUPPORTED_TOWERS = ("CLIPVisionModel", "SiglipVisionModel")


def placeholder_runs(flags: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of every run of True in ``flags`` ``(B, L)``, in order
    (one host copy, then numpy: no per-token Python loop)."""
    padded = np.pad(flags.cpu().numpy().astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return [(int(row), int(start), int(end)) for row, start, end in zip(starts[0], starts[1], ends[1])]


def find_segments(flags: torch.Tensor, unit: int, what: str = "image") -> list[Segment]:
    """The placeholder runs of ``flags`` ``(B, L)`` cut into segments of ``unit`` tokens
    (one per image, or per video); a run that is not a multiple of ``unit`` is an error."""
    segments = []
    for row, col, end in placeholder_runs(flags):
        if (end - col) % unit:
            raise ValueError(f"input_ids: row {row} has a run of {end - col} {what} tokens, not a multiple of "
                             f"the {unit} tokens per {what} this model uses")
        segments.extend(Segment(row, start, unit) for start in range(col, end, unit))
    return segments


class LlavaAdapter(ForwardHooks, ModelAdapter):
    model_classes = ("LlavaForConditionalGeneration",)
    #: what ``_image_segments`` leaves on the adapter beside the segments (image sizes,
    #: modalities): remembered with them when a frozen prefill plans once (capture.py)
    layout_attributes: tuple[str, ...] = ()
    #: other per-token inputs of the forward, shortened with ``input_ids`` (Gemma 3's
    #: ``token_type_ids``), and the value an extra image placeholder gets
    aligned_inputs: ClassVar[dict[str, int]] = {}
    #: how the LLM stages build masks (None: causal, :class:`~visiondrop.models.decoder.MaskRule`)
    mask_rule: ClassVar[MaskRule | None] = None

    def __init__(self, model) -> None:
        super().__init__(model)
        config = model.config
        self.base = model.model
        self.tower = self.base.vision_tower
        tower_name = type(self.tower).__name__
        if tower_name not in SUPPORTED_TOWERS:
            raise ValueError(f"model: vision tower {tower_name} is not supported; supported: {SUPPORTED_TOWERS}")
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"model: vision_feature_layer={layer!r} (several layers) is not supported")
        self.strategy = config.vision_feature_select_strategy
        if self.strategy not in ("default", "full"):
            raise ValueError(f"model: vision_feature_select_strategy={self.strategy!r} is not supported")
        tower = self.tower.vision_model if hasattr(self.tower, "vision_model") else self.tower
        encoder, embeddings = tower.encoder, tower.embeddings
        num_layers = len(encoder.layers)
        hidden_index = layer % (num_layers + 1)
        if hidden_index == 0:
            raise ValueError("model: vision_feature_layer selects the patch embeddings; no attention to score with")
        self.feature_layer = encoder.layers[hidden_index - 1]
        self.has_cls = hasattr(embeddings, "class_embedding")
        if self.strategy == "default" and not self.has_cls:
            raise ValueError("model: strategy 'default' drops a [CLS] token this encoder does not have")
        vision = config.vision_config
        self.num_patches = (vision.image_size // vision.patch_size) ** 2
        self.encoder_tokens = self.num_patches + int(self.has_cls)
        self.llm_tokens = self.encoder_tokens - (1 if self.strategy == "default" else 0)
        # index of patch 0 inside an unpruned LLM segment ("full" keeps CLS first)
        self.patch_offset = 1 if (self.has_cls and self.strategy == "full") else 0
        self._init_state(config)

    def _init_state(self, config) -> None:
        """What every LLaVA-style adapter keeps (InternVL's and Gemma 3's constructors too)."""
        self.image_token_id = config.image_token_id
        self.pad_token_id = getattr(config.text_config, "pad_token_id", None) or 0
        self.language_model = self.base.language_model
        self._forward_params = list(inspect.signature(self.base.forward).parameters)
        self._stash: dict = {}
        self._pending: tuple | None = None  # the last encoder stage's reduction and patch ids
        self.pruner: DecoderPruner | None = None

    def geometry(self) -> ModelGeometry:
        return ModelGeometry(
            num_layers=len(self.language_model.layers),
            encoder_tokens=self.encoder_tokens,
            llm_tokens=self.llm_tokens,
            has_cls=self.has_cls,
        )

    def image_counts(self, schedule: Schedule | None, image_size=None) -> ImageCounts:
        layers = len(self.language_model.layers)
        if schedule is None:
            return ImageCounts([self.llm_tokens] * layers, 1, self.llm_tokens)
        entry = schedule.encoder.total if schedule.encoder is not None else self.llm_tokens
        return ImageCounts(schedule.tokens_per_layer(layers, entry), 1, self.llm_tokens)

    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        self.method, self.schedule = method, schedule
        self.pruner = DecoderPruner(self.language_model, method, schedule, positions, mask_rule=self.mask_rule)
        handles = [
            self.model.register_forward_pre_hook(self._reject_labels, with_kwargs=True),
            self.base.register_forward_pre_hook(self._model_pre_hook, with_kwargs=True),
        ]
        if schedule.encoder is not None:
            handles += self._encoder_hooks()
        handles += self.pruner.register()
        return handles

    def _encoder_hooks(self) -> list:
        """The encoder stage's hooks: the feature layer's queries, keys and output, and the
        projector's input, replaced by the stage's tokens."""
        attention = self.feature_layer.self_attn
        return [
            attention.q_proj.register_forward_hook(self._stash_output("queries")),
            attention.k_proj.register_forward_hook(self._stash_output("keys")),
            self.feature_layer.register_forward_hook(self._stash_output("hidden")),
            self.base.multi_modal_projector.register_forward_pre_hook(self._projector_pre_hook),
        ]

    def reset(self) -> None:
        self._stash.clear()
        self._pending = None
        if self.pruner is not None:
            self.pruner.session = None

    # --------------------------------------------------------------- encoder
    def _stash_output(self, key: str):
        def hook(module, args, output):
            self._stash[key] = output

        return hook

    @machinery
    def _projector_pre_hook(self, module, args):
        features = args[0]
        hidden, queries, keys = (self._stash.pop(k, None) for k in ("hidden", "queries", "keys"))
        if hidden is None or hidden.shape[0] != features.shape[0]:
            raise RuntimeError("visiondrop: the projector ran without a matching vision-encoder pass")
        spec = self.schedule.encoder
        attention = self.feature_layer.self_attn
        heads = attention.num_heads
        n_images, n_tokens, width = hidden.shape

        def per_head(x):
            return x.view(n_images, n_tokens, heads, -1).transpose(1, 2)

        stage = EncoderStage(hidden=hidden, queries=per_head(queries), keys=per_head(keys),
                             scaling=attention.scale, has_cls=self.has_cls)
        reduction = self.method.reduce_encoder(stage, spec)
        kept = hidden.gather(1, reduction.dominant[..., None].expand(-1, -1, width))
        reduced = torch.cat([kept, reduction.merge.tokens.to(kept.dtype)], dim=1)

        encoder_patches = torch.arange(n_tokens, device=hidden.device) - int(self.has_cls)
        encoder_patches = encoder_patches.expand(n_images, -1)
        out_patches = torch.cat([encoder_patches.gather(1, reduction.dominant),
                                 encoder_patches.gather(1, reduction.merge.targets)], dim=1)
        # Kept until the next encoder pass: generate(use_cache=False) on transformers
        # 5.23 encodes once and hands the same features to every step's prefill.
        self._pending = (reduction, encoder_patches, out_patches)
        return (reduced.to(features.dtype),)

    def _reduce_blocks(self, features: torch.Tensor, attention, side: int, block: int, skip: int) -> torch.Tensor:
        """The encoder stage on ``features`` ``(n, (side / block) ** 2, C)`` whose tokens each
        stand for a ``block`` x ``block`` square of the feature layer's ``side`` x ``side``
        patch grid (InternVL's pixel shuffle, Gemma 3's average pool), from that layer's
        stashed queries and keys (``skip`` leading non-patch tokens, such as [CLS], query and
        are attended but are not scored). Scores stay visual-only (paper, "Visual Query
        Selection", Eq. 2-4): the mean attention each patch receives, summed over its square;
        merge keys: the keys averaged over heads and over the square. Returns the D + C tokens."""
        queries, keys = (self._stash.pop(k, None) for k in ("queries", "keys"))
        if queries is None or queries.shape[0] != features.shape[0]:
            raise RuntimeError("visiondrop: the projector ran without a matching vision-encoder pass")
        count, tokens, _ = queries.shape

        def per_head(x):
            return x.view(count, tokens, attention.num_heads, -1).transpose(1, 2)

        probs = attention_probs(per_head(queries), per_head(keys), attention.scale)  # (n, tokens, tokens)
        received = probs.mean(dim=1)[:, skip:]
        metric = per_head(keys).mean(dim=1)[:, skip:].float()
        stage = EncoderStage(hidden=features, queries=None, keys=None, scaling=1.0, has_cls=False,
                             received=block_sums(received, side, block),
                             merge_keys=block_sums(metric, side, block) / block ** 2)
        reduction = self.method.reduce_encoder(stage, self.schedule.encoder)
        width = features.shape[-1]
        kept = features.gather(1, reduction.dominant[..., None].expand(-1, -1, width))
        encoder_patches = torch.arange(features.shape[1], device=features.device).expand(count, -1)
        out_patches = torch.cat([reduction.dominant, reduction.merge.targets], dim=1)
        self._pending = (reduction, encoder_patches, out_patches)
        return torch.cat([kept, reduction.merge.tokens.to(kept.dtype)], dim=1)

    # ----------------------------------------------------------------- model
    def _prefill(self, kwargs, cache):
        pruner = self.pruner
        pruner.session = None
        input_ids = kwargs.get("input_ids")
        has_pixels = (kwargs.get("pixel_values") is not None or kwargs.get("pixel_values_images") is not None
                      or bool(kwargs.get("mm_encoder_outputs")))
        if input_ids is None:
            if has_pixels:
                raise ValueError("input_ids: visiondrop locates image tokens from input_ids; "
                                 "passing inputs_embeds with images is not supported")
            return (), kwargs
        # a captured prefill (capture.py) replays one layout: found once, on the host
        segments, state = remembered(("segments", id(self)), lambda: (
            self._image_segments(input_ids, kwargs), {name: getattr(self, name) for name in self.layout_attributes}))
        vars(self).update(state)
        batch, length = input_ids.shape
        self.report = PruningReport(batch, len(self.language_model.layers))
        if not segments:
            mask = kwargs.get("attention_mask")
            self.report.output_mask = torch.ones_like(input_ids) if mask is None else mask
            return (), kwargs
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("past_key_values: pruning a prompt that continues a non-empty cache is not supported")

        device = input_ids.device
        mask = kwargs.get("attention_mask")
        # one check here, while the device queue is short, instead of one per stage
        dense = mask is None or bool(mask.all())
        mask = torch.ones_like(input_ids) if mask is None else mask
        if mask.ndim != 2:
            raise ValueError("attention_mask: visiondrop needs the 2-D padding mask, not a prepared 4-D mask")
        original_positions = kwargs.get("position_ids")
        if original_positions is None:
            original_positions = reindexed_positions(mask)

        kept = self._entry_counts(segments)
        # Rows that shrink more get padding on the left, whatever the caller's side:
        # generate() reads the last column, which must stay each row's last token.
        # An image may also grow: LLaVA-NeXT's release layout of a small, heavily padded
        # image has more tokens than transformers' unpadded one; extra placeholders go last.
        taken = [min(k, s.length) for k, s in zip(kept, segments)]
        extra = [k - t for k, t in zip(kept, taken)]
        plan = plan_compaction(batch, length, segments, taken, extra, pad_side="left")
        source = plan.resolve([torch.arange(t, device=device) for t in taken])
        last = [original_positions[s.row, s.start + s.length - 1] for s in segments]
        entry_ids = plan.gather(source, input_ids, [input_ids.new_full((e,), self.image_token_id) for e in extra],
                                fill=self.pad_token_id)
        entry_mask = plan.gather(source, mask, [mask.new_ones(e) for e in extra], fill=0)
        entry_positions = plan.gather(source, original_positions, [p.expand(e) for p, e in zip(last, extra)], fill=0)
        kwargs["input_ids"] = entry_ids
        for name, placeholder_value in self.aligned_inputs.items():
            values = kwargs.get(name)
            if values is not None:
                kwargs[name] = plan.gather(source, values, [values.new_full((e,), placeholder_value) for e in extra],
                                           fill=0)
        dense = dense and len(set(plan.removed_per_row)) == 1
        # None when no row is padded: spares transformers' device-to-host check of the mask
        kwargs["attention_mask"] = None if dense else entry_mask
        kwargs.pop("position_ids", None)  # set at LM entry by the pruner
        llm_segments = self._llm_segments(plan.new_segments)

        session = Session(
            batch_size=batch,
            original_length=length,
            entry_mask=entry_mask,
            entry_shift=host_to_device(torch.tensor(plan.removed_per_row), device)[:, None],
            report=self.report,
            entry_patches=lambda: self._entry_patches(llm_segments, device),
            original_positions=original_positions,
            original_starts=tuple(s.start for s in segments),
            cache_length=plan.new_length,
            dense=dense,
        )
        pruner.start_prefill(session, llm_segments, range(len(segments)), entry_positions,
                             self._segment_stages(llm_segments))
        return (), kwargs

    # Overridden by adapters whose images vary in size or layout (LLaVA-NeXT).
    def _image_segments(self, input_ids: torch.Tensor, kwargs) -> list[Segment]:
        """One placeholder run per image of ``input_ids``, in order."""
        return find_segments(input_ids == self.image_token_id, self.llm_tokens)

    def _entry_counts(self, segments: list[Segment]) -> list[int]:
        """Placeholders each image keeps in the sequence entering the LM."""
        kept = self.schedule.encoder.total if self.schedule.encoder is not None else self.llm_tokens
        return [kept] * len(segments)

    def _llm_segments(self, entry_segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
        """The visual tokens the LLM stages prune, per image (all of its placeholders here)."""
        return entry_segments

    def _segment_stages(self, segments) -> list | None:
        """Each segment's LLM stages; None: the schedule's for all (every image alike)."""
        return None

    def _entry_patches(self, segments, device) -> tuple[torch.Tensor, int]:
        """Patch ids of each image's tokens at LM entry; adds the encoder stage's record."""
        if self.schedule.encoder is None:
            patches = torch.arange(self.llm_tokens, device=device) - self.patch_offset
            return patches.expand(len(segments), -1), self.patch_offset
        reduction, encoder_patches, out_patches, record = self._encoder_record(len(segments), "images")
        record.segments = [
            SegmentRecord(row=segment.row, image=i, dominant=reduction.dominant[i],
                          targets=reduction.merge.targets[i], merged_into=reduction.merge.merged_into[i],
                          input_patches=encoder_patches[i], output_patches=out_patches[i])
            for i, segment in enumerate(segments)
        ]
        self.report.stages.insert(0, record)
        return out_patches.to(device), self.patch_offset

    def _encoder_record(self, count: int, what: str):
        """The last encoder stage's ``(reduction, encoder patch ids, output patch ids, record)``,
        checked to cover the ``count`` images (tiles) of ``input_ids``."""
        if self._pending is None or self._pending[2].shape[0] != count:
            seen = 0 if self._pending is None else self._pending[2].shape[0]
            raise RuntimeError(f"visiondrop: {count} {what} in input_ids but this call's encoder stage "
                               f"saw {seen} (pass each image's pixel_values with its placeholders)")
        reduction, encoder_patches, out_patches = self._pending
        spec = self.schedule.encoder
        record = StageRecord("encoder", None, encoder_patches.shape[1], spec.dominant, spec.contextual)
        return reduction, encoder_patches, out_patches, record

    def _decode_step(self, kwargs, cache):
        checked = self._decode_tail(kwargs, cache, (self.image_token_id,), "image")
        if checked is None:
            return (), kwargs
        session, query, generated, tail = checked
        pruner = self.pruner
        mask = kwargs.get("attention_mask")
        full_positions = None if mask is None else reindexed_positions(mask)[:, -query:]
        positions = kwargs.get("position_ids")
        if positions is None:
            if full_positions is None:
                # generate()'s rule: real tokens seen so far, counted on the caller's side
                seen = session.entry_mask.long().sum(1, keepdim=True) + session.entry_shift
                full_positions = seen + (generated - query) + torch.arange(query, device=seen.device)
            positions = full_positions
        if pruner.positions == "reindex":
            positions = positions - session.entry_shift
        kwargs.pop("position_ids", None)
        kwargs["attention_mask"] = pruner.start_decode(tail, positions, query, tail_dense=mask is None)
        return (), kwargs
