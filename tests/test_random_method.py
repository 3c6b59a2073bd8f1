"""The `random` control baseline on a tiny random LLaVA-1.5 (CLIP 336/14 with CLS)."""

import pytest
import torch
from helpers import real_logits, row_of

import visiondrop
from visiondrop import Schedule
from visiondrop.testing import image_prompt


def chosen(handle) -> list[list[int]]:
    """Local encoder indices kept for each image of the last prefill."""
    return [s.dominant.tolist() for s in handle.report.stages[0].segments]


@pytest.mark.parametrize("budget", [1, 16, 100, 576])
def test_every_layer_sees_exactly_budget_tokens(model, budget):
    batch = image_prompt(model, [5, 3, 7], images_per_row=[1, 0, 2])
    with torch.no_grad(), visiondrop.apply(model, "random", budget=budget) as handle:
        model(**batch)
    counts = handle.report.layer_visual_tokens
    assert counts[0].eq(budget).all()
    assert counts[1].eq(0).all()  # text-only row
    assert counts[2].eq(2 * budget).all()  # two images
    assert [s.name for s in handle.report.stages] == ["encoder"]
    stage = handle.report.stages[0]
    assert (stage.tokens_in, stage.dominant, stage.contextual) == (577, budget, 0)
    for seg in stage.segments:
        assert len(seg.dominant) == budget and len(seg.targets) == 0
        assert seg.dominant.tolist() == sorted(set(seg.dominant.tolist()))  # ascending, distinct
        assert seg.merged_into.eq(-1).all()  # nothing merged: the rest is dropped
    assert handle.report.average_visual_tokens(0) == budget


def test_same_patches_for_every_image_batch_and_order_and_seed_changes_them(model):
    batch = image_prompt(model, [5, 9, 4], seed=2)
    with torch.no_grad():
        with visiondrop.apply(model, "random", budget=24) as handle:
            model(**batch)
            together = chosen(handle)
            model(**row_of(batch, 1))
            alone = chosen(handle)
            model(**row_of(batch, 2))
            other_image = chosen(handle)
        with visiondrop.apply(model, "random", budget=24, seed=1) as handle:
            model(**row_of(batch, 1))
            reseeded = chosen(handle)
    assert len(together) == 3 and together[0] == together[1] == together[2]
    assert alone == [together[1]] and other_image == [together[1]]
    assert reseeded[0] != alone[0]


def test_cls_is_never_chosen(model):
    batch = image_prompt(model, [5])
    with torch.no_grad(), visiondrop.apply(model, "random", budget=576) as handle:
        model(**batch)
    seg = handle.report.stages[0].segments[0]
    assert seg.dominant.tolist() == list(range(1, 577))  # all patches, no CLS
    assert (seg.output_patches >= 0).all()
    for seed in range(6):
        with torch.no_grad(), visiondrop.apply(model, "random", budget=8, seed=seed) as handle:
            model(**batch)
        seg = handle.report.stages[0].segments[0]
        assert seg.dominant.min() >= 1 and (seg.dominant_patches >= 0).all()


@pytest.mark.parametrize("positions", ["reindex", "keep"])
def test_batch_rows_equal_rows_run_alone(model, positions):
    batch = image_prompt(model, [5, 11, 7], images_per_row=[1, 1, 0], seed=5)
    with torch.no_grad(), visiondrop.apply(model, "random", budget=16, positions=positions) as handle:
        out = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(3):
            alone = model(**row_of(batch, row)).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"


def test_generate_runs_and_matches_full_recompute(model):
    batch = image_prompt(model, [5, 9], seed=3)
    with torch.no_grad(), visiondrop.apply(model, "random", budget=16):
        new = model.generate(**batch, max_new_tokens=3, do_sample=False)[:, -3:]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for step in range(3):
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                           use_cache=False).logits
            token = logits[:, -1].argmax(-1)
            assert token.tolist() == new[:, step].tolist(), f"step {step}"
            ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def test_encoder_without_cls_draws_from_every_token(siglip_model):
    batch = image_prompt(siglip_model, [5])
    with torch.no_grad(), visiondrop.apply(siglip_model, "random", budget=256) as handle:
        siglip_model(**batch)
    seg = handle.report.stages[0].segments[0]
    assert seg.dominant.tolist() == list(range(256))
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(siglip_model, "random", budget=257)


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": 577}, "budget"),
        ({"budget": "8"}, "budget"),
        ({"budget": True}, "budget"),
        ({"budget": None}, "budget"),
        ({"budget": 8, "schedule": Schedule(encoder=(8, 0))}, "schedule"),
        ({"schedule": Schedule(encoder=(8, 0))}, "schedule"),
        ({"budget": 8, "positions": "bogus"}, "positions"),
        ({"budget": 8, "seed": 1.5}, "seed"),
        ({"budget": 8, "seed": 2**64}, "seed"),
    ],
)
def test_bad_options_raise_naming_the_parameter(model, options, parameter):
    with pytest.raises(ValueError, match=parameter):
        visiondrop.apply(model, "random", **options)
    assert getattr(model, "_visiondrop_handle", None) is None  # nothing was installed


def test_unknown_option_is_rejected(model):
    with pytest.raises(ValueError, match="keep_cls"):
        visiondrop.apply(model, "random", budget=8, keep_cls=False)


def test_registered():
    methods = visiondrop.available_methods()
    assert methods.get("random")
    assert visiondrop.get_method("random").name == "random"
