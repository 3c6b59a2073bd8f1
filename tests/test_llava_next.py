"""LLaVA-NeXT (anyres) on a tiny random model: every method, the release's crop layout,
images of different sizes in one batch, newline tokens, and errors before compute.

Tiny geometry (visiondrop.testing.tiny_llava_next): 112 px crops of 8 x 8 patches, at
most 4 tiles + the base crop, so the largest image plans 5 x 64 = 320 tokens (as 2880 =
5 x 576 on LLaVA-NeXT-7B) and a budget is a multiple of 5. Budgets are planned per crop
(B / 5) and multiplied by 5, so the reference image averages B within 5 / 2 + 1 tokens,
not 1 as on LLaVA-1.5 (docs/models.md).
"""

import pytest
import torch
from helpers import assert_generate_matches_recompute, assert_same_selections, real_logits, selections

import visiondrop
from visiondrop import Schedule
from visiondrop.testing import llava_next_image_tokens, llava_next_prompt, tiny_llava_next

LARGEST = (224, 224)  # 2 x 2 tiles + base: the reference image (5 crops)
CASES = {  # method -> budgets feasible on the 8-layer LM (LLM-only: layer 0 keeps all 320)
    "visiondrop": [40, 160], "random": [40, 160], "visionzip": [40, 160], "vispruner": [40, 160],
    "pool": [40, 160], "fastv": [160, 240], "pdrop": [160, 240], "pdrop-visual": [160, 240],
    "sparsevlm": [160, 240],
}
METHODS = sorted(CASES)
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
LLM_ONLY = {"fastv", "pdrop", "pdrop-visual", "sparsevlm"}


@pytest.fixture(scope="module")
def next_model():
    return tiny_llava_next(seed=0)


@pytest.fixture(scope="module")
def next_eager():
    return tiny_llava_next(seed=0, attn_implementation="eager")


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == METHODS


def _rows_alone(batch, sizes):
    """Each row of a LLaVA-NeXT batch without its padding, with its own images."""
    first = 0
    for row, row_sizes in enumerate(sizes):
        keep = batch["attention_mask"][row].bool()
        out = {key: batch[key][row][keep][None] for key in ("input_ids", "attention_mask")}
        if row_sizes:
            out["pixel_values"] = batch["pixel_values"][first:first + len(row_sizes)]
            out["image_sizes"] = batch["image_sizes"][first:first + len(row_sizes)]
        first += len(row_sizes)
        yield row, out


@pytest.mark.parametrize("method", METHODS)
def test_largest_image_averages_the_budget_and_others_their_share(next_model, method):
    sizes = [[LARGEST], [(100, 200)], []]  # 5 crops; 3 crops; text only
    batch = llava_next_prompt(next_model, [4, 6, 3], sizes)
    for budget in CASES[method]:
        with torch.no_grad(), visiondrop.apply(next_model, method, budget=budget) as handle:
            next_model(**batch)
        report = handle.report
        # Planned per crop and multiplied by 5, so rounding shows up to 5 / 2 times; LLM-only
        # methods see transformers' packed layout (336 tokens for this image, not 320) and
        # keep the same share of it.
        share = llava_next_image_tokens(next_model, LARGEST) / 320 if method in LLM_ONLY else 1.0
        assert abs(report.average_visual_tokens(0) - budget * share) <= 3.5, (
            method, budget, report.layer_visual_tokens[0].tolist())
        if method not in LLM_ONLY:
            per_crop = handle.schedule.encoder.total
            assert report.layer_visual_tokens[0, 0] == 5 * per_crop
            assert report.layer_visual_tokens[1, 0] == 3 * per_crop
        assert report.layer_visual_tokens[2].eq(0).all()
        # the smaller image keeps about 3/5 of the larger one's tokens at every layer
        ratio = report.layer_visual_tokens[1].float() / report.layer_visual_tokens[0].float()
        expected = (llava_next_image_tokens(next_model, (100, 200)) / llava_next_image_tokens(next_model, LARGEST)
                    if method in LLM_ONLY else 3 / 5)
        assert torch.allclose(ratio, torch.full_like(ratio, expected), atol=0.05), ratio.tolist()


@pytest.mark.parametrize("method", METHODS)
def test_remove_restores_bit_identical_outputs(next_model, method):
    batch = llava_next_prompt(next_model, [5, 9], [[LARGEST], [(300, 100)]])
    with torch.no_grad():
        before = next_model(**batch).logits
        handle = visiondrop.apply(next_model, method, budget=CASES[method][1])
        pruned = next_model(**batch).logits
        handle.remove()
        after = next_model(**batch).logits
    assert not torch.equal(pruned[:, -1], before[:, -1])
    assert torch.equal(before, after)


@pytest.mark.parametrize("method", METHODS)
def test_eager_and_sdpa_select_the_same_tokens(next_model, next_eager, method):
    batch = llava_next_prompt(next_model, [5, 9], [[LARGEST], [(100, 200)]])
    runs = []
    for m in (next_model, next_eager):
        with torch.no_grad(), visiondrop.apply(m, method, budget=CASES[method][1]) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("method", METHODS)
