"""Importance scores from recomputed attention (paper, "Progressive Dominant Token
Selection", Eq. 2-4, and "Visual Query Selection").

Scores are computed from query/key tensors the caller takes from the model's own
projections, never from ``output_attentions``, so every attention backend works and
eager and sdpa give the same scores.

Shapes: queries ``(S, Hq, Nq, d)``, keys ``(S, Hk, L, d)`` with ``Hq`` a multiple of
``Hk`` (grouped-query attention is handled by grouping query heads over key heads,
without repeating keys). ``S`` is a batch of segments (one image each).
"""

from __future__ import annotations

import torch

#: most float32 attention logits materialised at once (512 MiB)
MAX_LOGITS = 2**27


def attention_probs(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention probabilities in float32, averaged over heads (Eq. 3).

    Args:
        queries: ``(S, Hq, Nq, d)``.
        keys: ``(S, Hk, L, d)``; ``Hq % Hk == 0``.
        scaling: logit scale, ``1 / sqrt(head_dim)`` for the models we support.
        key_mask: optional bool ``(S, Nq, L)`` or ``(S, 1, L)``; False entries are
            excluded from the softmax (causal and padding mask).

    Returns:
        ``(S, Nq, L)`` float32 probabilities, mean over query heads.
    """
    num_segments, q_heads, num_queries, head_dim = queries.shape
    k_heads = keys.shape[1]
    if q_heads % k_heads:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of key heads ({k_heads})")
    grouped = queries.float().view(num_segments, k_heads, q_heads // k_heads, num_queries, head_dim)
    keys = keys.float()
    group = q_heads // k_heads
    # Long sequences (Gemma 3's 4,096 SigLIP patches) would need GBs of logits at once:
    # then key heads are taken a few at a time, summing their heads' probabilities.
    step = max(1, MAX_LOGITS // max(1, num_segments * group * num_queries * keys.shape[2]))
    total = None
    for first in range(0, k_heads, step):
        logits = torch.einsum("skgqd,skld->skgql", grouped[:, first:first + step], keys[:, first:first + step])
        logits = logits * scaling
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None], torch.finfo(logits.dtype).min)
        if step >= k_heads:
            return logits.softmax(dim=-1).mean(dim=(1, 2))
        chunk = logits.softmax(dim=-1).sum(dim=(1, 2))
        total = chunk if total is None else total + chunk
    return total / q_heads


def cls_attention_scores(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """Encoder stage with a [CLS] token: attention from CLS (token 0) to every token.

    The release sums over heads; we average, which gives the same ranking.

    Returns:
        ``(S, N)`` scores over all encoder tokens, CLS included at index 0.
    """
    return attention_probs(queries[:, :, :1], keys, scaling)[:, 0]


def received_attention_scores(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """Encoder stage without [CLS] (e.g. SigLIP): mean attention each token receives
    from all visual queries (paper, "Visual Query Selection").

    Returns:
        ``(S, N)`` scores.
    """
    return attention_probs(queries, keys, scaling).mean(dim=1)


def visual_query_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float,
    key_mask: torch.Tensor,
    visual_columns: torch.Tensor,
    per_visible_query: bool = False,
) -> torch.Tensor:
    """LLM stage: visual-to-visual attention (Eq. 4).

    Queries are the visual tokens only; keys are the whole sequence (system prompt,
    visual and text tokens) under the causal and padding mask; the softmax runs over
    all keys, then only the visual key columns are kept and averaged over the visual
    queries. No text token is used as a query.

    Args:
        queries: ``(S, Hq, N, d)`` post-RoPE queries of the N visual tokens.
        keys: ``(S, Hk, L, d)`` post-RoPE keys of the segment's whole row.
        key_mask: bool ``(S, N, L)``, True where the visual query may attend.
        visual_columns: long ``(S, N)``, the sequence index of each visual token.
        per_visible_query: average each key's attention over the visual queries that can
            see it (beyond the paper). The paper's mean runs over all N queries, so under
            a causal mask a token early in the image, seen by more queries, is favoured.

    Returns:
        ``(S, N)`` float32 scores.
    """
    probs = attention_probs(queries, keys, scaling, key_mask)
    index = visual_columns[:, None, :].expand(-1, probs.shape[1], -1)
    visual = probs.gather(2, index)
    if per_visible_query:
        seen_by = key_mask.expand(-1, probs.shape[1], -1).gather(2, index).sum(dim=1)
        return visual.sum(dim=1) / seen_by.clamp(min=1)
    return visual.mean(dim=1)


def text_query_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float,
    key_mask: torch.Tensor,
    visual_columns: torch.Tensor,
    query_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text-guided LLM scores (FastV, PyramidDrop, SparseVLM): attention from text
    queries to the visual keys, softmax over the whole causal row, mean over heads,
    then a (weighted) mean over the queries.

    Args:
        queries: ``(S, Hq, M, d)`` post-RoPE queries of M text tokens (FastV and
            PyramidDrop: the last instruction token, M = 1; SparseVLM: its raters).
        keys, scaling: as in :func:`attention_probs`.
        key_mask: bool ``(S, M, L)`` each query's causal and padding mask.
        visual_columns: long ``(S, N)`` sequence index of each visual token.
        query_weights: optional ``(S, M)``; 0 marks padding queries (segments with
            fewer raters than others). Default: all queries count equally.

    Returns:
        ``(S, N)`` float32 scores.
    """
    probs = attention_probs(queries, keys, scaling, key_mask)
    visual = probs.gather(2, visual_columns[:, None, :].expand(-1, probs.shape[1], -1))
    if query_weights is None:
        return visual.mean(dim=1)
    weights = query_weights.float()
    return (visual * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


def block_sums(per_patch: torch.Tensor, side: int, block: int) -> torch.Tensor:
    """``(S, side * side, ...)`` values per patch of a raster grid -> ``(S, (side / block) ** 2, ...)``
    sums over each ``block`` x ``block`` square, squares in raster order: the score of a token
    that stands for a square of patches (InternVL's 2 x 2 pixel shuffle, Gemma 3's 4 x 4
    average pool) is what its patches receive together."""
    count, cells = per_patch.shape[0], side // block
    grid = per_patch.reshape(count, cells, block, cells, block, *per_patch.shape[2:])
    return grid.sum(dim=(2, 4)).reshape(count, cells * cells, *per_patch.shape[2:])
