"""Pruning inside a Llama-family decoder stack with forward pre-hooks only.

The decoder loop (``LlamaModel.forward``) builds one causal mask and one RoPE table
and hands them to every layer. Once a stage shortens the sequence, every later
layer needs a mask, RoPE table and position ids of the new length; pre-hooks
registered on each layer of this one model replace them. Layer 0 is never pruned:
``generate()`` sizes masks and positions from layer 0's cache.

State lives in a :class:`Session`: one prefill and the decode steps that follow it.
In decode each stage's layers see a cache shorter than layer 0's, so their mask is
rebuilt from the stage's 2-D padding mask plus the new tokens' columns, sized
against that stage's own cache layer.

Positions are token-major: ``(B, L)`` for 1-D RoPE, ``(B, L, 3)`` for mRoPE
(Qwen2-VL's temporal, height, width planes), so one gather moves a token's whole
position. A :class:`PositionRule` knows the rest: how "reindex" renumbers, and what
the rotary embedding and the layers take. Decode shifts ("reindex") are the
difference between the last real token's position at LM entry and after each stage.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from ..core.layout import Segment, host_to_device, image_blocks, plan_compaction
from ..methods.base import DecoderStage, PruningMethod
from ..report import PruningReport, SegmentRecord, StageRecord
from ..schedule import Schedule, StageSpec
from ..timing import machinery, named_range

# transformers 5.24 renamed ``past_key_values`` to ``cache`` in forwards, layers and the mask
# builders (the old keyword still works there, with a warning); read and pass whichever this has.
_MASK_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def cache_argument(kwargs: dict):
    """The cache a forward or layer call was given, under either name."""
    cache = kwargs.get("cache")
    return kwargs.get("past_key_values") if cache is None else cache


def returned_cache_name(output) -> str:
    """The field a forward's output holds its cache in: ``cache`` from transformers 5.24 on
    (whose ``past_key_values`` alias warns that it is deprecated), ``past_key_values`` before."""
    return "cache" if "cache" in getattr(output, "__dataclass_fields__", ()) else "past_key_values"


def returned_cache(output):
    """The cache a forward returned, read under the name this transformers uses (no warning)."""
    return getattr(output, returned_cache_name(output), None)


def cache_keyword(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes its cache under (``cache`` from transformers 5.24)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def execution_device(module: nn.Module, fallback: torch.Tensor) -> torch.device:
    """Where ``module`` computes: accelerate's hook decides for a model split by a
    ``device_map`` (its weights may sit on "meta" or elsewhere), else its parameters."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None and param.device.type != "meta" else fallback.device


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama-family rotary embedding; ``x`` ``(S, H, M, d)``, ``cos``/``sin`` ``(S, M, d)``."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (x * cos) + (rotate_half(x) * sin)


def reindexed_positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions 0..n-1 over each row's real tokens, padding at 0 (``generate()``'s rule)."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 0)


def last_token_positions(positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1[, planes])``: the position of each row's last real token."""
    last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
    return positions[torch.arange(mask.shape[0], device=mask.device), last.to(positions.device)][:, None]


class PositionRule:
    """1-D RoPE (Llama, Qwen2): position ids ``(B, L)``; "reindex" numbers each row's
    real tokens 0..n-1."""

    #: "reindex" starts from the kept tokens' own positions (False: from the mask only)
    reindex_from_kept = False

    def reindexed(self, mask: torch.Tensor, segments: Sequence[Segment], kept: torch.Tensor | None,
                  dense: bool = False) -> torch.Tensor:
        """``dense``: ``mask`` is known to have no padding (every row is 0..L-1)."""
        if dense:
            return torch.arange(mask.shape[1], device=mask.device).expand(mask.shape[0], -1)
        return reindexed_positions(mask)

    def rope_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """What the LM's ``position_ids`` and its ``rotary_emb`` take."""
        return positions

    def layer_ids(self, positions: torch.Tensor) -> torch.Tensor | None:
        """The ``position_ids`` decoder layers get (flash-attention reads them)."""
        return positions


