"""SparseVLM pieces: text raters, DPC-KNN clustering, token recycling."""

import math

import pytest
import torch

from visiondrop.core.recycling import density_peak_clusters, recycle, recycled_count, select_raters

# ---------------------------------------------------------------- raters


def test_select_raters_hand_example():
    # 2 visual x 3 text, H = 2. Logits: v1 -> [ln2, 0, 0], v2 -> [0, ln3, 0]
    # softmax: v1 [1/2, 1/4, 1/4], v2 [1/5, 3/5, 1/5]; rel = [0.35, 0.425, 0.225] > 1/3 -> t1, t2.
    visual = torch.tensor([[[math.log(2), 0.0], [0.0, math.log(3)]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    got = select_raters(visual, text, torch.ones(1, 3, dtype=torch.bool))
    assert got.tolist() == [[True, True, False]]


def test_select_raters_padding_is_excluded():
    visual = torch.tensor([[[math.log(2), 0.0], [0.0, math.log(3)]]])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [50.0, 50.0]]])  # the pad would take all mass
    mask = torch.tensor([[True, True, True, False]])
    assert select_raters(visual, text, mask).tolist() == [[True, True, False, False]]
    assert select_raters(visual, text, torch.ones_like(mask)).tolist() == [[False, False, False, True]]


def test_select_raters_comparison_is_strict():
    # one visual token; probabilities [0.375, 0.25, 0.25, 0.125], mean exactly 0.25: t2, t3 are not raters
    visual = torch.ones(1, 1, 1)
    text = torch.tensor([[[math.log(1.5)], [0.0], [0.0], [math.log(0.5)]]])
    assert select_raters(visual, text, torch.ones(1, 4, dtype=torch.bool)).tolist() == [[True, False, False, False]]


def reference_raters(visual, text, mask):
    """Loop reference: per row, only the valid text, unscaled logits, strict '>' mean."""
    out = torch.zeros_like(mask)
    for row in range(visual.shape[0]):
        valid = mask[row].nonzero().flatten()
        if valid.numel() == 0:
            continue
        probs = (visual[row].double() @ text[row, valid].double().T).softmax(dim=-1)
        rel = probs.mean(dim=0)
        chosen = valid[rel > rel.mean()]
        out[row, chosen if chosen.numel() else valid] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_select_raters_matches_loop_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    visual = torch.randn(4, 7, 6, generator=generator)
    text = torch.randn(4, 9, 6, generator=generator)
    lengths = torch.tensor([9, 5, 1, 3])
    mask = torch.arange(9)[None] < lengths[:, None]
    mask[3] = mask[3].flip(0)  # padding on the left in one row
    got = select_raters(visual, text, mask)
    assert torch.equal(got, reference_raters(visual, text, mask))
    assert not (got & ~mask).any()
    assert got.any(dim=1).all()


def test_select_raters_logits_are_unscaled():
    generator = torch.Generator().manual_seed(0)
    visual, text = torch.randn(32, 7, 6, generator=generator), torch.randn(32, 9, 6, generator=generator)
    mask = torch.ones(32, 9, dtype=torch.bool)
    got = select_raters(visual, text, mask)
    assert torch.equal(got, reference_raters(visual, text, mask))
    assert not torch.equal(got, reference_raters(visual / math.sqrt(6), text, mask))


def test_select_raters_fallback_when_all_tie():
    visual = torch.randn(3, 4, 5)
    text = torch.ones(3, 3, 5)  # identical text tokens: every relevance is 1/n
    mask = torch.tensor([[True, True, True], [False, True, False], [False, False, False]])
    assert torch.equal(select_raters(visual, text, mask), mask)


# ---------------------------------------------------------------- DPC-KNN


def reference_dpc(points, num_clusters, k):
    """Plain-Python DPC-KNN with the same index tie-breaking."""
    count, width = len(points), len(points[0])
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q))) / math.sqrt(width) for q in points] for p in points]
    rho = [math.exp(-sum(d**2 for d in sorted(row)[:k]) / k) for row in dist]
    farthest = max(max(row) for row in dist)
    delta = []
    for i in range(count):
        denser = [dist[i][j] for j in range(count) if rho[j] > rho[i] or (rho[j] == rho[i] and j < i)]
        delta.append(min(denser) if denser else farthest)
    score = [r * d for r, d in zip(rho, delta)]
    centres = sorted(range(count), key=lambda i: (-score[i], i))[:num_clusters]
    assignment = [min(range(num_clusters), key=lambda s: (dist[i][centres[s]], s)) for i in range(count)]
    for slot, centre in enumerate(centres):
        assignment[centre] = slot
    return centres, assignment


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_dpc_matches_loop_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 23, 5, generator=generator) * torch.rand(3, 23, 1, generator=generator) * 3
    for num_clusters, k in [(3, 3), (1, 4), (5, 2), (23, 23)]:
        centres, assignment = density_peak_clusters(x, num_clusters, k)
        for row in range(3):
            ref_centres, ref_assignment = reference_dpc(x[row].double().tolist(), num_clusters, k)
            assert centres[row].tolist() == ref_centres
            assert assignment[row].tolist() == ref_assignment


