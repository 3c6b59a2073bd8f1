"""Core pieces in isolation: scoring, selection, merging, layout."""

import math

import pytest
import torch

from visiondrop.core import (
    attention_probs,
    block_sums,
    cls_attention_scores,
    contextual_merge,
    image_blocks,
    plan_compaction,
    received_attention_scores,
    select_dominant,
    visual_query_scores,
)
from visiondrop.core.layout import Segment
from visiondrop.core.merging import merge_like


def naive_probs(q, k, scale, mask=None):
    """Reference: repeat KV heads, full softmax per head, mean over heads."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    logits = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None], -math.inf)
    return logits.softmax(-1).mean(1)


def test_attention_probs_matches_naive_gqa():
    torch.manual_seed(0)
    q, k = torch.randn(2, 8, 5, 16), torch.randn(2, 2, 11, 16)
    mask = torch.rand(2, 5, 11) > 0.3
    mask[..., 0] = True
    got = attention_probs(q, k, 0.25, mask)
    assert torch.allclose(got, naive_probs(q, k, 0.25, mask), atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(2, 5))


def test_attention_probs_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple"):
        attention_probs(torch.randn(1, 3, 2, 4), torch.randn(1, 2, 5, 4), 1.0)


def test_cls_and_received_scores():
    torch.manual_seed(1)
    q, k = torch.randn(3, 4, 7, 8), torch.randn(3, 4, 7, 8)
    probs = naive_probs(q, k, 0.5)
    assert torch.allclose(cls_attention_scores(q, k, 0.5), probs[:, 0], atol=1e-6)
    assert torch.allclose(received_attention_scores(q, k, 0.5), probs.mean(1), atol=1e-6)


def test_visual_query_scores_keep_visual_columns_after_full_softmax():
    torch.manual_seed(2)
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 6, 4)
    columns = torch.tensor([[1, 2, 3]])
    mask = torch.arange(6)[None, None] <= columns[..., None]
    probs = naive_probs(q, k, 0.5, mask)  # softmax over all keys, text included
    expected = probs[:, :, 1:4].mean(1)
    got = visual_query_scores(q, k, 0.5, mask, columns)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.sum() < 1  # the prefix key took some mass: the softmax was not over visual keys only
    # per visible query: key 1 is seen by the 3 visual queries, key 2 by 2, key 3 by 1 (causal)
    visible = visual_query_scores(q, k, 0.5, mask, columns, per_visible_query=True)
    torch.testing.assert_close(visible, probs[:, :, 1:4].sum(1) / torch.tensor([3.0, 2.0, 1.0]))
    assert visible[0, 2] > got[0, 2] * 2.9  # the last key is no longer divided by queries that cannot see it


def test_select_dominant_sorted_top_k():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2]])
    assert select_dominant(scores, 3).tolist() == [[1, 2, 3]]


def test_select_dominant_always_keep_counts_in_budget():
    scores = torch.tensor([[0.0, 0.9, 0.3, 0.8]])
    assert select_dominant(scores, 2, always_keep=0).tolist() == [[0, 1]]


def test_select_dominant_ties_pick_lower_index():
    assert select_dominant(torch.zeros(1, 5), 2).tolist() == [[0, 1]]


def test_select_dominant_range():
    with pytest.raises(ValueError, match="count"):
        select_dominant(torch.zeros(1, 3), 4)


def test_contextual_merge_is_target_plus_mean():
    # 6 tokens, dominant {0}; remaining 1..5, C=2 -> step 5//2=2 -> targets 1 and 3.
    hidden = torch.arange(6, dtype=torch.float32).view(1, 6, 1) * 10
    metric = torch.tensor([[[1, 0], [1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 0]]]).float()
    out = contextual_merge(hidden, metric, torch.tensor([[0]]), 2)
    assert out.targets.tolist() == [[1, 3]]
    # token 2 and 5 join target 1, token 4 joins target 3
    assert out.merged_into.tolist() == [[-1, 0, 0, 1, 1, 0]]
    assert out.tokens[0, :, 0].tolist() == [10 + (20 + 50) / 2, 30 + 40]


def test_contextual_merge_lonely_target_and_edges():
    hidden = torch.randn(2, 5, 3)
    metric = torch.randn(2, 5, 4)
    dominant = torch.tensor([[0, 1], [2, 4]])
    everything = contextual_merge(hidden, metric, dominant, 3)  # C == R: every remaining is a target
    assert torch.equal(everything.tokens, hidden.gather(1, everything.targets[..., None].expand(-1, -1, 3)))
    nothing = contextual_merge(hidden, metric, dominant, 0)
    assert nothing.tokens.shape == (2, 0, 3)
    assert (nothing.merged_into == -1).all()
    with pytest.raises(ValueError, match="num_contextual"):
        contextual_merge(hidden, metric, dominant, 4)


@pytest.mark.parametrize("contextual", [0, 1, 3, 5])
def test_merge_like_repeats_a_merge_on_other_features(contextual):
    hidden = torch.randn(3, 12, 4)
    metric = torch.randn(3, 12, 6)
    dominant = torch.tensor([[0, 5, 7], [1, 2, 3], [9, 10, 11]])
    merge = contextual_merge(hidden, metric, dominant, contextual)
    torch.testing.assert_close(merge_like(hidden, merge), merge.tokens)  # the same features: the same tokens
    other = torch.randn(3, 12, 2)  # other features of the same tokens follow the same assignment
    expected = contextual_merge(other, metric, dominant, contextual).tokens
    torch.testing.assert_close(merge_like(other, merge), expected)


def test_layout_left_padding_two_rows():
    plan = plan_compaction(2, 8, [Segment(0, 2, 4)], num_dominant=1, num_contextual=1)
    source = plan.resolve(torch.tensor([[2]]))
    tokens = torch.arange(16).view(2, 8)
    out = plan.gather(source, tokens, torch.tensor([[100]]), fill=-1)
    assert out.tolist() == [[-1, -1, 0, 1, 4, 100, 6, 7], list(range(8, 16))]
    assert plan.new_segments == (Segment(0, 4, 2),)
    assert plan.removed_per_row == (2, 0)


def test_layout_right_padding_and_two_images_in_a_row():
    segments = [Segment(0, 1, 3), Segment(0, 5, 3), Segment(1, 0, 3)]
    plan = plan_compaction(2, 9, segments, num_dominant=1, num_contextual=0, pad_side="right")
    source = plan.resolve(torch.tensor([[0], [2], [1]]))
    out = plan.gather(source, torch.arange(18).view(2, 9), fill=-1)
    assert plan.new_length == 7
    assert out.tolist() == [[0, 1, 4, 7, 8, -1, -1], [10, 12, 13, 14, 15, 16, 17]]
    assert [s.start for s in plan.new_segments] == [1, 3, 0]


def test_layout_per_segment_counts():
    """Segments of different lengths keep different D + C (images of different sizes)."""
    segments = [Segment(0, 1, 4), Segment(0, 6, 2), Segment(1, 0, 5)]
    plan = plan_compaction(2, 8, segments, num_dominant=[2, 1, 1], num_contextual=[1, 0, 2], pad_side="left")
    source = plan.resolve([torch.tensor([0, 3]), torch.tensor([1]), torch.tensor([4])])
    contextual = [torch.tensor([100]), torch.empty(0, dtype=torch.long), torch.tensor([200, 201])]
    out = plan.gather(source, torch.arange(16).view(2, 8), contextual, fill=-1)
    # row 0: text 0, seg (1, 4 + ctx), text 5, seg (7), end; row 1: seg (12 + two ctx), text 13-15
    assert out.tolist() == [[0, 1, 4, 100, 5, 7], [12, 200, 201, 13, 14, 15]]
    assert plan.new_segments == (Segment(0, 1, 3), Segment(0, 5, 1), Segment(1, 0, 3))
    assert plan.removed_per_row == (2, 2)
    with pytest.raises(ValueError, match="num_dominant"):
        plan_compaction(2, 8, segments, num_dominant=[1, 1], num_contextual=0)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="pad_side"):
        plan_compaction(1, 4, [], 1, 0, pad_side="middle")
    with pytest.raises(ValueError, match="cannot keep"):
        plan_compaction(1, 4, [Segment(0, 0, 2)], 3, 0)


def test_attention_probs_in_head_chunks_equals_at_once(monkeypatch):
    """Long sequences take key heads a few at a time (scoring.MAX_LOGITS): same result."""
    import visiondrop.core.scoring as scoring

    torch.manual_seed(3)
    q, k = torch.randn(2, 8, 5, 16), torch.randn(2, 4, 11, 16)
    mask = torch.rand(2, 5, 11) > 0.3
    mask[..., 0] = True
    at_once = attention_probs(q, k, 0.25, mask)
    monkeypatch.setattr(scoring, "MAX_LOGITS", 2 * 2 * 5 * 11 + 1)  # one key head (two query heads) per chunk
    chunked = attention_probs(q, k, 0.25, mask)
    torch.testing.assert_close(chunked, at_once, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked, naive_probs(q, k, 0.25, mask), atol=1e-6, rtol=0)


def test_block_sums_sum_each_square_of_a_raster_grid():
    values = torch.arange(16.0).view(1, 16)  # a 4 x 4 grid, raster order
    assert block_sums(values, side=4, block=2).tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13,
                                                              10 + 11 + 14 + 15]]
    keys = torch.randn(3, 16, 5)
    assert block_sums(keys, 4, 4).shape == (3, 1, 5)
    torch.testing.assert_close(block_sums(keys, 4, 4)[:, 0], keys.sum(1))


def test_image_blocks_number_each_run_of_visual_tokens():
    visual = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert image_blocks(visual).tolist() == [[-1, 0, 0, -1, 1, -1], [0, 0, 0, 0, -1, -1]]


def test_decoder_stage_query_mask_adds_image_blocks_and_the_window():
    from visiondrop.methods.base import DecoderStage

    row_mask = torch.tensor([[False, True, True, True, True, True, True]])  # one padding column first
    blocks = torch.tensor([[-1, -1, 0, 0, 0, -1, -1]])
    stage = DecoderStage(hidden=None, keys=None, key_mask=None, visual_columns=None, scaling=1.0,
                         project_queries=None, row_mask=row_mask)
    columns = torch.tensor([[2, 6]])
    causal = stage.query_mask(columns)[0].int().tolist()
    assert causal == [[0, 1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1]]
    stage.blocks = blocks
    assert stage.query_mask(columns)[0].int().tolist() == [[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]]
    stage.window = 3  # keys up to 2 columns back
    assert stage.query_mask(columns)[0].int().tolist() == [[0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]]
