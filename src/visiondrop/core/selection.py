"""Dominant-token selection (paper Eq. 1): keep the top-scoring tokens."""

from __future__ import annotations

import torch


def select_dominant(scores: torch.Tensor, count: int, always_keep: int | None = None) -> torch.Tensor:
    """Indices of the ``count`` highest-scoring tokens, in original (ascending) order.

    Args:
        scores: ``(S, N)``.
        count: how many to keep, ``0 <= count <= N``.
        always_keep: an index kept regardless of its score and counted in ``count``
            (the release keeps the encoder's [CLS] this way: "D counts the CLS").

    Returns:
        long ``(S, count)``, sorted ascending per row.
    """
    num_tokens = scores.shape[1]
    if not 0 <= count <= num_tokens:
        raise ValueError(f"count must be in [0, {num_tokens}], got {count}")
    if always_keep is not None and count > 0:
        scores = scores.clone()
        scores[:, always_keep] = torch.inf
    # Ties resolve to the lower index so the choice does not depend on the backend.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :count].sort(dim=1).values
