"""Video-LLaVA on a tiny random model: every method, images and videos in one batch,
the per-frame plan, and errors before compute.

Tiny geometry (visiondrop.testing.tiny_video_llava at 70 px / patch 14): 25 patches, so
25 tokens per image ([CLS] dropped) and 26 per video frame ([CLS] kept), 8 frames = 208
tokens per video (256 / 257 / 2056 on Video-LLaVA-7B). A video is planned per frame, so
budgets are multiples of 8, and at most 25 (the image's tokens). 16 LM layers: with 8
frames a frame's share of the budget is at most 25 / 8 tokens, and LLM-only methods keep
all 26 of a frame's tokens until their first stage, so that stage must come before 1/8
of the depth (layer 1 of 16; FastV's layer 2 of 32 on the 7B).
"""

import pytest
import torch
from helpers import assert_generate_matches_recompute, assert_same_selections, real_logits, selections

import visiondrop
from visiondrop.schedule import BudgetInfeasible
from visiondrop.testing import tiny_video_llava, video_llava_image_key, video_llava_prompt

SIZE = 70
FRAMES = 8
LAYERS = 16
IMAGE_TOKENS, FRAME_TOKENS = 25, 26
PATCHES = 25
CASES = {  # method -> (options, budgets feasible for images and videos)
    "visiondrop": ({}, [8, 16, 24]),
    "random": ({}, [8, 16, 24]),
    "visionzip": ({}, [8, 16, 24]),
    "vispruner": ({}, [8, 16, 24]),
    "pool": ({}, [8, 16]),
    "fastv": ({}, [16, 24]),
    "pdrop": ({}, [24]),  # at 16: 2 per frame, but a frame's 26 tokens stay in layer 0
    "pdrop-visual": ({}, [24]),
}
# SparseVLM adds at least one recycled token per stage and frame: with at most 3 tokens per
# frame here no plan averages the budget (test_sparsevlm_*); it runs at the 7B's geometry.
METHODS = sorted(CASES)
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
MEDIA = [["image"], ["video"], ["image", "video"], []]


@pytest.fixture(scope="module")
def video_model():
    return tiny_video_llava(seed=0, num_layers=LAYERS, image_size=SIZE)


@pytest.fixture(scope="module")
def video_eager():
    return tiny_video_llava(seed=0, num_layers=LAYERS, image_size=SIZE, attn_implementation="eager")


def _apply(model, method, budget=None, **extra):
    options, budgets = CASES[method]
    return visiondrop.apply(model, method, budget=budget or budgets[-1], **{**options, **extra})


def _rows_alone(batch, media):
    """Each row without its padding, with its own images and videos."""
    first = {"image": 0, "video": 0}
    keys = {"image": video_llava_image_key(), "video": "pixel_values_videos"}
    for row, items in enumerate(media):
        keep = batch["attention_mask"][row].bool()
        out = {key: batch[key][row][keep][None] for key in ("input_ids", "attention_mask")}
        for modality, key in keys.items():
            count = items.count(modality)
            if count:
                out[key] = batch[key][first[modality]:first[modality] + count]
            first[modality] += count
        yield row, out


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == sorted([*METHODS, "sparsevlm"])


def test_adapter_is_registered(video_model):
    assert "VideoLlavaForConditionalGeneration" in visiondrop.supported_models()
    adapter = visiondrop.models.adapter_for(video_model)
    assert (adapter.frames, adapter.llm_tokens, adapter.frame_tokens) == (FRAMES, IMAGE_TOKENS, FRAME_TOKENS)
    assert adapter.geometry().modality == "image" and adapter.frame_geometry().modality == "video"


@pytest.mark.parametrize("method", METHODS)
def test_images_and_videos_average_the_budget(video_model, method):
    batch = video_llava_prompt(video_model, [4, 5, 3, 6], MEDIA)
    for budget in CASES[method][1]:
        with torch.no_grad(), _apply(video_model, method, budget) as handle:
            video_model(**batch)
        report, image, video = handle.report, handle.schedule, handle.adapter.video_schedule
        counts = report.layer_visual_tokens
        assert abs(counts[0].float().mean().item() - budget) <= 1, (method, budget, counts[0].tolist())
        assert abs(counts[1].float().mean().item() - budget) <= FRAMES / 2 + 1, (method, budget, counts[1].tolist())
        image_entry = image.encoder.total if image.encoder else IMAGE_TOKENS
        video_entry = FRAMES * (video.encoder.total if video.encoder else FRAME_TOKENS)
        assert counts[0].tolist() == image.tokens_per_layer(LAYERS, image_entry)
        if method != "sparsevlm":  # its recycled count follows from the tokens it pruned
            assert counts[1].tolist() == video.tokens_per_layer(LAYERS, video_entry)
        assert torch.equal(counts[2], counts[0] + counts[1])  # image + video in one row
        assert counts[3].eq(0).all()  # text only


