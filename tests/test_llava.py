"""VisionDrop on a tiny random LLaVA-1.5 (CLIP 336/14 with CLS, Llama LM with GQA).

The guarantees every method shares (eager vs sdpa, cached generate, padded batches,
several images per row) are in test_all_methods.py, parametrised over the registry."""

import pytest
import torch
from helpers import row_of

import visiondrop
from visiondrop import Schedule
from visiondrop.testing import image_prompt, tiny_llava

MAX_NEW = 6


def test_remove_restores_bit_identical_outputs(model):
    batch = image_prompt(model, [5, 9])
    with torch.no_grad():
        before = model(**batch).logits
        handle = visiondrop.apply(model, budget=16)
        pruned = model(**batch).logits
        handle.remove()
        after = model(**batch).logits
    assert pruned.shape[1] < before.shape[1]
    assert torch.equal(before, after)
    assert not hasattr(model, "_visiondrop_handle")
    handle.remove()  # harmless


def test_context_manager_removes(model):
    batch = image_prompt(model, [4])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, budget=32) as handle:
            assert handle.active
            model(**batch)
        assert not handle.active
        assert torch.equal(model(**batch).logits, before)


def test_keep_everything_schedule_is_a_no_op(model):
    batch = image_prompt(model, [5, 9, 2])
    keep_all = Schedule(encoder=(576, 0), llm=[(576, 0)] * 3)
    with torch.no_grad():
        full = model(**batch).logits
        with visiondrop.apply(model, schedule=keep_all, keep_cls=False) as handle:
            pruned = model(**batch).logits
    assert handle.report.layer_visual_tokens.eq(576).all()
    assert torch.allclose(pruned, full, atol=1e-5)


def test_llm_only_keep_everything_is_a_no_op(model):
    batch = image_prompt(model, [5, 9])
    with torch.no_grad():
        full = model(**batch).logits
        with visiondrop.apply(model, schedule=Schedule(llm=[(576, 0)] * 2, layers=(3, 5))):
            pruned = model(**batch).logits
    assert torch.allclose(pruned, full, atol=1e-5)


@pytest.mark.parametrize("budget", [1, 8, 16, 64, 200, 384, 500, 576])
def test_layer_counts_follow_schedule_and_average_to_budget(model, budget):
    batch = image_prompt(model, [5, 3], images_per_row=[1, 0])
    with torch.no_grad(), visiondrop.apply(model, budget=budget) as handle:
        model(**batch)
    report = handle.report
    expected = handle.schedule.tokens_per_layer(8, handle.schedule.encoder.total)
    assert report.layer_visual_tokens[0].tolist() == expected
    assert report.layer_visual_tokens[1].eq(0).all()  # the text-only row
    assert abs(report.average_visual_tokens(0) - budget) <= 1
    assert [s.layer for s in report.stages] == [None, 2, 4, 6]


def test_report_describes_each_stage(model):
    batch = image_prompt(model, [5])
    with torch.no_grad(), visiondrop.apply(model, budget=16) as handle:
        model(**batch)
    encoder = handle.report.stage("encoder")
    seg = encoder.segments[0]
    spec = handle.schedule.encoder
    assert seg.dominant[0] == 0 and seg.dominant_patches[0] == -1  # CLS kept, counted in D
    assert len(seg.dominant) == spec.dominant and len(seg.targets) == spec.contextual
    assert seg.merged_into[seg.dominant].eq(-1).all()
    assert seg.merged_into[seg.targets].tolist() == list(range(spec.contextual))
    assert (seg.merged_into >= 0).sum() == 577 - spec.dominant  # every other token merged somewhere
    assert seg.output_patches.tolist() == seg.dominant_patches.tolist() + seg.target_patches.tolist()
    # LLM stages index into the previous stage's output and carry patch ids through
    previous = seg
    for stage in handle.report.stages[1:]:
        current = stage.segments[0]
        assert torch.equal(current.input_patches, previous.output_patches)
        previous = current


def test_batched_generate_equals_rows_alone(model):
    batch = image_prompt(model, [4, 10], seed=7)
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        together = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False)[:, -MAX_NEW:]
        for row in range(2):
            alone = model.generate(**row_of(batch, row), max_new_tokens=MAX_NEW, do_sample=False)[:, -MAX_NEW:]
            assert alone[0].tolist() == together[row].tolist()


def test_siglip_tower_without_cls(siglip_model):
    batch = image_prompt(siglip_model, [5])
    with torch.no_grad(), visiondrop.apply(siglip_model, budget=16) as handle:
        siglip_model.generate(**batch, max_new_tokens=3, do_sample=False)
    seg = handle.report.stage("encoder").segments[0]
    assert (seg.dominant_patches >= 0).all()  # no CLS to keep
    with pytest.raises(ValueError, match="encoder_score='cls' needs an encoder with a \\[CLS\\]"):
        visiondrop.apply(siglip_model, budget=16, encoder_score="cls")