class MultimodalPositionRule(PositionRule):
    """mRoPE (Qwen2-VL, Qwen2.5-VL): token-major ``(B, L, 3)`` (t, h, w) positions; the
    LM takes ``(3, B, L)``. Layers get no ``position_ids``, as in a plain forward of the
    unpruned model: gapped positions would look like packed sequences to flash attention.

    "reindex" compacts the sequence so that it has no gaps: each text token continues at
    the previous token's position + 1; a visual segment keeps its tokens' (t, h, w)
    offsets from the position its image started at; the token after a segment
    continues at 1 + the largest height/width position among its kept tokens
    (``get_rope_index`` advances by max(h, w) / 2, the same for an unpruned image)."""

    reindex_from_kept = True

    def reindexed(self, mask, segments, kept, dense: bool = False):
        out = torch.zeros_like(kept, device="cpu")
        source, real = kept.cpu(), mask.bool().cpu()
        for row in range(mask.shape[0]):
            row_segments = sorted((s for s in segments if s.row == row), key=lambda s: s.start)
            self._compact_row(source[row], real[row], row_segments, out[row])
        return out.to(kept.device)

    @staticmethod
    def _compact_row(source, real, segments, out) -> None:
        source_next = out_next = 0  # where the next token starts, before and after compaction
        column = 0
        for segment in [*segments, Segment(-1, len(real), 0)]:
            text = real[column:segment.start].nonzero().squeeze(1) + column
            if len(text):
                out[text] = out_next + torch.arange(len(text))[:, None]
                out_next += len(text)
                source_next = int(source[text[-1]].max()) + 1
            if not segment.length:
                break
            span = slice(segment.start, segment.start + segment.length)
            out[span] = source[span] - source_next + out_next
            source_next = int(source[span, 1:].max()) + 1
            out_next = int(out[span, 1:].max()) + 1
            column = segment.start + segment.length

    def rope_ids(self, positions):
        return positions.permute(2, 0, 1)

    def layer_ids(self, positions):
        return None


class MaskRule:
    """Causal masks, one per layer type (full / sliding window), as Llama- and
    Qwen2-family stacks build them; ``layer_idx`` sizes a mask against that layer's cache."""

    #: an image's tokens attend to each other both ways in prefill (Gemma 3); the
    #: stages' scores then see the same attention (:attr:`DecoderStage.blocks`)
    bidirectional_images = False

    def build(self, config, layer_type: str, index: int, hidden: torch.Tensor, mask_2d: torch.Tensor | None,
              cache, visual: torch.Tensor | None) -> dict:
        """``{layer_type: 4-D mask}`` for the layers of a stage (more types may come at
        once). ``visual``: bool ``(B, L)`` visual columns in a prefill when
        :attr:`bidirectional_images`, else None."""
        build = create_sliding_window_causal_mask if layer_type == "sliding_attention" else create_causal_mask
        # position_ids=None: with gapped positions the mask builders would take the
        # batch for packed sequences. layer_idx: size against this layer's cache.
        return {layer_type: build(config=config, inputs_embeds=hidden, attention_mask=mask_2d, position_ids=None,
                                  layer_idx=index, **{_MASK_CACHE_KEYWORD: cache})}


