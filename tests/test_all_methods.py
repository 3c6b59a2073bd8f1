"""The foundation's guarantees, for every registered method (parametrised): reversible
hooks, layer-average budgets, backend independence, cache-correct generate(), batches
with padding, the per-stage report, and errors before compute."""

import pytest
import torch
from helpers import assert_generate_matches_recompute, assert_same_selections, real_logits, row_of, selections

import visiondrop
from visiondrop.testing import image_prompt

MAX_NEW = 5
# (method, options, budgets feasible on the tiny 8-layer LM: LLM-only methods keep all
# 576 tokens in layer 0, so their layer average cannot go below 72).
CASES = {
    "visiondrop": ({}, [16, 64, 200]),
    "random": ({}, [16, 64, 200]),
    "fastv": ({}, [100, 200, 400]),
    "pdrop": ({}, [100, 200, 400]),
    "pdrop-visual": ({}, [100, 200, 400]),
    "sparsevlm": ({}, [100, 200, 400]),
    "visionzip": ({}, [16, 64, 200]),
    "vispruner": ({}, [16, 64, 200]),
    "pool": ({}, [16, 64, 192]),
}
METHODS = sorted(CASES)
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == METHODS


def _apply(model, method, budget=None, **extra):
    options, budgets = CASES[method]
    return visiondrop.apply(model, method, budget=budget or budgets[1], **{**options, **extra})


@pytest.mark.parametrize("method", METHODS)
def test_remove_restores_bit_identical_outputs(model, method):
    batch = image_prompt(model, [5, 9])
    with torch.no_grad():
        before = model(**batch).logits
        handle = _apply(model, method)
        pruned = model(**batch).logits
        handle.remove()
        after = model(**batch).logits
    assert pruned.shape[1] < before.shape[1] or method in ("fastv", "pdrop", "pdrop-visual", "sparsevlm")
    assert not torch.equal(pruned[:, -1], before[:, -1])
    assert torch.equal(before, after)


@pytest.mark.parametrize("method", METHODS)
def test_layer_average_is_the_budget_within_one_token(model, method):
    batch = image_prompt(model, [5, 3], images_per_row=[1, 0])
    for budget in CASES[method][1]:
        with torch.no_grad(), _apply(model, method, budget) as handle:
            model(**batch)
        counts = handle.report.layer_visual_tokens
        assert abs(handle.report.average_visual_tokens(0) - budget) <= 1, (method, budget, counts[0].tolist())
        assert counts[1].eq(0).all()  # the text-only row
        entering = handle.schedule.encoder.total if handle.schedule.encoder else 576
        assert counts[0].tolist() == handle.schedule.tokens_per_layer(8, entering)


@pytest.mark.parametrize("method", METHODS)
def test_report_matches_the_schedule(model, method):
    batch = image_prompt(model, [6])
    with torch.no_grad(), _apply(model, method) as handle:
        model(**batch)
    schedule, stages = handle.schedule, handle.report.stages
    expected = ([schedule.encoder] if schedule.encoder else []) + list(schedule.llm)
    assert [(s.dominant, s.contextual) for s in stages] == [(e.dominant, e.contextual) for e in expected]
    assert [s.layer for s in stages if s.name == "llm"] == list(schedule.layers or ())
    for stage in stages:
        seg = stage.segments[0]
        assert len(seg.dominant) == stage.dominant and len(seg.targets) == stage.contextual
        assert seg.dominant.tolist() == sorted(set(seg.dominant.tolist()))
        assert seg.merged_into[seg.dominant].eq(-1).all()


@pytest.mark.parametrize("method", METHODS)
def test_eager_and_sdpa_select_the_same_tokens(model, eager_model, method):
    batch = image_prompt(model, [5, 9])
    runs = []
    for m in (model, eager_model):
        with torch.no_grad(), _apply(m, method) as handle:
            logits = m(**batch).logits
        mask = handle.report.output_mask
        runs.append((selections(handle.report), [real_logits(logits, mask, r) for r in range(2)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("positions", ["reindex", "keep"])
@pytest.mark.parametrize("method", METHODS)
def test_cached_generate_equals_full_recompute(model, method, positions):
    """Visual-only methods score without text queries, so a recompute selects the same
    tokens by itself (the paper's point); text-guided ones need :func:`prompt_queries`."""
    batch = image_prompt(model, [5, 9], seed=3)
    with torch.no_grad(), _apply(model, method, positions=positions) as handle:
        assert_generate_matches_recompute(model, handle, batch, MAX_NEW, method in TEXT_GUIDED)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("method", METHODS)
def test_batch_rows_equal_rows_run_alone(model, method, padding_side):
    batch = image_prompt(model, [5, 11, 7], images_per_row=[1, 1, 0], padding_side=padding_side, seed=5)
    with torch.no_grad(), _apply(model, method) as handle:
        out = model(**batch).logits
        batch_mask, batch_report = handle.report.output_mask, handle.report
        for row in range(3):
            alone = model(**row_of(batch, row)).logits
            assert torch.allclose(real_logits(out, batch_mask, row), alone[0], atol=1e-4), f"row {row}"
            if row < 2:
                alone_sel = [[s.dominant.tolist() for s in st.segments] for st in handle.report.stages]
                batch_sel = [[s.dominant.tolist() for s in st.rows(row)] for st in batch_report.stages]
                assert alone_sel == batch_sel


@pytest.mark.parametrize("method", METHODS)
def test_two_images_in_one_row(model, method):
    batch = image_prompt(model, [4, 6], images_per_row=[2, 1])
    with torch.no_grad(), _apply(model, method) as handle:
        model(**batch)
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    counts = handle.report.layer_visual_tokens
    assert torch.equal(counts[0], 2 * counts[1])


@pytest.mark.parametrize("method", METHODS)
def test_bad_options_fail_before_compute(model, method):
    with pytest.raises(ValueError, match="unknown option"):
        _apply(model, method, no_such_option=1)
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(model, method, budget=577)
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(model, method, budget=0)
    with pytest.raises(ValueError, match="positions"):
        _apply(model, method, positions="shuffle")
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("options, budget", [({"llm_scores": "text"}, 64), ({"contextual_ratio": 0}, 64),
                                             ({"encoder_stage": False}, 300), ({"entry_factor": 2.0}, 64),
                                             ({"llm_scores": "visual-visible"}, 64)])
def test_visiondrop_ablations_keep_the_budget(model, options, budget):
    """The paper's Figure 6 ablations are options of visiondrop, under the same budget rule."""
    batch = image_prompt(model, [5, 9])
    with torch.no_grad(), visiondrop.apply(model, "visiondrop", budget=budget, **options) as handle:
        model(**batch)
        ablated = selections(handle.report)
    assert abs(handle.report.average_visual_tokens(0) - budget) <= 1
    with torch.no_grad(), visiondrop.apply(model, "visiondrop", budget=budget) as handle:
        model(**batch)
        default = selections(handle.report)
    assert ablated != default  # the option changes what is kept
    schedule = visiondrop.get_method("visiondrop").from_options(budget=budget, **options).plan(
        visiondrop.models.adapter_for(model).geometry())
    if options.get("encoder_stage") is False:
        assert schedule.encoder is None and ablated[0][0] == "llm"
    if options.get("contextual_ratio") == 0:
        assert all(stage.contextual == 0 for stage in [schedule.encoder, *schedule.llm])
    if "entry_factor" in options:
        assert schedule.encoder.total == 2 * budget