def test_keep_cls_false_passes_only_patches(model):
    batch = image_prompt(model, [5])
    with torch.no_grad(), visiondrop.apply(model, budget=16, keep_cls=False) as handle:
        model(**batch)
    seg = handle.report.stage("encoder").segments[0]
    assert (seg.output_patches >= 0).all() and len(seg.dominant) == handle.schedule.encoder.dominant


def test_batch_without_any_image_is_untouched(model):
    batch = image_prompt(model, [5, 8], images_per_row=[0, 0])
    with torch.no_grad():
        plain = model(**batch).logits
        with visiondrop.apply(model, budget=16) as handle:
            pruned = model(**batch).logits
            model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert torch.equal(plain, pruned)
    assert handle.report.stages == [] and handle.report.layer_visual_tokens.eq(0).all()


def test_keep_positions_with_two_images_in_a_row_generate_matches_recompute(model):
    batch = image_prompt(model, [4, 6], images_per_row=[2, 1], seed=11)
    with torch.inference_mode(), visiondrop.apply(model, budget=16, positions="keep"):
        new = model.generate(**batch, max_new_tokens=4, do_sample=False)[:, -4:]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for step in range(4):
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"]).logits
            token = logits[:, -1].argmax(-1)
            assert token.tolist() == new[:, step].tolist()
            ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def test_bfloat16_model_runs_and_counts_hold():
    model = tiny_llava(seed=2).to(torch.bfloat16)
    batch = image_prompt(model, [5, 7])
    batch["pixel_values"] = batch["pixel_values"].bfloat16()
    with torch.inference_mode(), visiondrop.apply(model, budget=32) as handle:
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3
    assert abs(handle.report.average_visual_tokens(0) - 32) <= 1


def test_right_padded_generate_unpadded_row_equals_row_alone(model):
    # the longest row has no padding; the shorter one shrinks as much, so rows stay aligned
    batch = image_prompt(model, [9, 4], padding_side="right", seed=13)
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        together = model.generate(**batch, max_new_tokens=4, do_sample=False)[:, -4:]
        alone = model.generate(**row_of(batch, 0), max_new_tokens=4, do_sample=False)[:, -4:]
    assert together[0].tolist() == alone[0].tolist()


def test_rows_that_shrink_more_are_padded_on_the_left(model):
    # both rows end in a real token; row 0 (image) shrinks, row 1 (text only) does not:
    # row 0's new padding must go left so its last column stays its last token
    batch = image_prompt(model, [9, 4], images_per_row=[1, 0], padding_side="right", seed=13)
    batch["attention_mask"][1] = 1
    with torch.no_grad(), visiondrop.apply(model, budget=16) as handle:
        model(**batch)
    assert handle.report.output_mask[:, -1].tolist() == [1, 1]
    assert handle.report.output_mask[0, 0].item() == 0


def test_generate_without_cache_matches_cached(model):
    batch = image_prompt(model, [5, 9], seed=17)
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        cached = model.generate(**batch, max_new_tokens=4, do_sample=False)
        uncached = model.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_report_does_not_keep_the_cache_alive(model):
    import gc
    import weakref

    batch = image_prompt(model, [5])
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        out = model(**batch, use_cache=True)
        ref = weakref.ref(out.past_key_values)
        del out
        gc.collect()
        assert ref() is None


@pytest.mark.parametrize("padded", [False, True])
def test_decode_steps_build_stage_masks_from_none_only_without_padding(model, monkeypatch, padded):
    # Without padding a decode step needs no 2-D mask: one host check of the new columns
    # stands for the LM's and every stage's (each would check its own mask on the host).
    import visiondrop.models.decoder as decoder

    given = []
    original = decoder.create_causal_mask

    def recording(*args, **kwargs):
        given.append(kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    batch = image_prompt(model, [3, 6] if padded else [4, 4])
    with visiondrop.apply(model, budget=16) as handle, torch.no_grad():
        expected = model.generate(**batch, max_new_tokens=4, do_sample=False)
        monkeypatch.setattr(decoder, "create_causal_mask", recording)
        tokens = model.generate(**batch, max_new_tokens=4, do_sample=False)
        assert handle.adapter.pruner.session.decode_dense is not padded
    assert torch.equal(tokens, expected)
    stage_masks = given[len(handle.schedule.llm):]  # the prefill's stages come first
    assert len(stage_masks) == 3 * len(handle.schedule.llm)  # 3 decode steps, each stage
    assert all((mask is None) is not padded for mask in stage_masks)