@dataclass
class Layout:
    """The visual layout of the current prefill sequence."""

    mask: torch.Tensor  # (B, L) 2-D padding mask, 1 = real token
    positions: torch.Tensor  # (B, L) position ids, (B, L, planes) for mRoPE
    segments: tuple[Segment, ...]
    images: tuple[int, ...]  # image index of each segment
    patches: list[torch.Tensor]  # per segment: the patch id of each of its visual tokens
    origins: torch.Tensor | None = None  # (B, L) column at LM entry of each token, -1 if merged

    def to(self, device: torch.device) -> Layout:
        """This layout on ``device`` (a stage on a layer that a device map put elsewhere)."""
        if self.mask.device == device:
            return self
        moved = Layout(self.mask.to(device), self.positions.to(device), self.segments, self.images,
                       [p.to(device) for p in self.patches], None if self.origins is None else self.origins.to(device))
        moved.__dict__.update({k: v for k, v in self.__dict__.items() if k == "row_counts"})  # CPU, computed once
        return moved

    def visual(self, device: torch.device) -> torch.Tensor:
        """bool ``(B, L)``: the visual columns of every row (built on the host: one copy,
        not a launch per image)."""
        visual = np.zeros(tuple(self.mask.shape), dtype=bool)
        for segment in self.segments:
            visual[segment.row, segment.start:segment.start + segment.length] = True
        return host_to_device(torch.from_numpy(visual), device)

    @cached_property
    def row_counts(self) -> torch.Tensor:
        """Visual tokens in each row (CPU)."""
        counts = torch.zeros(self.mask.shape[0], dtype=torch.long)
        for segment in self.segments:
            counts[segment.row] += segment.length
        return counts


@dataclass
class SegmentGroup:
    """Segments pruned together: the same length at LM entry and the same LLM stages
    (one image size of one modality). Methods see one group at a time, so their
    tensors stay rectangular; each group keeps its own ``memo``."""

    indices: tuple[int, ...]  # positions in Layout.segments
    specs: dict  # decoder layer -> StageSpec for these segments
    memo: dict = field(default_factory=dict)


@dataclass
class StageState:
    mask: torch.Tensor  # (B, L_k) 2-D padding mask after this stage (prefill part)
    shift: torch.Tensor  # (B, 1[, planes]) how far "reindex" moved the last token back, LM entry to here
    dense: bool = False  # ``mask`` has no padding (known on the host)


@dataclass
class Session:
    """One pruned prefill and its decode steps."""

    batch_size: int
    original_length: int  # prompt length as the caller sees it
    entry_mask: torch.Tensor  # (B, L1) 2-D mask of the sequence entering the LM
    entry_shift: torch.Tensor | None  # (B, 1) real tokens removed before the LM (encoder stage)
    report: PruningReport
    # Finishing the LM-entry layout waits for the vision encoder, which may run after
    # the model's pre-hook: ``entry_patches() -> (patch ids per segment, where)``; where:
    # the index of patch 0 in the original run (patch id + index = original column), or
    # one tensor of original columns per segment ("keep" positions), or None (no "keep").
    entry_patches: Callable[[], tuple[torch.Tensor, int]] | None = None
    original_positions: torch.Tensor | None = None  # (B, L0[, planes]) the caller's positions
    original_starts: tuple[int, ...] = ()  # each segment's start before the encoder stage
    layout: Layout | None = None
    stages: dict[int, StageState] = field(default_factory=dict)
    overrides: dict | None = None  # positions and RoPE for the layers after a stage
    mask_source: tuple | None = None  # (hidden, 2-D mask, cache, visual) the stage's 4-D masks are built from
    masks: dict = field(default_factory=dict)  # layer type -> 4-D mask for the current stage
    decoding: bool = False
    # The prefill's current 2-D mask has no padding, known on the host: masks are then
    # built from None, which spares transformers' device-to-host check of the mask.
    dense: bool = False
    entry_dense: bool = False  # ``dense`` at LM entry
    decode_dense: bool = False  # the decode step's columns have no padding either
    tail_mask: torch.Tensor | None = None  # (B, t) mask columns after the prompt
    decode_positions: torch.Tensor | None = None  # (B, q[, planes]) LM-entry positions in decode
    entry_last: torch.Tensor | None = None  # (B, 1[, planes]) the last real token's position at LM entry
    cache_length: int = 0  # what layer 0's cache should hold
    cache: weakref.ref | None = None  # the cache object the prefill filled
    groups: list[SegmentGroup] = field(default_factory=list)
    score_input: tuple | None = None  # (layer, hidden, cos_sin) of the layer before a stage


