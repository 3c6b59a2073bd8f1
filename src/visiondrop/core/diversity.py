"""Iterative bipartite duplicate removal: VisPruner's diverse-token rule, as its
release implements it (Theia-4869/VisPruner, ``llava/model/llava_arch.py``).

Each round splits the current candidate list by position parity, scores every
even-position token by its highest cosine similarity to the odd-position tokens,
drops the ``per_round`` highest-scoring (most duplicated) evens, and continues with
the surviving evens in descending-score order followed by the odds unchanged. The
order matters: it decides the next round's split.

Odd list lengths (the evens then outnumber the odds by one) crash the release; we
handle them. Ties in the scores resolve to the earlier list position.
"""

from __future__ import annotations

import torch


def remove_duplicates(features: torch.Tensor, order: torch.Tensor, keep: int, per_round: int = 8) -> torch.Tensor:
    """Drop near-duplicates from the candidates ``order`` until ``keep`` remain.

    Args:
        features: ``(S, N, d)`` token features; L2-normalised here.
        order: long ``(S, R)`` candidate indices into ``N``, in the starting order
            (VisPruner: the residual tokens by descending attention).
        keep: candidates to keep, ``>= 0``; ``keep >= R`` keeps ``order`` unchanged.
        per_round: most tokens dropped per round (8 in the release).

    Returns:
        long ``(S, min(keep, R))``: the surviving indices in their final list order
        (callers sort them when they need raster order).
    """
    if keep < 0 or per_round < 1:
        raise ValueError(f"keep must be >= 0 and per_round >= 1, got keep={keep}, per_round={per_round}")
    if keep == 0:
        return order[:, :0]
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    current = order
    # A round drops at most every even (only lists shorter than 2 * per_round get there).
    while (drop := min(per_round, current.shape[1] - keep, (current.shape[1] + 1) // 2)) > 0:
        evens, odds = current[:, 0::2], current[:, 1::2]  # R > keep >= 1: odds is never empty
        even_f = features.gather(1, evens[..., None].expand(-1, -1, features.shape[-1]))
        odd_f = features.gather(1, odds[..., None].expand(-1, -1, features.shape[-1]))
        scores = (even_f @ odd_f.transpose(1, 2)).amax(dim=-1)  # (S, ceil(R/2))
        ranked = evens.gather(1, torch.sort(scores, dim=1, descending=True, stable=True).indices)
        current = torch.cat([ranked[:, drop:], odds], dim=1)
    return current
