"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): a dynamic-resolution ViT with
window attention and a 2 x 2 patch merger, a Qwen2 LM (q/k/v biases, GQA) with mRoPE.

**Layout.** An image of ``(t, h, w)`` 14-px patches (``image_grid_thw``) reaches the LM
as ``t * h * w / 4`` merged tokens in raster order (t, h/2, w/2): one placeholder run
between ``<|vision_start|>`` and ``<|vision_end|>``. A video (``pixel_values_videos``,
``video_grid_thw``; t = frames / 2) is one segment of all its frames' merged tokens,
pruned as a whole. Patch ids in the report are merged-token indices in that raster
order (``t * (h/2 * w/2) + row * w/2 + col``); a contextual token carries its target's.

Hooks, all on this model instance: a pre-hook on the last vision block (scores);
``model.model.get_image_features`` / ``get_video_features`` replaced by wrappers (the
encoder stage); pre-hooks on ``model.model`` (shortening, decode masks and positions)
and on the LM and its layers (:class:`~visiondrop.models.decoder.DecoderPruner`);
``generate`` wrapped to refuse beam search.

**Encoder stage** (after the merger: the windowed blocks and the merger need every
patch; the issue's "prune after the merger and in the LM"). Scores are visual-only
(paper, "Visual Query Selection" and Eq. 2-4: the mean attention a token receives from
the visual tokens, no text; "Stage-wise Contextual Token Merging" for the rest).
They are recomputed, on any attention backend, from the last vision block's own
``norm1`` -> ``qkv`` -> 2-D RoPE in a pre-hook on that block, over the segments it
attends within (``cu_seqlens``: one image or one video frame, since
the released configs end with a full-attention block; a windowed last block would
score within its windows), and each merged token's score is the sum over its 2 x 2
patches, mapped from window order to raster order as the tower maps its output.
``get_image_features`` / ``get_video_features`` are wrapped on this model instance to
hand the LM each image's D dominant + C contextual tokens (``method.reduce_encoder``:
selection and contextual merging from :mod:`visiondrop.core`, merge keys = the last
block's keys averaged over heads and over each 2 x 2 block). The method gets them
as :class:`~visiondrop.methods.base.EncoderStage`'s ``received`` and ``merge_keys``.

**Shortening before the LM.** Placeholders cannot simply be fewer (``get_rope_index``
and ``get_placeholder_mask`` check them against the grid), so a pre-hook on
``model.model`` computes the mRoPE positions on the full prompt (or takes
``generate()``'s), then shortens ``input_ids``, ``mm_token_type_ids`` and the mask,
and passes positions explicitly. LLM stages: :class:`~visiondrop.models.decoder.DecoderPruner`
with :class:`~visiondrop.models.decoder.MultimodalPositionRule`.

**Positions.** ``positions="keep"``: every kept token keeps its original (t, h, w)
position (a contextual token its target's), text keeps its original positions, decode
continues as the unpruned model. ``positions="reindex"``: the sequence is compacted
with no gaps: each image keeps its tokens' (t, h, w) offsets from where it starts,
text continues at 1 + the largest height/width position of the image's kept tokens (as
``get_rope_index`` does for an image), and decode positions move back by as much as
the prompt's last token did. Each method keeps its own default (VisionDrop "reindex",
FastV "keep"). A forward with a cache and no ``position_ids``
continues from the prompt's last token (transformers' ``rope_deltas`` are not used).

**Budgets: tokens per image.** Images have any size, so each image (each video) is
planned on its own token count n: ``method.plan`` sees an image of n tokens, and the
budget B is, as on LLaVA, that image's visual tokens averaged over the decoder
layers. A video is planned as one unit of n tokens with ``modality="video"``
(VisionDrop lets 3 x B enter the LLM: paper, Implementation Details).
An image with n <= B (or, with an explicit ``schedule=``, fewer tokens than
its largest stage keeps) is passed whole (its LLM stages keep all of it). ``apply()``
validates against the smallest image it prunes (B + 1 tokens), whose plan
``handle.schedule`` shows; the report has every image's. A budget that some larger
image cannot reach (a text-guided method keeps all n tokens until its first stage) is
a ``ValueError`` at that prefill.

**Methods.** visiondrop, random, fastv, pdrop, pdrop-visual, sparsevlm. Refused:
visionzip and vispruner (they score with the [CLS] token, which this tower has not),
pool (it pools one square patch grid; here every image has its own h x w grid).
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_window_index

