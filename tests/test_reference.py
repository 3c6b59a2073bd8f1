"""Selections and merged states checked against independent references: eager
``output_attentions`` of the unpruned model, and the hidden states it computes."""

import pytest
import torch
from helpers import real_logits, row_of

import visiondrop
from visiondrop import Schedule
from visiondrop.testing import IMAGE_TOKEN_ID, image_prompt


def _top_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k, dim=-1).indices.sort(dim=-1).values


def test_encoder_cls_selection_matches_eager_attention(eager_model):
    batch = image_prompt(eager_model, [5, 9], seed=3)
    with torch.no_grad():
        tower = eager_model.model.vision_tower(batch["pixel_values"], output_attentions=True)
        cls_row = tower.attentions[-2].sum(1)[:, 0]  # feature layer -2, CLS query, summed over heads
        cls_row[:, 0] = torch.inf  # CLS is always kept and counted
        expected = _top_sorted(cls_row, 42)
        with visiondrop.apply(eager_model, schedule=Schedule(encoder=(42, 6))) as handle:
            eager_model(**batch)
    got = torch.stack([s.dominant for s in handle.report.stage("encoder").segments])
    assert torch.equal(got, expected)


def test_encoder_received_selection_matches_eager_attention(siglip_model):
    siglip_model.set_attn_implementation("eager")
    batch = image_prompt(siglip_model, [5], seed=4)
    try:
        with torch.no_grad():
            tower = siglip_model.model.vision_tower(batch["pixel_values"], output_attentions=True)
            received = tower.attentions[-1].mean(1).mean(1)  # feature layer -1, mean over heads and queries
            expected = _top_sorted(received, 40)
            with visiondrop.apply(siglip_model, schedule=Schedule(encoder=(40, 8))) as handle:
                siglip_model(**batch)
    finally:
        siglip_model.set_attn_implementation("sdpa")
    assert torch.equal(handle.report.stage("encoder").segments[0].dominant, expected[0])


@pytest.mark.parametrize("layer", [1, 3, 6])
def test_llm_selection_matches_eager_visual_to_visual_attention(eager_model, layer):
    batch = image_prompt(eager_model, [5, 9], seed=3)
    with torch.no_grad():
        attention = eager_model(**batch, output_attentions=True).attentions[layer]  # (B, H, L, L)
        expected = []
        for row in range(2):
            visual = (batch["input_ids"][row] == IMAGE_TOKEN_ID).nonzero().squeeze(1)
            probs = attention[row].mean(0)[visual][:, visual]  # visual queries x visual keys, full softmax
            expected.append(_top_sorted(probs.mean(0), 100))
        with visiondrop.apply(eager_model, schedule=Schedule(llm=[(100, 10)], layers=(layer,))) as handle:
            eager_model(**batch)
    got = [s.dominant for s in handle.report.stage("llm", layer).segments]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_llm_stage_feeds_dominant_then_target_plus_mean(model):
    """What layer L actually receives, rebuilt from the unpruned model's hidden states."""
    layer, dominant, contextual = 3, 60, 8
    batch = image_prompt(model, [5], seed=9)
    seen = {}
    with torch.no_grad():
        reference = model(**batch, output_hidden_states=True).hidden_states[layer][0]  # input of layer 3
        with visiondrop.apply(model, schedule=Schedule(llm=[(dominant, contextual)], layers=(layer,))) as handle:
            def record(module, args):
                seen["hidden"] = args[0][0].clone()  # returns None: observe only

            hook = model.model.language_model.layers[layer].register_forward_pre_hook(record)
            model(**batch)
            hook.remove()
    seg = handle.report.stage("llm", layer).segments[0]
    start = int((batch["input_ids"][0] == IMAGE_TOKEN_ID).nonzero()[0])
    visual = reference[start : start + 576]
    expected = [visual[seg.dominant]]
    for slot, target in enumerate(seg.targets.tolist()):
        members = [i for i in (seg.merged_into == slot).nonzero().squeeze(1).tolist() if i != target]
        extra = visual[members].mean(0) if members else torch.zeros_like(visual[0])
        expected.append((visual[target] + extra)[None])
    expected = torch.cat(expected)
    got = seen["hidden"][start : start + dominant + contextual]
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(seen["hidden"][:start], reference[:start])  # text before the image untouched
    assert torch.equal(seen["hidden"][start + dominant + contextual :], reference[start + 576 :])  # and after


@pytest.mark.parametrize("keep_cls", [True, False])
def test_the_llm_receives_cls_only_when_asked(model, keep_cls):
    batch = image_prompt(model, [5], seed=2)
    with torch.no_grad():
        tower = model.model.vision_tower(batch["pixel_values"], output_hidden_states=True)
        projected_cls = model.model.multi_modal_projector(tower.hidden_states[-2][:, :1])[0, 0]
        with visiondrop.apply(model, budget=16, keep_cls=keep_cls) as handle:
            features = model(**batch).image_hidden_states  # what masked_scatter placed
    if isinstance(features, (list, tuple)):  # transformers >= 5.24: one tensor per image
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    assert features.shape == (handle.schedule.encoder.total, projected_cls.shape[0])
    matches = torch.isclose(features, projected_cls, atol=1e-5).all(-1)
    assert matches.tolist() == ([True] if keep_cls else [False]) + [False] * (features.shape[0] - 1)


def test_two_image_row_equals_that_row_alone(model):
    batch = image_prompt(model, [4, 6], images_per_row=[2, 1], seed=21)
    with torch.no_grad(), visiondrop.apply(model, budget=16) as handle:
        together = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(2):
            alone = model(**row_of(batch, row)).logits[0]
            assert torch.allclose(real_logits(together, mask, row), alone, atol=1e-4), f"row {row}"


def test_position_ids_at_lm_entry(model):
    batch = image_prompt(model, [5], seed=6)
    length = batch["input_ids"].shape[1]
    seen = {}
    lm = model.model.language_model
    def record(module, args, kwargs):
        seen[len(seen)] = kwargs["position_ids"][0].clone()  # returns None: observe only

    hook = lm.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            with visiondrop.apply(model, budget=16, positions="reindex") as handle:
                model(**batch)
                kept = handle.schedule.encoder.total
                patches = handle.report.stage("encoder").segments[0].output_patches
            with visiondrop.apply(model, budget=16, positions="keep"):
                model(**batch)
    finally:
        hook.remove()
    reindex, keep = seen[0], seen[1]
    assert reindex.tolist() == list(range(3 + kept + 5))
    assert keep[:3].tolist() == [0, 1, 2]
    assert keep[3 : 3 + kept].tolist() == (3 + patches.clamp(min=0)).tolist()  # CLS at the image's first position
    assert keep[3 + kept :].tolist() == list(range(length - 5, length))
