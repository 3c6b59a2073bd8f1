"""SparseVLM pieces (Gumpest/SparseVLMs, v1.5 release = the ICML version): text raters
and token recycling with DPC-KNN clustering.

* Raters (before layer 0, from the LM-entry embeddings): ``M = softmax_text(E_v E_t^T)``
  with no ``1/sqrt(H)`` scaling, ``rel = mean_visual(M)``, raters are ``rel > mean(rel)``.
* Recycling (on a stage's pruned tokens, taken from the pruning layer's output):
  the top ``m = int(0.3 * P) + 1`` pruned tokens by score are clustered by DPC-KNN
  into ``c = int(m / 10) + 1`` clusters (kNN size k = c), and each cluster becomes the
  plain mean of its members.

Deviations, all ours: everything runs in float32 (the release works in the model's
dtype); ties are broken by index instead of the release's 1e-6 random noise, so the
result is deterministic; cluster means are exact (the release divides by
``count + 1e-6``).
"""

from __future__ import annotations

import math

import torch


def select_raters(visual_embeds: torch.Tensor, text_embeds: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """SparseVLM v1.5's text raters: text tokens more relevant to the image than average.

    ``M = softmax over text of visual @ text^T`` (unscaled, padding excluded),
    ``rel_t = mean over visual tokens of M[:, t]``; token t is a rater when
    ``rel_t > mean of rel over the row's valid text tokens`` (strict, as in the release).

    Our rule: if no token passes (all relevances tie, e.g. a single text token), every
    valid text token is a rater, so a row with any valid text has at least one rater.

    Args:
        visual_embeds: ``(S, N, H)`` projector outputs entering the LM.
        text_embeds: ``(S, T, H)`` word embeddings of the text after the image.
        text_mask: bool ``(S, T)``, False for padding; rows may have different counts.

    Returns:
        bool ``(S, T)``, True for raters (never True where ``text_mask`` is False).
    """
    logits = visual_embeds.float() @ text_embeds.float().transpose(1, 2)  # (S, N, T)
    logits = logits.masked_fill(~text_mask[:, None, :], torch.finfo(logits.dtype).min)
    relevance = logits.softmax(dim=-1).mean(dim=1) * text_mask  # (S, T)
    threshold = relevance.sum(dim=1, keepdim=True) / text_mask.sum(dim=1, keepdim=True).clamp(min=1)
    raters = (relevance > threshold) & text_mask
    return torch.where(raters.any(dim=1, keepdim=True), raters, text_mask)


def density_peak_clusters(x: torch.Tensor, num_clusters: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN as in the SparseVLM release, vectorised over segments.

    ``d_ij = ||x_i - x_j|| / sqrt(H)``; density ``rho_i = exp(-mean d^2 over i's k
    nearest)`` (itself included, at distance 0); ``delta_i = min d_ij over denser j``,
    and for the densest point the largest distance in the segment (the release's
    global max of d; its row max would give the same centres). Centres are the ``num_clusters`` points with the largest
    ``rho * delta``, in descending order; every point joins its nearest centre, and each
    centre its own cluster.

    Ties (ours; the release adds 1e-6 uniform noise): of two equal densities the lower
    index counts as denser; equal centre scores and equidistant centres go to the
    lower index / earlier centre.

    Args:
        x: ``(S, M, H)`` points.
        num_clusters: c, ``1 <= c <= M`` (0 allowed only when M == 0).
        k: neighbourhood size, ``1 <= k <= M``.

    Returns:
        ``centres`` long ``(S, c)`` indices into M, and ``assignment`` long ``(S, M)``,
        each point's cluster slot in ``[0, c)``.
    """
    num_segments, num_points, width = x.shape
    if num_points == 0 and num_clusters == 0:
        empty = torch.zeros(num_segments, 0, dtype=torch.long, device=x.device)
        return empty, empty.clone()
    if not 1 <= num_clusters <= num_points:
        raise ValueError(f"num_clusters must be in [1, {num_points}], got {num_clusters}")
    if not 1 <= k <= num_points:
        raise ValueError(f"k must be in [1, {num_points}], got {k}")
    x = x.float()
    # Differences, not the Gram-matrix shortcut: exact zeros on the diagonal.
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(width)
    nearest = dist.topk(k, dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()  # (S, M)

    index = torch.arange(num_points, device=x.device)
    rho_i, rho_j = density[:, :, None], density[:, None, :]
    denser = (rho_j > rho_i) | ((rho_j == rho_i) & (index[None, :] < index[:, None]))  # [s, i, j]: j denser
    farthest = dist.flatten(1).amax(dim=1)[:, None].expand(-1, num_points)
    delta = dist.masked_fill(~denser, math.inf).amin(dim=-1)
    delta = torch.where(denser.any(dim=-1), delta, farthest)

    score = density * delta
    centres = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :num_clusters]
    to_centres = dist.gather(1, centres[..., None].expand(-1, -1, num_points))  # (S, c, M)
    assignment = to_centres.argmin(dim=1)  # first (earliest centre) on ties
    slots = torch.arange(num_clusters, device=x.device).expand(num_segments, -1)
    assignment.scatter_(1, centres, slots)
    return centres, assignment


def _recycled_pick(num_pruned: int, ratio: float) -> int:
    """m, the number of pruned tokens recycled: ``int(ratio * P) + 1``, at most P."""
    return min(int(num_pruned * ratio) + 1, num_pruned)


def recycled_count(num_pruned: int, ratio: float = 0.3, cluster_ratio: float = 0.1) -> int:
    """c, the number of recycled tokens a stage adds: ``int(m * cluster_ratio) + 1``
    with ``m = int(ratio * P) + 1`` (release: ``int(m / 10) + 1``), both capped, 0 when P == 0.

    Example (release, 192 preset): 276 pruned -> m = 83 -> c = 9.
    """
    picked = _recycled_pick(num_pruned, ratio)
    return min(int(picked * cluster_ratio) + 1, picked)


def recycle(
    hidden: torch.Tensor,
    scores: torch.Tensor,
    ratio: float = 0.3,
    cluster_ratio: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SparseVLM v1.5 token recycling of each segment's P pruned tokens.

    The ``m = int(ratio * P) + 1`` highest-scoring pruned tokens are clustered by
    :func:`density_peak_clusters` into ``c = recycled_count(P)`` clusters with k = c, and
    each cluster becomes the plain mean of its members, in centre order.

    Args:
        hidden: ``(S, P, H)`` the pruned tokens' states (output of the pruning layer).
        scores: ``(S, P)`` their importance scores.
        ratio, cluster_ratio: the release's 30 % and 10 %.

    Returns:
        ``tokens`` ``(S, c, H)`` in ``hidden``'s dtype; ``picked`` long ``(S, m)`` indices
        into P in descending score order (ties: lower index), the order clustering sees;
        ``assignment`` long ``(S, m)`` cluster slot of each picked token; ``centres``
        long ``(S, c)`` positions in ``picked`` of the cluster centres.
    """
    num_segments, num_pruned, width = hidden.shape
    num_picked = _recycled_pick(num_pruned, ratio)
    num_clusters = recycled_count(num_pruned, ratio, cluster_ratio)
    picked = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :num_picked]
    chosen = hidden.gather(1, picked[..., None].expand(-1, -1, width))
    centres, assignment = density_peak_clusters(chosen, num_clusters, k=num_clusters)

    sums = torch.zeros(num_segments, num_clusters, width, dtype=torch.float32, device=hidden.device)
    sums.scatter_add_(1, assignment[..., None].expand(-1, -1, width), chosen.float())
    counts = torch.zeros(num_segments, num_clusters, device=hidden.device)
    counts.scatter_add_(1, assignment, torch.ones_like(assignment, dtype=counts.dtype))
    tokens = (sums / counts.clamp(min=1)[..., None]).to(hidden.dtype)  # every cluster holds its centre
    return tokens, picked, assignment, centres