@pytest.mark.parametrize("method", METHODS)
def test_remove_restores_bit_identical_outputs(video_model, method):
    batch = video_llava_prompt(video_model, [5, 9], [["image"], ["video", "image"]])
    with torch.no_grad():
        before = video_model(**batch).logits
        handle = _apply(video_model, method)
        pruned = video_model(**batch).logits
        handle.remove()
        after = video_model(**batch).logits
    assert not torch.equal(pruned[:, -1], before[:, -1])
    assert torch.equal(before, after)


@pytest.mark.parametrize("method", METHODS)
def test_eager_and_sdpa_select_the_same_tokens(video_model, video_eager, method):
    batch = video_llava_prompt(video_model, [5, 9], [["image", "video"], ["video"]])
    runs = []
    for m in (video_model, video_eager):
        with torch.no_grad(), _apply(m, method) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("positions", ["reindex", "keep"])
@pytest.mark.parametrize("method", METHODS)
def test_cached_generate_equals_full_recompute(video_model, method, positions):
    batch = video_llava_prompt(video_model, [5, 9], [["video"], ["image", "video"]], seed=3)
    with torch.no_grad(), _apply(video_model, method, positions=positions) as handle:
        assert_generate_matches_recompute(video_model, handle, batch, 4, method in TEXT_GUIDED)


@pytest.mark.parametrize("method", METHODS)
def test_batch_rows_equal_rows_run_alone(video_model, method):
    batch = video_llava_prompt(video_model, [5, 4, 7, 3], MEDIA, seed=5)
    with torch.no_grad(), _apply(video_model, method) as handle:
        out = video_model(**batch).logits
        mask, report = handle.report.output_mask, handle.report
        for row, alone_batch in _rows_alone(batch, MEDIA):
            alone = video_model(**alone_batch).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"
            if MEDIA[row]:
                alone_sel = [[s.dominant.tolist() for s in st.segments] for st in handle.report.stages]
                batch_sel = [[s.dominant.tolist() for s in st.rows(row)] for st in report.stages]
                assert alone_sel == batch_sel, f"row {row}"


@pytest.mark.parametrize("method", METHODS)
def test_report_stages(video_model, method):
    batch = video_llava_prompt(video_model, [6], [["video", "image"]])
    with torch.no_grad(), _apply(video_model, method) as handle:
        video_model(**batch)
    image, video = handle.schedule, handle.adapter.video_schedule
    stages = handle.report.stages
    llm = [s for s in stages if s.name == "llm"]
    assert [s.layer for s in llm] == list(image.layers or ())
    if image.encoder is not None:
        encoder = stages[0]
        assert encoder.name == "encoder" and len(stages) == 1 + len(image.llm)
        frames, picture = encoder.segments[:FRAMES], encoder.segments[FRAMES]
        assert [s.image for s in encoder.segments] == [0] * FRAMES + [1]
        for f, record in enumerate(frames):  # video patch ids: frame * 25 + patch, [CLS] -1
            assert len(record.dominant) == video.encoder.dominant and len(record.targets) == video.encoder.contextual
            ids = record.input_patches.tolist()
            assert ids == [-1] + [f * PATCHES + p for p in range(PATCHES)]
        assert len(picture.dominant) == image.encoder.dominant and len(picture.targets) == image.encoder.contextual
        assert picture.input_patches.tolist() == list(range(-1, PATCHES))
        entry = torch.cat([r.output_patches for r in frames])
    else:
        assert len(stages) == len(image.llm)
        entry = torch.tensor([f * PATCHES + p if p >= 0 else -1 for f in range(FRAMES) for p in range(-1, PATCHES)])
    for i, stage in enumerate(llm):
        video_record, image_record = stage.segments
        if i == 0:
            assert video_record.input_patches.tolist() == entry.tolist()
        assert len(video_record.dominant) == video.llm[i].dominant or method == "sparsevlm"
        assert len(image_record.dominant) == image.llm[i].dominant or method == "sparsevlm"
        for record in stage.segments:
            assert record.dominant.tolist() == sorted(set(record.dominant.tolist()))
            assert record.merged_into[record.dominant].eq(-1).all()


def test_visiondrop_lets_three_times_the_budget_enter_for_video(video_model):
    with visiondrop.apply(video_model, "visiondrop", budget=16) as handle:
        assert handle.schedule.encoder.total == 24  # images: 1.5 x 16
        assert handle.adapter.video_schedule.encoder.total == 6  # per frame: 3 x 16 / 8
    with visiondrop.apply(video_model, "visiondrop", budget=16, video_entry_factor=2.0) as handle:
        assert handle.schedule.encoder.total == 24
        assert handle.adapter.video_schedule.encoder.total == 4
    with pytest.raises(ValueError, match="video_entry_factor"):
        visiondrop.apply(video_model, "visiondrop", budget=16, video_entry_factor=0.5)