from ..core.layout import Segment, plan_compaction
from ..core.merging import ContextualMerge
from ..core.scoring import attention_probs
from ..methods.base import EncoderStage, ModelGeometry, PruningMethod, Reduction
from ..report import PruningReport, SegmentRecord, StageRecord
from ..schedule import Schedule, StageSpec
from .base import ForwardHooks, ModelAdapter
from .decoder import DecoderPruner, MultimodalPositionRule, Session, last_token_positions
from .guards import InstanceAttribute
from .llava import placeholder_runs

MODALITIES = ("image", "video")
REFUSED = {
    "visionzip": "visionzip scores with the encoder's [CLS] token; the Qwen2.5-VL vision tower has none",
    "vispruner": "vispruner scores with the encoder's [CLS] token; the Qwen2.5-VL vision tower has none",
    "pool": "pool averages one square patch grid; Qwen2.5-VL gives every image its own h x w grid",
}
QUERY_CHUNK = 1024  # query patches per attention product when scoring (bounds memory on large images)


def received_by_patch(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """``(n,)`` mean attention each patch receives from the ``n`` patches it attends with
    (``(n, heads, d)`` post-RoPE queries and keys), averaged over heads."""
    queries, keys = queries.transpose(0, 1)[None], keys.transpose(0, 1)[None]
    total = torch.zeros(keys.shape[2], dtype=torch.float32, device=keys.device)
    for start in range(0, queries.shape[2], QUERY_CHUNK):
        total += attention_probs(queries[:, :, start:start + QUERY_CHUNK], keys, scaling)[0].sum(dim=0)
    return total / queries.shape[2]


def media_runs(input_ids: torch.Tensor, token_ids: dict[str, int]) -> list[tuple[Segment, str]]:
    """Each placeholder run of ``input_ids`` as ``(segment, modality)``, in row and column order."""
    runs = [(Segment(row, start, end - start), modality) for modality, token_id in token_ids.items()
            for row, start, end in placeholder_runs(input_ids == token_id)]
    return sorted(runs, key=lambda run: (run[0].row, run[0].start))


def token_major(positions: torch.Tensor) -> torch.Tensor:
    """``(B, L, 3)`` (t, h, w) positions from transformers' ``(3, B, L)``, ``(4, B, L)``
    (``generate()``'s, text row first) or 1-D ``(B, L)``."""
    if positions.ndim == 2:
        return positions[..., None].expand(-1, -1, 3)
    return positions[-3:].permute(1, 2, 0)


class Qwen2_5_VLAdapter(ForwardHooks, ModelAdapter):
    model_classes = ("Qwen2_5_VLForConditionalGeneration",)
    model_name = "Qwen2.5-VL"
    #: media whose features the encoder stage reduces (``get_{modality}_features`` wrapped)
    modalities = MODALITIES
    refused = REFUSED

    def __init__(self, model) -> None:
        super().__init__(model)
        config = model.config
        self.base = model.model
        self.visual = self.base.visual
        self.language_model = self.base.language_model
        vision = config.vision_config
        self.merge = vision.spatial_merge_size
        self.score_block = self.visual.blocks[-1]
        self.token_ids = {"image": config.image_token_id, "video": config.video_token_id}
        self.pad_token_id = config.text_config.pad_token_id or 0
        self._forward_params = list(inspect.signature(self.base.forward).parameters)
        self._stash: dict = {}
        self._reductions: dict[str, list] = {}  # per modality: the last encoder pass's reduction of each image
        self._schedules: dict[tuple[int, str], Schedule | None] = {}
        self._prompt_last: torch.Tensor | None = None  # (B, 1, 3) the prompt's last position, caller's side
        self._smallest_pruned = 2  # images of fewer tokens are passed whole (set by plan)
        self.pruner: DecoderPruner | None = None

    # --------------------------------------------------------------- planning
    def geometry(self, tokens: int | None = None, modality: str = "image") -> ModelGeometry:
        """An image (or video) of ``tokens`` merged tokens; default: the smallest one the
        method prunes (see :meth:`plan`)."""
        tokens = self._smallest_pruned if tokens is None else tokens
        return ModelGeometry(num_layers=len(self.language_model.layers), encoder_tokens=tokens,
                             llm_tokens=tokens, has_cls=False, modality=modality)

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        if method.name in self.refused:
            raise ValueError(f"method {method.name!r} is not supported on {self.model_name}: "
                             f"{self.refused[method.name]}")
        budget = getattr(method.config, "budget", None)
        schedule = getattr(method.config, "schedule", None)
        if isinstance(budget, int) and not isinstance(budget, bool) and budget < 1:
            raise ValueError(f"budget must be >= 1 (visual tokens per image), got {budget}")
        if isinstance(budget, int) and not isinstance(budget, bool):
            self._smallest_pruned = budget + 1
        elif isinstance(schedule, Schedule):
            self._smallest_pruned = max((s.total for s in (schedule.encoder, *schedule.llm) if s), default=2)
        else:
            self._smallest_pruned = 2  # the method reports what is missing
        self.method = method
        self._schedules = {}
        return method, method.plan(self.geometry())

    def _segment_schedule(self, tokens: int, modality: str) -> Schedule | None:
        """The schedule of an image (video) of ``tokens`` tokens; None: passed whole."""
        key = (tokens, modality)
        if key not in self._schedules:
            self._schedules[key] = None if tokens < self._smallest_pruned else self._plan_size(tokens, modality)
        return self._schedules[key]

    def _plan_size(self, tokens: int, modality: str) -> Schedule:
        try:
            schedule = self.method.plan(self.geometry(tokens, modality))
        except ValueError as error:
            raise type(error)(f"budget: {self.method.name} cannot prune an {modality} of {tokens} visual tokens: "
                              f"{error}") from None
        if schedule.layers != self.schedule.layers:
            raise ValueError(f"{self.method.name} plans its stages before layers {schedule.layers} for an {modality} "
                             f"of {tokens} tokens, not {self.schedule.layers}; give schedule=... explicitly")
        return schedule

    def _segment_stages(self, runs) -> list[tuple[StageSpec, ...]]:
        stages = []
        for segment, modality in runs:
            schedule = self._segment_schedule(segment.length, modality)
            entry = self._entry_count(segment.length, modality)
            stages.append(schedule.llm if schedule else (StageSpec(entry, 0),) * len(self.schedule.llm))
        return stages

    def _entry_count(self, tokens: int, modality: str) -> int:
        schedule = self._segment_schedule(tokens, modality)
        return schedule.encoder.total if schedule is not None and schedule.encoder is not None else tokens

    # ---------------------------------------------------------------- install
    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        self.method, self.schedule = method, schedule
        self.pruner = DecoderPruner(self.language_model, method, schedule, positions, MultimodalPositionRule())
        handles = [
            self.model.register_forward_pre_hook(self._reject_labels, with_kwargs=True),
            self.base.register_forward_pre_hook(self._model_pre_hook, with_kwargs=True),
        ]
        if schedule.encoder is not None:
            handles.append(self.score_block.register_forward_pre_hook(self._score_pre_hook, with_kwargs=True))
            handles += [self._wrap_features(modality) for modality in self.modalities]
        handles += self.pruner.register()
        return handles

    def reset(self) -> None:
        self._stash.clear()
        self._reductions = {}
        if self.pruner is not None:
            self.pruner.session = None

    # ---------------------------------------------------------------- encoder
    def _score_pre_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        attention = module.attn
        length = hidden.shape[0]
        queries, keys, _ = (attention.qkv(module.norm1(hidden)).reshape(length, 3, attention.num_heads, -1)
                            .permute(1, 0, 2, 3).unbind(0))
        metric = keys.mean(dim=1)  # before RoPE: what a token is, not where
        queries, keys = apply_rotary_pos_emb_vision(queries, keys, *kwargs["position_embeddings"])
        bounds = kwargs["cu_seqlens"].tolist()
        scores = torch.cat([received_by_patch(queries[a:b], keys[a:b], attention.scaling)
                            for a, b in zip(bounds, bounds[1:])])
        unit = self.merge ** 2  # window order keeps each 2 x 2 merge block's patches together
        self._stash["vision"] = (scores.view(-1, unit).sum(dim=1), metric.view(-1, unit, metric.shape[-1]).mean(dim=1))
        return None

    def _wrap_features(self, modality: str) -> InstanceAttribute:
        """``get_{modality}_features`` on this instance: the original, then each image's
        encoder stage. ``functools.wraps`` keeps the signature ``generate()`` inspects."""
        name = f"get_{modality}_features"
        original = getattr(self.base, name)
        signature = inspect.signature(original)

        @functools.wraps(original)
        def get_features(*args, **kwargs):
            output = original(*args, **kwargs)
            grid = signature.bind(*args, **kwargs).arguments[f"{modality}_grid_thw"]
            self._reduce_features(modality, output, grid)
            return output

        return InstanceAttribute(self.base, name, get_features)

    def _reduce_features(self, modality: str, output, grid: torch.Tensor) -> None:
        if not hasattr(output, "pooler_output") or "vision" not in self._stash:
            raise RuntimeError("visiondrop: the vision tower ran without its scores (return_dict=False?)")
        scores, metric = self._raster_order(*self._stash.pop("vision"), grid)
        sizes = (grid.prod(-1) // self.merge ** 2).tolist()
        reduced, reductions = [], []
        for features, image_scores, image_metric in zip(output.pooler_output, scores.split(sizes),
                                                        metric.split(sizes)):
            schedule = self._segment_schedule(features.shape[0], modality)
            if schedule is None:
                reduced.append(features)
                reductions.append(None)
                continue
            stage = EncoderStage(hidden=features[None], queries=None, keys=None, scaling=1.0, has_cls=False,
                                 received=image_scores[None], merge_keys=image_metric[None])
            reduction = self.method.reduce_encoder(stage, schedule.encoder)
            kept = features[reduction.dominant[0]]
            reduced.append(torch.cat([kept, reduction.merge.tokens[0].to(kept.dtype)]))
            reductions.append(reduction)
        output.pooler_output = tuple(reduced)
        self._reduce_more(output, sizes, reductions)
        # Kept until the next encoder pass: generate(use_cache=False) encodes once.
        self._reductions[modality] = list(zip(sizes, reductions))

    def _raster_order(self, scores, metric, grid):
        """Per merged token in raster order: the windowed tower puts its tokens in window
        order (the tower's own ``reverse_indices`` undo it)."""
        config = self.visual.config
        window_index, _ = get_vision_window_index(grid, self.merge, config.window_size, config.patch_size)
        raster = torch.argsort(window_index).to(scores.device)
        return scores[raster], metric[raster]

    def _reduce_more(self, output, sizes: list[int], reductions: list) -> None:  # noqa: B027 (optional override)
        """Other per-token encoder outputs that must follow each image's reduction."""

    # ------------------------------------------------------------------ model
    def _prefill(self, kwargs, cache):
        pruner = self.pruner
        pruner.session = None
        input_ids = kwargs.get("input_ids")
        has_media = any(kwargs.get(k) is not None for k in ("pixel_values", "pixel_values_videos")) or bool(
            kwargs.get("mm_encoder_outputs"))
        if input_ids is None:
            if has_media:
                raise ValueError("input_ids: visiondrop locates image tokens from input_ids; "
                                 "passing inputs_embeds with images is not supported")
            return (), kwargs
        runs = media_runs(input_ids, self.token_ids)
        batch, length = input_ids.shape
        self.report = PruningReport(batch, len(self.language_model.layers))
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask
        if not runs:
            self.report.output_mask = mask
            return (), kwargs
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("past_key_values: pruning a prompt that continues a non-empty cache is not supported")
        if mask.ndim != 2:
            raise ValueError("attention_mask: visiondrop needs the 2-D padding mask, not a prepared 4-D mask")
        self._check_runs(runs, kwargs)
        original = token_major(self._original_positions(kwargs, input_ids))
        self._prompt_last = last_token_positions(original, mask)

        segments = [segment for segment, _ in runs]
        kept = [self._entry_count(segment.length, modality) for segment, modality in runs]
        plan = plan_compaction(batch, length, segments, kept, 0, pad_side="left")
        device = input_ids.device
        source = plan.resolve([torch.arange(k, device=device) for k in kept])
        entry_mask = plan.gather(source, mask, fill=0)
        entry_positions = plan.gather(source, original, fill=0)
        kwargs["input_ids"] = plan.gather(source, input_ids, fill=self.pad_token_id)
        kwargs["mm_token_type_ids"] = plan.gather(source, kwargs["mm_token_type_ids"], fill=0)
        kwargs["attention_mask"] = entry_mask
        kwargs["position_ids"] = entry_positions.permute(2, 0, 1)  # replaced at LM entry by the pruner
        session = Session(
            batch_size=batch, original_length=length, entry_mask=entry_mask, entry_shift=None, report=self.report,
            entry_patches=lambda: self._entry_patches(runs, device), original_positions=original,
            original_starts=tuple(s.start for s in segments), cache_length=plan.new_length)
        pruner.start_prefill(session, plan.new_segments, range(len(runs)), entry_positions,
                             self._segment_stages(runs))
        return (), kwargs

    def _check_runs(self, runs, kwargs) -> None:
        """Each placeholder run must be one whole image (video) of the grid, in order."""
        if kwargs.get("mm_token_type_ids") is None:
            raise ValueError(f"mm_token_type_ids: {self.model_name} needs it for its mRoPE positions (without it "
                             "transformers silently falls back to 1-D positions); pass the processor's output")
        encoded = bool(kwargs.get("mm_encoder_outputs"))
        for modality in MODALITIES:
            lengths = [segment.length for segment, m in runs if m == modality]
            grid = kwargs.get(f"{modality}_grid_thw")
            if grid is not None:
                expected = (grid.prod(-1) // self.merge ** 2).tolist()
            elif encoded and modality in self._reductions:
                expected = [size for size, _ in self._reductions[modality]]
            else:
                continue
            if lengths != expected:
                raise ValueError(f"input_ids: the {modality} placeholder runs have {lengths} tokens but "
                                 f"{modality}_grid_thw gives {expected} (one run per {modality}, in order)")

    def _original_positions(self, kwargs, input_ids) -> torch.Tensor:
        """The unpruned model's positions: the caller's (``generate()`` passes them), else
        ``get_rope_index`` on the full prompt, as transformers would compute them."""
        positions = kwargs.get("position_ids")
        if positions is not None:
            return positions
        if kwargs.get("image_grid_thw") is None and kwargs.get("video_grid_thw") is None:
            raise ValueError("position_ids: with precomputed encoder outputs, pass the mRoPE position_ids "
                             "(or image_grid_thw / video_grid_thw)")
        positions, deltas = self.base.get_rope_index(
            input_ids, kwargs["mm_token_type_ids"], image_grid_thw=kwargs.get("image_grid_thw"),
            video_grid_thw=kwargs.get("video_grid_thw"), attention_mask=kwargs.get("attention_mask"),
            **self._rope_extra(kwargs))
        self.base.rope_deltas = deltas  # as the unpruned forward leaves it
        return positions

    def _rope_extra(self, kwargs) -> dict:
        return {"second_per_grid_ts": kwargs.get("second_per_grid_ts")}

    def _entry_patches(self, runs, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Patch ids (raster merged-token indices) of each segment's tokens at LM entry,
        which are also their columns in the unpruned run; adds the encoder stage's record."""
        encoder = self.schedule.encoder is not None
        order = {modality: iter(self._reductions.get(modality, ())) for modality in MODALITIES}
        patches, records = [], []
        for image, (segment, modality) in enumerate(runs):
            reduction = None
            if encoder:
                size, reduction = next(order[modality], (None, None))
                if size != segment.length:
                    raise RuntimeError(f"visiondrop: the {modality} tokens entered the LM without a matching "
                                       "encoder pass")
            ids = torch.arange(segment.length, device=device)
            if reduction is None:
                reduction = Reduction(ids[None], _no_merge(segment.length, device))
            dominant, targets = reduction.dominant[0].to(device), reduction.merge.targets[0].to(device)
            out = torch.cat([dominant, targets])
            patches.append(out)
            records.append(SegmentRecord(row=segment.row, image=image, dominant=dominant, targets=targets,
                                         merged_into=reduction.merge.merged_into[0], input_patches=ids,
                                         output_patches=out))
        if encoder:
            record = StageRecord("encoder", None, max(r.input_patches.numel() for r in records),
                                 max(r.dominant.numel() for r in records), max(r.targets.numel() for r in records))
            record.segments = records
            self.report.stages.insert(0, record)
        return patches, patches

    def _decode_step(self, kwargs, cache):
        checked = self._decode_tail(kwargs, cache, self.token_ids.values(), "image or video")
        if checked is None:
            return (), kwargs
        session, query, generated, tail = checked
        pruner = self.pruner
        positions = kwargs.get("position_ids")
        if positions is None:  # continue from the prompt's last token, as generate() does
            steps = torch.arange(query, device=self._prompt_last.device)[None, :, None]
            positions = self._prompt_last + (generated - query + 1) + steps
        else:
            positions = token_major(positions)
        if pruner.positions == "reindex":
            positions = positions - (self._prompt_last - session.entry_last)
        kwargs["position_ids"] = positions.permute(2, 0, 1)  # replaced at LM entry by the pruner
        kwargs["attention_mask"] = pruner.start_decode(tail, positions, query,
                                                       tail_dense=kwargs.get("attention_mask") is None)
        return (), kwargs


def _no_merge(tokens: int, device) -> ContextualMerge:
    """An image passed whole: nothing merged."""
    return ContextualMerge(torch.zeros(1, 0, 0, device=device), torch.zeros(1, 0, dtype=torch.long, device=device),
                           torch.full((1, tokens), -1, dtype=torch.long, device=device))
