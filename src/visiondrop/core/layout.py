"""Shortening a padded batch: where every token goes when visual segments shrink.

Each visual segment (one image's tokens in one row) of ``n`` tokens becomes
its ``D + C`` tokens placed where the segment started: its ``D`` dominant tokens in
original order, then its ``C`` contextual tokens (the release's layout). Text
before and after is untouched. Rows shrink by different amounts (a row may hold no
image, or several), so shorter rows get padding on the batch's padding side; the
caller's 2-D mask marks it.

The plan is built on the CPU from Python integers (segment positions are known
once per prefill); only the dominant indices, which live on the model's device,
are filled in by :meth:`CompactionPlan.resolve`. Applying it is one gather per
tensor, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

_FROZEN: ContextVar[dict | None] = ContextVar("visiondrop_frozen_plans", default=None)


@contextmanager
def frozen_plans(store: dict):
    """Inside this block the host's per-prefill work is done once and reused:
    :func:`host_to_device` returns one device copy per distinct value and
    :func:`remembered` returns what it computed the first time, both kept in ``store``.

    For :class:`visiondrop.capture.CapturedPrefill`: a CUDA graph replays device work
    only, so every prefill it stands for must have the same host-side plan, and the
    capture itself may neither read device tensors on the host nor copy from host
    memory that is freed after it."""
    token = _FROZEN.set(store)
    try:
        yield store
    finally:
        _FROZEN.reset(token)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def remembered(key, compute):
    """``compute()``, or under :func:`frozen_plans` its value from the first call."""
    store = _FROZEN.get()
    if store is None:
        return compute()
    if key not in store:
        if _capturing():
            raise RuntimeError(f"visiondrop: {key[0]} was not planned before the CUDA graph capture")
        store[key] = compute()
    return store[key]


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device`` without making the host wait for the device: a
    plain copy from pageable memory synchronises the CUDA stream, which stalls the
    pipelined prefill at every stage; a copy from pinned memory is asynchronous.
    Under :func:`frozen_plans`: one device copy per distinct value, never written to
    (callers clone before writing)."""
    store = _FROZEN.get()
    if store is not None:
        key = ("constant", str(device), tensor.dtype, tuple(tensor.shape), tensor.numpy().tobytes())
        return remembered(key, lambda: tensor.to(device))
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class Segment:
    """A contiguous run of visual tokens: row, first index, length."""

    row: int
    start: int
    length: int


