"""Stage-wise contextual token merging (paper, "Stage-wise Contextual Token Merging";
rule details from the authors' release).

The tokens that were not selected as dominant are split into C reference ("target")
tokens, picked at a uniform stride in index order, and candidates; every candidate
joins the target whose key is most similar (dot product of head-averaged,
L2-normalised keys). Each contextual token is ``target + mean(candidates joined)``,
which is the release's rule (not a weighted average).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .layout import host_to_device


@dataclass
class ContextualMerge:
    """Result of :func:`contextual_merge`.

    Attributes:
        tokens: ``(S, C, H)`` contextual tokens.
        targets: long ``(S, C)``, indices (into the stage's N input tokens) of the targets.
        merged_into: long ``(S, N)``; for every input token the contextual slot it is
            part of (targets point to their own slot), ``-1`` for the dominant tokens
            (and for the remaining tokens when ``C == 0``: they are dropped).
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    merged_into: torch.Tensor


def remaining_indices(num_tokens: int, dominant: torch.Tensor) -> torch.Tensor:
    """Indices not in ``dominant`` (``(S, D)``), ascending: ``(S, N - D)``."""
    is_dominant = torch.zeros(dominant.shape[0], num_tokens, dtype=torch.uint8, device=dominant.device)
    is_dominant.scatter_(1, dominant, 1)
    # A stable sort puts the others first, in ascending order; unlike boolean indexing
    # it needs no device-to-host sync to size its output.
    order = torch.sort(is_dominant, dim=1, stable=True).indices
    return order[:, :num_tokens - dominant.shape[1]]


@functools.lru_cache(maxsize=256)
def _merge_order(num_remaining: int, num_contextual: int) -> torch.Tensor:
    """Positions among the remaining tokens: first the targets (every ``step``-th, the
    release's stride), then the others. They depend on the counts only, so they are made
    once on the host (numpy: no per-stage torch dispatch) and copied without a device
    sync; callers never write to them."""
    step = max(1, num_remaining // num_contextual)
    is_target = np.zeros(num_remaining, dtype=bool)
    is_target[np.arange(0, step * num_contextual, step)] = True
    return torch.from_numpy(np.concatenate([np.flatnonzero(is_target), np.flatnonzero(~is_target)]))


def contextual_merge(
    hidden: torch.Tensor,
    metric: torch.Tensor,
    dominant: torch.Tensor,
    num_contextual: int,
) -> ContextualMerge:
    """Merge the non-dominant tokens into ``num_contextual`` contextual tokens.

    Args:
        hidden: ``(S, N, H)`` token states to merge.
        metric: ``(S, N, d)`` similarity features (keys averaged over heads); they are
            L2-normalised here.
        dominant: long ``(S, D)`` dominant indices.
        num_contextual: C, ``0 <= C <= N - D``.
    """
    num_segments, num_tokens, width = hidden.shape
    remaining = remaining_indices(num_tokens, dominant)
    num_remaining = remaining.shape[1]
    if not 0 <= num_contextual <= num_remaining:
        raise ValueError(f"num_contextual must be in [0, {num_remaining}], got {num_contextual}")
    merged_into = torch.full((num_segments, num_tokens), -1, dtype=torch.long, device=hidden.device)
    if num_contextual == 0:
        empty = hidden.new_zeros(num_segments, 0, width)
        return ContextualMerge(empty, remaining[:, :0], merged_into)

    # targets first, then candidates, so that each tensor is gathered once for both
    order = host_to_device(_merge_order(num_remaining, num_contextual), hidden.device)
    picked = remaining[:, order]
    targets = picked[:, :num_contextual]

    picked_metric = metric.float().gather(1, picked[..., None].expand(-1, -1, metric.shape[-1]))
    picked_metric = torch.nn.functional.normalize(picked_metric, dim=-1)
    target_metric, candidate_metric = picked_metric[:, :num_contextual], picked_metric[:, num_contextual:]
    assignment = (candidate_metric @ target_metric.transpose(1, 2)).argmax(dim=-1)  # (S, R - C)

    picked_hidden = hidden.gather(1, picked[..., None].expand(-1, -1, width)).float()
    sums = picked_hidden.new_zeros(num_segments, num_contextual, width)
    sums.scatter_add_(1, assignment[..., None].expand(-1, -1, width), picked_hidden[:, num_contextual:])
    counts = torch.zeros(num_segments, num_contextual, device=hidden.device)
    counts.scatter_add_(1, assignment, torch.ones_like(assignment, dtype=counts.dtype))
    means = sums / counts.clamp(min=1)[..., None]  # a target with nothing assigned adds 0
    tokens = (picked_hidden[:, :num_contextual] + means).to(hidden.dtype)

    slots = torch.arange(num_contextual, device=hidden.device).expand(num_segments, -1)
    merged_into.scatter_(1, picked, torch.cat([slots, assignment], dim=1))
    return ContextualMerge(tokens, targets, merged_into)


def merge_like(features: torch.Tensor, merge: ContextualMerge) -> torch.Tensor:
    """Other features of the same tokens merged by an existing assignment: each
    contextual token is its target's ``features`` + the mean of its members', as
    :func:`contextual_merge` made ``merge.tokens`` (Qwen3-VL's DeepStack features follow
    the main features' merge this way).

    Args:
        features: ``(S, N, W)``, one row per input token of ``merge``'s stage.
        merge: the stage's :class:`ContextualMerge`.

    Returns:
        ``(S, C, W)`` in ``features``' dtype.
    """
    num_segments, _, width = features.shape
    num_contextual = merge.targets.shape[1]
    if num_contextual == 0:
        return features.new_zeros(num_segments, 0, width)
    slots = merge.merged_into.clone()
    slots.scatter_(1, merge.targets, -1)  # a target is its token's base, not one of its members
    member = slots >= 0
    index = slots.clamp(min=0)
    values = features.float() * member[..., None]
    sums = values.new_zeros(num_segments, num_contextual, width)
    sums.scatter_add_(1, index[..., None].expand(-1, -1, width), values)
    counts = values.new_zeros(num_segments, num_contextual).scatter_add_(1, index, member.float())
    base = features.gather(1, merge.targets[..., None].expand(-1, -1, width)).float()
    return (base + sums / counts.clamp(min=1)[..., None]).to(features.dtype)