def test_errors_before_compute(video_model):
    with pytest.raises(ValueError, match=r"budget=12: .* multiple of 8"):
        visiondrop.apply(video_model, "visiondrop", budget=12)
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(video_model, "visiondrop", budget=32)  # more than an image's 25 tokens
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(video_model, "random", budget=0)
    with pytest.raises(BudgetInfeasible, match="budget=16: planned per frame"):
        visiondrop.apply(video_model, "pdrop", budget=16)  # a video would average 22
    assert not hasattr(video_model, "_visiondrop_handle")
    batch = video_llava_prompt(video_model, [4], [["video"]])
    batch["input_ids"][0, 3] = 7  # the first of the video's placeholders becomes text
    with visiondrop.apply(video_model, "visiondrop", budget=16), pytest.raises(ValueError, match="video"):
        video_model(**batch)


def test_sparsevlm_refuses_budgets_a_tiny_video_cannot_average(video_model):
    with pytest.raises(BudgetInfeasible, match="planned per frame"):
        visiondrop.apply(video_model, "sparsevlm", budget=24, layers=(1, 4, 8))


@pytest.fixture(scope="module")
def geometry_7b():
    """Video-LLaVA-7B's token geometry (224 px / 14: 256 + [CLS], 8 frames = 2056, 32 LM
    layers) with tiny widths."""
    return tiny_video_llava(seed=0, num_layers=32, image_size=224)


@pytest.mark.parametrize("method", sorted(visiondrop.available_methods()))
def test_paper_budget_256_at_the_7b_geometry(geometry_7b, method):
    """The paper's Video-LLaVA budget (256) is feasible for every method: an image averages
    it within 1, a video within 8 / 2 + 1."""
    batch = video_llava_prompt(geometry_7b, [4, 6], [["image"], ["video"]])
    with torch.no_grad(), visiondrop.apply(geometry_7b, method, budget=256) as handle:
        geometry_7b(**batch)
        counts = handle.report.layer_visual_tokens.float()
        assert abs(counts[0].mean().item() - 256) <= 1, counts[0].tolist()
        assert abs(counts[1].mean().item() - 256) <= FRAMES / 2 + 1, counts[1].tolist()
        if method == "sparsevlm":
            single = video_llava_prompt(geometry_7b, [5], [["video"]], seed=2)
            assert_generate_matches_recompute(geometry_7b, handle, single, 2, text_guided=True)
    if method == "visiondrop":  # 3 x 256 enter the LLM for a video, 1.5 x 256 (capped at 256) for an image
        assert handle.adapter.video_schedule.encoder.total * FRAMES == 768
        assert handle.schedule.encoder.total == 256


# ------------------------------------------------------------ strategy "full"
FULL_METHODS = ["visiondrop", "fastv", "visionzip", "pdrop"]


@pytest.fixture(scope="module")
def full_model():
    """Video-LLaVA with ``vision_feature_select_strategy="full"``: images keep [CLS] too."""
    model = tiny_video_llava(seed=1, num_layers=LAYERS, image_size=SIZE)
    model.config.vision_feature_select_strategy = "full"
    model.config.image_seq_length = FRAME_TOKENS
    return model


def test_full_strategy_images_keep_cls(full_model):
    adapter = visiondrop.models.adapter_for(full_model)
    assert (adapter.llm_tokens, adapter.patch_offset) == (FRAME_TOKENS, 1)
    batch = video_llava_prompt(full_model, [4], [["image"]])
    assert batch["input_ids"].eq(visiondrop.testing.IMAGE_TOKEN_ID).sum() == FRAME_TOKENS
    with torch.no_grad(), _apply(full_model, "visiondrop", 16) as handle:
        full_model(**batch)
    encoder = handle.report.stages[0]
    assert encoder.name == "encoder"
    assert -1 in encoder.segments[0].output_patches.tolist()  # the image's [CLS] enters the LLM


@pytest.mark.parametrize("method", FULL_METHODS)
def test_full_strategy_counts_and_rows_alone(full_model, method):
    batch = video_llava_prompt(full_model, [5, 4, 7, 3], MEDIA, seed=7)
    with torch.no_grad(), _apply(full_model, method) as handle:
        out = full_model(**batch).logits
        counts, mask = handle.report.layer_visual_tokens, handle.report.output_mask
        image = handle.schedule
        image_entry = image.encoder.total if image.encoder else FRAME_TOKENS
        assert counts[0].tolist() == image.tokens_per_layer(LAYERS, image_entry)
        assert torch.equal(counts[2], counts[0] + counts[1])
        for row, alone_batch in _rows_alone(batch, MEDIA):
            alone = full_model(**alone_batch).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"


@pytest.mark.parametrize("positions", ["reindex", "keep"])
@pytest.mark.parametrize("method", FULL_METHODS)
def test_full_strategy_cached_generate_equals_full_recompute(full_model, method, positions):
    batch = video_llava_prompt(full_model, [5, 9], [["image"], ["image", "video"]], seed=4)
    with torch.no_grad(), _apply(full_model, method, positions=positions) as handle:
        assert_generate_matches_recompute(full_model, handle, batch, 4, method in TEXT_GUIDED)