@dataclass
class CompactionPlan:
    """Where each token of the shortened batch comes from.

    Sources are flat indices into a "bank": ``[0, B*L)`` the old tokens row-major,
    then every segment's contextual tokens segment-major, then one fill slot.
    """

    batch_size: int
    old_length: int
    new_length: int
    segments: tuple[Segment, ...]
    new_segments: tuple[Segment, ...]
    removed_per_row: tuple[int, ...]
    num_dominant: tuple[int, ...]  # D of each segment
    num_contextual: tuple[int, ...]  # C of each segment
    source: torch.Tensor  # (B, L') long, CPU; -1 where a dominant token goes
    dominant_slots: torch.Tensor  # (sum D,) flat positions in (B * L')
    dominant_base: torch.Tensor  # (sum D,) flat old index of its segment's first token

    def resolve(self, dominant: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Flat source indices ``(B, L')`` on ``dominant``'s device.

        Args:
            dominant: each segment's local indices of its dominant tokens: long
                ``(S, D)`` when every segment keeps D, else one 1-D tensor per segment.
        """
        flat = dominant.reshape(-1) if isinstance(dominant, torch.Tensor) else torch.cat(list(dominant))
        device = flat.device
        source = host_to_device(self.source, device).clone()
        if flat.numel():
            slots, base = host_to_device(self.dominant_slots, device), host_to_device(self.dominant_base, device)
            source.view(-1)[slots] = base + flat
        return source

    def gather(
        self,
        source: torch.Tensor,
        tokens: torch.Tensor,
        contextual: torch.Tensor | Sequence[torch.Tensor] | None = None,
        fill: float | int = 0,
    ) -> torch.Tensor:
        """Apply the plan to ``tokens`` (``(B, L, ...)``), inserting ``contextual``
        (``(S, C, ...)``, or one ``(C_i, ...)`` tensor per segment) and ``fill`` for
        padding. Returns ``(B, L', ...)``."""
        trailing = tokens.shape[2:]
        parts = [tokens.reshape(-1, *trailing)]
        if sum(self.num_contextual):
            if contextual is None:
                raise ValueError("this plan has contextual tokens; pass them")
            pieces = [contextual] if isinstance(contextual, torch.Tensor) else list(contextual)
            parts += [piece.reshape(-1, *trailing).to(tokens.dtype) for piece in pieces]
        parts.append(torch.full((1, *trailing), fill, dtype=tokens.dtype, device=tokens.device))
        bank = torch.cat(parts)
        return bank[source.view(-1)].view(self.batch_size, self.new_length, *trailing)


def _per_segment(value: int | Sequence[int], count: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    values = [int(v) for v in value]
    if len(values) != count:
        raise ValueError(f"{name}: one count per segment expected ({count}), got {len(values)}")
    return values


def plan_compaction(
    batch_size: int,
    seq_length: int,
    segments: Sequence[Segment],
    num_dominant: int | Sequence[int],
    num_contextual: int | Sequence[int],
    pad_side: str = "left",
) -> CompactionPlan:
    """Plan the shortening of every segment to its ``D + C`` tokens.

    Args:
        batch_size, seq_length: the current batch shape ``(B, L)``.
        segments: the visual segments, sorted by ``(row, start)``, not overlapping.
        num_dominant, num_contextual: D and C, one int for every segment or one per
            segment (images of different sizes keep different counts).
        pad_side: where rows shorter than the longest get padding, "left" (what
            ``generate()`` uses) or "right".
    """
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    num_segments = len(segments)
    dominant = _per_segment(num_dominant, num_segments, "num_dominant")
    contextual = _per_segment(num_contextual, num_segments, "num_contextual")
    by_row: list[list[tuple[int, Segment]]] = [[] for _ in range(batch_size)]
    for index, segment in enumerate(segments):
        # contextual tokens are new tokens (merges, or extra placeholders), so only the
        # dominant ones must exist in the segment
        if segment.length < dominant[index]:
            raise ValueError(f"segment of {segment.length} tokens cannot keep {dominant[index]} of them")
        by_row[segment.row].append((index, segment))
    removed = [sum(seg.length - dominant[i] - contextual[i] for i, seg in row) for row in by_row]
    new_length = seq_length - min(removed) if batch_size else seq_length

    # numpy, not torch, for these small host-side arrays: a torch call costs microseconds
    # of dispatch, and a batch of 32 images needs hundreds of them per stage.
    contextual_first = [batch_size * seq_length + sum(contextual[:i]) for i in range(num_segments)]
    fill = batch_size * seq_length + sum(contextual)
    source = np.full((batch_size, new_length), fill, dtype=np.int64)
    slots: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_segments
    bases: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_segments
    new_segments: list[Segment | None] = [None] * num_segments
    for row, row_segments in enumerate(by_row):
        row_length = seq_length - removed[row]
        cursor = new_length - row_length if pad_side == "left" else 0
        old = 0
        base = row * seq_length
        pieces: list[np.ndarray] = []
        for index, segment in row_segments:
            d, c = dominant[index], contextual[index]
            pieces.append(np.arange(base + old, base + segment.start))
            cursor_at_segment = cursor + segment.start - old
            pieces.append(np.full(d, -1, dtype=np.int64))
            pieces.append(np.arange(contextual_first[index], contextual_first[index] + c))
            slots[index] = row * new_length + cursor_at_segment + np.arange(d)
            bases[index] = np.full(d, base + segment.start, dtype=np.int64)
            new_segments[index] = Segment(row, cursor_at_segment, d + c)
            cursor = cursor_at_segment + d + c
            old = segment.start + segment.length
        pieces.append(np.arange(base + old, base + seq_length))
        offset = new_length - row_length if pad_side == "left" else 0
        source[row, offset : offset + row_length] = np.concatenate(pieces)
    empty = torch.empty(0, dtype=torch.long)
    return CompactionPlan(
        batch_size=batch_size,
        old_length=seq_length,
        new_length=new_length,
        segments=tuple(segments),
        new_segments=tuple(s for s in new_segments if s is not None),
        removed_per_row=tuple(removed),
        num_dominant=tuple(dominant),
        num_contextual=tuple(contextual),
        source=torch.from_numpy(source),
        dominant_slots=torch.from_numpy(np.concatenate(slots)) if slots else empty,
        dominant_base=torch.from_numpy(np.concatenate(bases)) if bases else empty,
    )


def image_blocks(visual: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool visual columns -> long block ids: each run of visual tokens is one
    block, numbered from 0 per row, and -1 for text (Gemma 3's rule: an image's tokens
    attend to each other both ways)."""
    starts = visual & ~torch.nn.functional.pad(visual, (1, 0))[:, :-1]
    return torch.where(visual, starts.long().cumsum(1) - 1, -1)