class DecoderPruner:
    """LLM-side stages of one method on one decoder stack (``LlamaModel``-like:
    ``layers``, ``rotary_emb``, ``config``; layers with ``input_layernorm`` and
    ``self_attn.{q,k}_proj``). ``position_rule``: :class:`MultimodalPositionRule` for
    mRoPE stacks; positions handed in are then ``(B, L, 3)``. ``mask_rule``: how a stage's
    masks are built (:class:`MaskRule`; Gemma 3's adds image blocks)."""

    def __init__(self, language_model: nn.Module, method: PruningMethod, schedule: Schedule, positions: str,
                 position_rule: PositionRule | None = None, mask_rule: MaskRule | None = None):
        self.lm = language_model
        self.method = method
        self.positions = positions
        self.rule = position_rule or PositionRule()
        self.mask_rule = mask_rule or MaskRule()
        self.layer_types = getattr(language_model.config, "layer_types", None)
        # Gemma 3 keeps one RoPE table per layer type (``rotary_emb(x, ids, layer_type)``)
        self.rope_by_layer_type = "layer_type" in inspect.signature(language_model.rotary_emb.forward).parameters
        self.stage_specs = dict(zip(schedule.layers or (), schedule.llm))
        self.score_offset = method.score_layer_offset
        self.wants_entry = type(method).prepare_llm is not PruningMethod.prepare_llm
        self.session: Session | None = None
        self._pruned_caches: weakref.WeakSet = weakref.WeakSet()

    def register(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = [self.lm.register_forward_pre_hook(self._lm_pre_hook, with_kwargs=True),
                   self.lm.register_forward_hook(self._lm_post_hook)]
        for index, layer in enumerate(self.lm.layers):
            handles.append(layer.register_forward_pre_hook(self._make_layer_hook(index), with_kwargs=True))
        return handles

    # ------------------------------------------------------------------ entry
    def start_prefill(self, session: Session, segments: Sequence[Segment], images: Sequence[int],
                      entry_positions: torch.Tensor, stages: Sequence[Sequence[StageSpec]] | None = None) -> None:
        """Called by the adapter before the LM runs a pruned prompt: ``segments`` and
        ``entry_positions`` describe the sequence entering the LM (the caller's positions
        gathered there); ``session.entry_patches`` is called once the LM starts.
        ``stages``: each segment's LLM stages (default: the schedule's), for segments
        of another size or modality than the one the schedule was planned for."""
        origins = torch.arange(session.entry_mask.shape[1], device=entry_positions.device)
        session.layout = Layout(session.entry_mask, entry_positions, tuple(segments), tuple(images),
                                [], origins.expand(entry_positions.shape[0], -1))
        default = tuple(self.stage_specs.values())
        groups: dict[tuple, list[int]] = {}
        for index, segment in enumerate(segments):
            specs = default if stages is None else tuple(stages[index])
            groups.setdefault((segment.length, specs), []).append(index)
        session.groups = [SegmentGroup(tuple(indices), dict(zip(self.stage_specs, specs)))
                          for (_, specs), indices in groups.items()]
        session.entry_dense = session.dense
        self.session = session

    def _finish_entry(self, session: Session) -> None:
        layout = session.layout
        patches, offset = session.entry_patches()
        layout.patches = list(patches)
        session.report.output_mask = layout.mask
        if self.positions == "keep" or self.rule.reindex_from_kept:
            self._place_original_positions(session, offset)
        if self.positions == "reindex":
            layout.positions = self.rule.reindexed(layout.mask, layout.segments, layout.positions, session.dense)
        session.entry_last = last_token_positions(layout.positions, layout.mask)

    def _place_original_positions(self, session: Session, offset) -> None:
        """A visual token takes the original position of its patch."""
        layout = session.layout
        original = session.original_positions
        for i, (segment, patch_row, original_start) in enumerate(
                zip(layout.segments, layout.patches, session.original_starts)):
            local = offset[i] if isinstance(offset, list) else (patch_row + offset).clamp(min=0)
            source = original_start + local.to(original.device)
            span = slice(segment.start, segment.start + segment.length)
            layout.positions[segment.row, span] = original[segment.row, source]

    @machinery
    def _lm_pre_hook(self, module, args, kwargs):
        session = self.session
        if session is None:
            return None
        if session.decoding:
            kwargs["position_ids"] = self.rule.rope_ids(session.decode_positions)
            return args, kwargs
        self._finish_entry(session)
        kwargs["position_ids"] = self.rule.rope_ids(session.layout.positions)
        use_cache = kwargs.get("use_cache")
        use_cache = getattr(self.lm.config, "use_cache", True) if use_cache is None else use_cache
        if kwargs.get("attention_mask") is None and cache_argument(kwargs) is None and not use_cache:
            # transformers >= 5.25 reads position ids that are not consecutive ("keep"
            # positions) as packed sequences when given no mask and no cache
            kwargs["attention_mask"] = session.layout.mask
        return args, kwargs

    def _lm_post_hook(self, module, args, output):
        session = self.session
        if session is not None:
            session.mask_source = None  # it holds the cache
        cache = returned_cache(output)
        if session is not None and not session.decoding and cache is not None:
            session.cache = weakref.ref(cache)  # a strong one would keep the cache alive
            self._pruned_caches.add(cache)

    def was_pruned(self, cache) -> bool:
        return cache in self._pruned_caches

    def continues(self, cache) -> bool:
        """Whether ``cache`` is the one the last pruned prefill filled, at the expected length."""
        session = self.session
        return (session is not None and session.cache is not None and session.cache() is cache
                and cache.get_seq_length() == session.cache_length)

    # ----------------------------------------------------------------- layers
    def _make_layer_hook(self, index: int):
        def hook(module, args, kwargs):
            session = self.session
            if session is None:
                return None
            if session.decoding:
                return self._decode_layer(index, args, kwargs)
            return self._prefill_layer(index, module, args, kwargs)

        return hook

    @machinery
    def _prefill_layer(self, index: int, layer: nn.Module, args, kwargs):
        session = self.session
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0 and self.wants_entry and session.layout.segments:
            entry = self._follow(execution_device(layer, hidden), hidden)
            for group in session.groups:
                self.method.prepare_llm(self._stage_view(group, None, entry, None, entry))
        if index in self.stage_specs and session.layout.segments:
            # a stage computes where the layer that scores it does (a split model's layers differ)
            score_layer = session.score_input[0] if self.score_offset == -1 else layer
            hidden = self._follow(execution_device(score_layer, hidden), hidden)
            with named_range(f"llm_stage@{index}"):
                hidden = self._prune(index, layer, hidden, kwargs)
            args = (hidden, *args[1:]) if args else args
            if not args:
                kwargs["hidden_states"] = hidden
        if self.score_offset == -1 and index + 1 in self.stage_specs:
            # The next stage scores with this layer's attention, on this layer's input.
            session.score_input = (layer, hidden, self._cos_sin(index, kwargs))
        if index == 0 or index in self.stage_specs:  # the count holds until the next stage
            session.report.layer_visual_tokens[:, index:] = session.layout.row_counts[:, None]
        self._apply_overrides(index, kwargs)
        return args, kwargs

    def _follow(self, device: torch.device, hidden: torch.Tensor) -> torch.Tensor:
        """Move the session's prefill state (and ``hidden``) to ``device``; free when it is there."""
        session = self.session
        if session.layout.mask.device != device:
            session.layout = session.layout.to(device)
            session.entry_last = session.entry_last.to(device)
            for group in session.groups:
                group.memo = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in group.memo.items()}
        return hidden.to(device)

    def _stage_view(self, group: SegmentGroup, layer: nn.Module | None, score_hidden: torch.Tensor, cos_sin,
                    hidden: torch.Tensor) -> DecoderStage:
        """The :class:`DecoderStage` of ``group``'s segments in the current layout: visual
        tokens of ``hidden``; keys and queries from ``layer``'s projections on
        ``score_hidden`` (none when ``layer`` is None)."""
        layout = self.session.layout
        batch, length, width = hidden.shape
        device = hidden.device
        segments = [layout.segments[i] for i in group.indices]
        row_ids = [s.row for s in segments]
        if row_ids == list(range(batch)):  # one image per row, in row order (the usual batch): no row gathers
            def of_rows(tensor):
                return tensor
        else:
            rows = host_to_device(torch.tensor(row_ids), device)

            def of_rows(tensor):
                return tensor[rows]
        starts = host_to_device(torch.tensor([s.start for s in segments]), device)
        columns = starts[:, None] + torch.arange(segments[0].length, device=device)
        row_mask = of_rows(layout.mask).bool()
        visual = layout.visual(device)  # every image of the row, not only this group's
        if self.session.dense:  # no padding: each row's last column is its last token
            last = torch.full((len(segments),), length - 1, device=device)
        else:
            last = (row_mask.long() * torch.arange(length, device=device)).argmax(dim=1)
        row_hidden = of_rows(hidden)
        stage = DecoderStage(hidden=row_hidden.gather(1, columns[..., None].expand(-1, -1, width)), keys=None,
                             key_mask=None, visual_columns=columns, scaling=1.0, project_queries=None,
                             row_hidden=row_hidden, row_mask=row_mask, row_visual=of_rows(visual),
                             last_columns=last, origins=of_rows(layout.origins), memo=group.memo)
        if layer is None:
            return stage
        attn = layer.self_attn
        head_dim = attn.head_dim
        cos, sin = cos_sin
        normed = layer.input_layernorm(of_rows(score_hidden))
        # Qwen3 and Gemma 3 normalise each head's queries and keys before RoPE
        q_norm, k_norm = (getattr(attn, name, None) or nn.Identity() for name in ("q_norm", "k_norm"))
        keys = k_norm(attn.k_proj(normed).view(len(segments), length, -1, head_dim)).transpose(1, 2)
        cos, sin = (of_rows(cos), of_rows(sin)) if cos.shape[0] == batch else (cos, sin)
        local = torch.arange(len(segments), device=device)[:, None]

        def project_queries(cols: torch.Tensor) -> torch.Tensor:
            picked = normed[local, cols]
            queries = q_norm(attn.q_proj(picked).view(*cols.shape, -1, head_dim)).transpose(1, 2)
            return apply_rope(queries, cos.expand(len(segments), -1, -1)[local, cols],
                              sin.expand(len(segments), -1, -1)[local, cols])

        stage.keys = apply_rope(keys, cos, sin)
        if self.mask_rule.bidirectional_images:
            stage.blocks = image_blocks(stage.row_visual)
        stage.window = getattr(attn, "sliding_window", None)
        stage.key_mask = stage.query_mask(columns)
        stage.scaling = attn.scaling
        stage.project_queries = project_queries
        return stage

    def _prune(self, index: int, layer: nn.Module, hidden: torch.Tensor, kwargs) -> torch.Tensor:
        session, layout = self.session, self.session.layout
        batch, length, _ = hidden.shape
        if self.score_offset == -1:
            score_layer, score_hidden, cos_sin = session.score_input
            score_hidden = score_hidden.to(hidden.device)
        else:
            cos_sin = self._cos_sin(index, kwargs)
            score_layer, score_hidden = layer, hidden
        cos_sin = tuple(t.to(hidden.device) for t in cos_sin)
        count = len(layout.segments)
        # One group holding every segment in order (every image alike: the usual batch):
        # the reduction's (S, ...) tensors go to the plan as they are. Otherwise, one
        # entry per segment, as the groups differ in counts.
        whole = len(session.groups) == 1 and session.groups[0].indices == tuple(range(count))
        specs: list[StageSpec] = [None] * count
        dominant: list | torch.Tensor = [None] * count
        targets: list | torch.Tensor = [None] * count
        merged_into: list | torch.Tensor = [None] * count
        tokens: list | torch.Tensor = [None] * count
        target_columns: list | torch.Tensor = [None] * count
        for group in session.groups:
            spec = group.specs[index]
            stage = self._stage_view(group, score_layer, score_hidden, cos_sin, hidden)
            reduction = self.method.reduce_llm(stage, spec)
            # What the method returned, not the spec: SparseVLM's recycled count follows
            # from how many tokens it pruned, which differs from a scaled spec's share.
            kept = StageSpec(reduction.dominant.shape[1], reduction.merge.tokens.shape[1])
            if whole:
                specs = [kept] * count
                dominant, targets = reduction.dominant, reduction.merge.targets
                merged_into, tokens = reduction.merge.merged_into, reduction.merge.tokens
                target_columns = stage.visual_columns.gather(1, targets)
                break
            for local, i in enumerate(group.indices):
                specs[i] = kept
                dominant[i] = reduction.dominant[local]
                targets[i] = reduction.merge.targets[local]
                merged_into[i] = reduction.merge.merged_into[local]
                tokens[i] = reduction.merge.tokens[local]
                target_columns[i] = stage.visual_columns[local].gather(0, targets[i])

        plan = plan_compaction(batch, length, layout.segments, [s.dominant for s in specs],
                               [s.contextual for s in specs])
        source = plan.resolve(dominant)
        new_hidden = plan.gather(source, hidden, tokens)
        # no row padded before, and every row shrinks alike: none is padded after
        dense = session.dense and len(set(plan.removed_per_row)) == 1
        if whole:
            no_origin = layout.origins.new_full((count, specs[0].contextual), -1)
        else:
            no_origin = [layout.origins.new_full((s.contextual,), -1) for s in specs]
        if dense:
            new_mask = layout.mask.new_ones(batch, plan.new_length)
        else:
            ones = (layout.mask.new_ones(count, specs[0].contextual) if whole
                    else [layout.mask.new_ones(s.contextual) for s in specs])
            new_mask = plan.gather(source, layout.mask, ones, fill=0)
        new_positions = None
        if self.positions == "keep" or self.rule.reindex_from_kept:
            if whole:
                rows = host_to_device(torch.tensor([seg.row for seg in layout.segments]), hidden.device)
                target_positions = layout.positions[rows[:, None], target_columns]
            else:
                target_positions = [layout.positions[seg.row, cols]
                                    for seg, cols in zip(layout.segments, target_columns)]
            new_positions = plan.gather(source, layout.positions, target_positions, fill=0)
        if self.positions == "reindex":
            new_positions = self.rule.reindexed(new_mask, plan.new_segments, new_positions, dense)
        if whole:
            patches = torch.stack(layout.patches)
            new_patches = list(torch.cat([patches.gather(1, dominant), patches.gather(1, targets)], 1).unbind(0))
        else:
            new_patches = [torch.cat([patches.gather(0, d), patches.gather(0, t)])
                           for patches, d, t in zip(layout.patches, dominant, targets)]

        record = StageRecord("llm", index, max(s.length for s in layout.segments),
                             max(s.dominant for s in specs), max(s.contextual for s in specs))
        for i, segment in enumerate(layout.segments):
            record.segments.append(SegmentRecord(
                row=segment.row, image=layout.images[i], dominant=dominant[i], targets=targets[i],
                merged_into=merged_into[i], input_patches=layout.patches[i], output_patches=new_patches[i]))
        session.report.stages.append(record)

        session.dense = dense
        new_last = new_positions[:, -1:] if session.dense else last_token_positions(new_positions, new_mask)
        session.stages[index] = StageState(mask=new_mask, shift=session.entry_last - new_last, dense=session.dense)
        new_origins = plan.gather(source, layout.origins, no_origin, fill=-1)
        session.layout = Layout(new_mask, new_positions, plan.new_segments, layout.images, new_patches, new_origins)
        session.report.output_mask = new_mask
        self._start_stage(new_hidden, None if session.dense else new_mask, new_positions, kwargs)
        return new_hidden

    def _start_stage(self, hidden, mask_2d, positions, kwargs) -> None:
        """New positions and RoPE for this stage's layers; their masks are built per
        layer type on first use (:meth:`_apply_overrides`), from ``mask_2d`` (None: no
        padding, which spares transformers' device-to-host check of the mask)."""
        session = self.session
        ids = self.rule.rope_ids(positions)
        if self.rope_by_layer_type:
            rotary = {kind: self.lm.rotary_emb(hidden, ids, kind) for kind in sorted(set(self.layer_types))}
        else:
            rotary = self.lm.rotary_emb(hidden, position_ids=ids)
        session.overrides = {"position_embeddings": rotary, "position_ids": self.rule.layer_ids(positions)}
        image_blocks_here = self.mask_rule.bidirectional_images and not session.decoding
        visual = session.layout.visual(hidden.device) if image_blocks_here else None
        session.mask_source = (hidden, mask_2d, cache_argument(kwargs), visual)
        session.masks = {}

    def _layer_type(self, index: int) -> str:
        # Qwen2-family and Gemma 3 stacks mix full and sliding-window layers
        # (config.layer_types), each with its own mask and, in decode, its own cache length.
        return self.layer_types[index] if self.layer_types else "full_attention"

    def _cos_sin(self, index: int, kwargs) -> tuple:
        """The RoPE table layer ``index`` runs with: the current stage's, else the LM's."""
        overrides = self.session.overrides
        if overrides is None:
            return kwargs["position_embeddings"]
        rotary = overrides["position_embeddings"]
        return rotary[self._layer_type(index)] if isinstance(rotary, dict) else rotary

    def _apply_overrides(self, index: int, kwargs) -> None:
        session = self.session
        if session.overrides is None:
            return
        kwargs["position_embeddings"] = self._cos_sin(index, kwargs)
        kwargs["position_ids"] = session.overrides["position_ids"]
        layer_type = self._layer_type(index)
        if layer_type not in session.masks:
            hidden, mask_2d, cache, visual = session.mask_source
            session.masks.update(self.mask_rule.build(self.lm.config, layer_type, index, hidden, mask_2d, cache,
                                                      visual))
        kwargs["attention_mask"] = session.masks[layer_type]

    # ----------------------------------------------------------------- decode
    def start_decode(self, tail_mask: torch.Tensor, positions: torch.Tensor, query_length: int,
                     tail_dense: bool = False) -> torch.Tensor | None:
        """Set up a decode step; returns the 2-D mask the LM takes: the prompt's columns at
        LM entry and ``tail_mask``'s, or None when neither has padding. Then no layer's mask
        needs transformers' device-to-host check: one check of the new columns here
        (skipped when ``tail_dense``: the caller knows) stands for the LM's and every stage's."""
        session = self.session
        session.decode_dense = session.entry_dense and (tail_dense or bool(tail_mask.all()))
        session.decoding = True
        session.tail_mask = tail_mask
        session.decode_positions = positions
        session.overrides = None
        session.mask_source = None
        session.masks = {}
        session.cache_length += query_length
        if session.decode_dense:
            return None
        return torch.cat([session.entry_mask, tail_mask.to(session.entry_mask.dtype)], dim=1)

    def _decode_layer(self, index: int, args, kwargs):
        session = self.session
        if index in session.stages:
            hidden = args[0] if args else kwargs["hidden_states"]
            stage = session.stages[index]
            device = stage.mask.device  # where the prefill's stage ran
            hidden = hidden.to(device)
            mask_2d = None if session.decode_dense and stage.dense else torch.cat(
                [stage.mask, session.tail_mask.to(device, stage.mask.dtype)], dim=1)
            positions = session.decode_positions.to(device)
            if self.positions == "reindex":
                positions = positions - stage.shift
            self._start_stage(hidden, mask_2d, positions, kwargs)
        self._apply_overrides(index, kwargs)
        return args, kwargs