def test_dpc_finds_well_separated_blobs():
    generator = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0, 0, 0], [20, 0, 0, 0], [0, 0, -20, 20]])
    blob = torch.tensor([0, 1, 2, 0, 2, 1, 1, 0, 2, 2, 0, 1, 2, 0])
    x = means[blob] + 0.3 * torch.randn(len(blob), 4, generator=generator)
    x = torch.stack([x, x.flip(0)])  # a second segment, points in another order
    centres, assignment = density_peak_clusters(x, 3, 3)
    for row, labels in enumerate([blob, blob.flip(0)]):
        assert sorted(labels[centres[row]].tolist()) == [0, 1, 2]  # one centre per blob
        slot_of_blob = {labels[c].item(): s for s, c in enumerate(centres[row].tolist())}
        assert assignment[row].tolist() == [slot_of_blob[b] for b in labels.tolist()]


def test_dpc_ties_break_by_index():
    x = torch.ones(1, 4, 3)  # all distances 0: lower index is denser, centres 0 and 1
    centres, assignment = density_peak_clusters(x, 2, 2)
    assert centres.tolist() == [[0, 1]]
    assert assignment.tolist() == [[0, 1, 0, 0]]


def test_dpc_centres_own_their_cluster_and_bad_args():
    x = torch.randn(2, 6, 3)
    centres, assignment = density_peak_clusters(x, 6, 1)  # every point a centre
    assert torch.equal(assignment.gather(1, centres), torch.arange(6).expand(2, -1))
    with pytest.raises(ValueError, match="num_clusters"):
        density_peak_clusters(x, 7, 2)
    with pytest.raises(ValueError, match="k must"):
        density_peak_clusters(x, 2, 0)


# ---------------------------------------------------------------- recycling


@pytest.mark.parametrize(
    ("pruned", "clusters"),
    [(276, 9), (105, 4), (109, 4), (94, 3), (0, 0), (1, 1), (2, 1), (3, 1), (33, 2)],
)
def test_recycled_count(pruned, clusters):
    assert recycled_count(pruned) == clusters


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ((300, 200, 110), (309, 204, 113)),
        ((303, 110, 36), (312, 117, 39)),
        ((238, 48, 26), (249, 55, 27)),
        ((66, 30, 17), (82, 32, 18)),
    ],
)
def test_recycled_count_release_presets(keep, expected):
    """The notes' per-stage visual counts for the release presets (192/128/96/64)."""
    visual, counts = 576, []
    for kept in keep:
        visual = kept + recycled_count(visual - kept)
        counts.append(visual)
    assert tuple(counts) == expected


def test_recycle_picks_top_scores_and_means_are_exact():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randint(-50, 50, (2, 40, 6), generator=generator).float()
    scores = torch.rand(2, 40, generator=generator)
    tokens, picked, assignment, centres = recycle(hidden, scores)
    assert tokens.shape == (2, 2, 6) and picked.shape == assignment.shape == (2, 13) and centres.shape == (2, 2)
    assert torch.equal(picked, scores.argsort(dim=1, descending=True)[:, :13])
    chosen = hidden.gather(1, picked[..., None].expand(-1, -1, 6))
    ref_centres, ref_assignment = density_peak_clusters(chosen, 2, 2)
    assert torch.equal(centres, ref_centres) and torch.equal(assignment, ref_assignment)
    for row in range(2):
        for slot in range(2):
            members = chosen[row, assignment[row] == slot]
            assert torch.equal(tokens[row, slot], members.sum(0) / len(members))


def test_recycle_single_cluster_is_mean_and_keeps_dtype():
    hidden = torch.arange(20, dtype=torch.bfloat16).view(1, 10, 2)
    scores = torch.tensor([[0.0, 9, 1, 8, 2, 7, 3, 6, 4, 5]])  # m = 4: tokens 1, 3, 5, 7
    tokens, picked, assignment, centres = recycle(hidden, scores)
    assert picked.tolist() == [[1, 3, 5, 7]]
    assert assignment.tolist() == [[0, 0, 0, 0]]
    assert tokens.dtype == torch.bfloat16
    assert tokens.tolist() == [[[8.0, 9.0]]]  # mean of (2,3), (6,7), (10,11), (14,15)


def test_recycle_edges():
    tokens, picked, assignment, centres = recycle(torch.randn(2, 0, 4), torch.zeros(2, 0))
    assert tokens.shape == (2, 0, 4)
    assert picked.shape == assignment.shape == centres.shape == (2, 0)
    hidden = torch.randn(2, 1, 4)
    tokens, picked, assignment, centres = recycle(hidden, torch.zeros(2, 1))
    assert torch.equal(tokens, hidden)
    assert picked.tolist() == assignment.tolist() == centres.tolist() == [[0], [0]]