def test_cached_generate_equals_full_recompute(next_model, method):
    batch = llava_next_prompt(next_model, [5, 9], [[(100, 200)], [LARGEST]], seed=3)
    steps = 4
    with torch.no_grad(), visiondrop.apply(next_model, method, budget=CASES[method][1]) as handle:
        assert_generate_matches_recompute(next_model, handle, batch, steps, method in TEXT_GUIDED)


@pytest.mark.parametrize("method", METHODS)
def test_batch_rows_of_different_image_sizes_equal_rows_alone(next_model, method):
    sizes = [[LARGEST], [(100, 200), (300, 100)], [], [(112, 112)]]
    batch = llava_next_prompt(next_model, [5, 4, 7, 3], sizes, seed=5)
    with torch.no_grad(), visiondrop.apply(next_model, method, budget=CASES[method][1]) as handle:
        out = next_model(**batch).logits
        mask, report = handle.report.output_mask, handle.report
        for row, alone_batch in _rows_alone(batch, sizes):
            alone = next_model(**alone_batch).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"
            if sizes[row]:
                alone_sel = [[s.dominant.tolist() for s in st.segments] for st in handle.report.stages]
                batch_sel = [[s.dominant.tolist() for s in st.rows(row)] for st in report.stages]
                assert alone_sel == batch_sel, f"row {row}"


def test_release_layout_tiles_in_spatial_order_then_cls_then_contextual(next_model):
    batch = llava_next_prompt(next_model, [4], [[LARGEST]])
    with torch.no_grad(), visiondrop.apply(next_model, "visiondrop", budget=40) as handle:
        next_model(**batch)
    encoder, first_llm = handle.report.stages[0], handle.report.stages[1]
    spec = handle.schedule.encoder
    crops = encoder.segments
    assert len(crops) == 5
    entry = first_llm.segments[0].input_patches.tolist()
    base = crops[0].output_patches.tolist()
    assert entry[:spec.total] == base
    side, per_crop = 8, 64
    tiles = []
    for tile, record in enumerate(crops[1:], start=1):
        for patch in record.output_patches[:spec.dominant].tolist():
            tiles.append(-1 if patch < 0 else tile * per_crop + patch)

    def spatial(patch_id):  # row-major over the 2 x 2 tiled grid of 16 x 16 patches
        tile, patch = divmod(patch_id, per_crop)
        row, col = divmod(tile - 1, 2)
        return (row * side + patch // side) * 2 * side + col * side + patch % side

    patches = sorted((p for p in tiles if p >= 0), key=spatial)
    cls = [p for p in tiles if p < 0]
    contextual = [tile * per_crop + p if p >= 0 else -1 for tile, record in enumerate(crops[1:], start=1)
                  for p in record.output_patches[spec.dominant:].tolist()]
    assert entry[spec.total:] == patches + cls + contextual


def test_newline_end_adds_one_unpruned_token_per_image(next_model):
    batch = llava_next_prompt(next_model, [4, 4], [[LARGEST], [(100, 200), (112, 112)]])
    lengths = {}
    for newline in ("drop", "end"):
        with torch.no_grad(), visiondrop.apply(next_model, "visiondrop", budget=40, newline=newline) as handle:
            next_model(**batch)
            generated = next_model.generate(**batch, max_new_tokens=2, do_sample=False)
        lengths[newline] = handle.report.output_mask.sum(1)
        assert generated.shape[1] == batch["input_ids"].shape[1] + 2
        assert abs(handle.report.average_visual_tokens(0) - 40) <= 1  # the newline is not a visual token
    assert (lengths["end"] - lengths["drop"]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="newline"):
        visiondrop.apply(next_model, "visiondrop", budget=40, newline="row")


def test_llm_only_keep_everything_is_a_no_op(next_model):
    batch = llava_next_prompt(next_model, [4, 6], [[LARGEST], [(100, 200)]])
    with torch.no_grad():
        before = next_model(**batch).logits
        # per crop: 64 of 64 tokens; every image keeps all of its packed tokens
        with visiondrop.apply(next_model, "visiondrop", schedule=Schedule(llm=((64, 0),), layers=(4,))):
            after = next_model(**batch).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_errors_before_compute(next_model):
    with pytest.raises(ValueError, match="multiple of 5"):
        visiondrop.apply(next_model, "visiondrop", budget=42)
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(next_model, "visiondrop", budget=325)
    with pytest.raises(ValueError, match="positions"):
        visiondrop.apply(next_model, "visiondrop", budget=40, positions="keep")
    assert not hasattr(next_model, "_visiondrop_handle")
    with visiondrop.apply(next_model, "fastv", budget=160, positions="keep"):  # no encoder stage: fine
        pass
    batch = llava_next_prompt(next_model, [4], [[LARGEST]])
    batch["image_sizes"] = torch.tensor([[112, 112]])  # fewer tokens than the placeholders
    with visiondrop.apply(next_model, "visiondrop", budget=40), pytest.raises(ValueError, match="image_sizes"):
        next_model(**batch)
