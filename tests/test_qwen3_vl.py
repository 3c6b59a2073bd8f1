"""Qwen3-VL on a tiny random model (tests/tiny_qwen3_vl.py; prompts from
tests/tiny_qwen2_5_vl.py): the guarantees every model gets, plus DeepStack (its
features follow each image's reduction; LLM stages before its last injection are
refused), per-head q/k norms in the LM's scores, the MoE variant and the video refusal.

Images here have 6 (grid 1 x 4 x 6), 16 (1 x 8 x 8) or 4 (1 x 4 x 4) tokens; the LM has 8
layers and two DeepStack levels (injections after layers 0 and 1), so LLM stages may
come at layer 2 or later.
"""

import pytest
import torch
from helpers import assert_same_selections, real_logits, selections
from test_qwen2_5_vl import assert_generate_matches_recompute
from tiny_qwen2_5_vl import qwen_batch, row_alone, tokens
from tiny_qwen3_vl import qwen3_batch, tiny_qwen3

import visiondrop
from visiondrop import Schedule
from visiondrop.core.merging import merge_like

# method -> apply() options; FastV at K = 2 (its stage before layer 2, the first allowed)
CASES = {
    "visiondrop": dict(budget=4),
    "random": dict(budget=4),
    "fastv": dict(budget=4, layer=2),
    "pdrop": dict(budget=6, layers=(2, 4, 6)),
    "sparsevlm": dict(budget=5, layers=(2, 4, 6)),
}
REFUSED = ["pool", "visionzip", "vispruner"]
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
POLICIES = ["reindex", "keep"]
ROWS = [[("image", (1, 4, 6))], [("image", (1, 8, 8))]]


@pytest.fixture(scope="module")
def model():
    return tiny_qwen3(seed=0)


@pytest.fixture(scope="module")
def eager():
    return tiny_qwen3(seed=0, attn="eager")


def _apply(model, method, **extra):
    return visiondrop.apply(model, method, **{**CASES[method], **extra})


@pytest.mark.parametrize("method", REFUSED)
def test_methods_that_need_cls_or_a_square_grid_are_refused(model, method):
    with pytest.raises(ValueError, match=f"{method}.*Qwen3-VL"):
        visiondrop.apply(model, method, budget=4)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize(("method", "options"), [
    ("pdrop", dict(budget=4)),  # its default stages start before layer 1 on 8 layers
    ("visiondrop", dict(schedule=Schedule(llm=((4, 0),), layers=(1,)))),
])
def test_llm_stages_before_the_last_deepstack_injection_are_refused(model, method, options):
    with pytest.raises(ValueError, match="DeepStack .* must come at layer 2 or later"):
        visiondrop.apply(model, method, **options)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("method", CASES)
def test_each_image_averages_the_budget_and_remove_restores(model, method):
    rows = [*ROWS, [], [("image", (1, 4, 4))]]
    batch = qwen_batch(rows, [5, 2, 4, 3])
    with torch.no_grad():
        before = model(**batch).logits
        with _apply(model, method) as handle:
            pruned = model(**batch).logits
        after = model(**batch).logits
    counts = handle.report.layer_visual_tokens
    if "budget" in CASES[method]:
        for row in (0, 1):
            assert abs(handle.report.average_visual_tokens(row) - CASES[method]["budget"]) <= 1, counts[row]
    assert counts[2].eq(0).all()
    if method not in TEXT_GUIDED:  # the two images shrink before the LM
        assert (handle.report.output_mask.sum(1)[:2] < batch["attention_mask"].sum(1)[:2]).all()
    assert not torch.equal(pruned, before) and torch.equal(before, after)
    assert "get_image_features" not in vars(model.model)


@pytest.mark.parametrize("positions", POLICIES)
@pytest.mark.parametrize("stage", ["encoder", "llm"])
def test_keep_everything_is_a_no_op(model, stage, positions):
    batch = qwen_batch(ROWS, [5, 2])
    schedule = Schedule(encoder=(16, 0)) if stage == "encoder" else Schedule(llm=((16, 0),), layers=(3,))
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=schedule, positions=positions) as handle:
            after = model(**batch).logits
    assert handle.report.layer_visual_tokens[:, -1].tolist() == [6, 16]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", CASES)
def test_eager_and_sdpa_select_the_same_tokens(model, eager, method):
    batch = qwen_batch(ROWS, [5, 2])
    runs = []
    for m in (model, eager):
        with torch.no_grad(), _apply(m, method) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("positions", POLICIES)
@pytest.mark.parametrize("method", CASES)
def test_cached_generate_equals_full_recompute(model, method, positions):
    batch = qwen_batch([[("image", (1, 8, 8))], [("image", (1, 4, 6))]], [2, 6], seed=3)
    with torch.no_grad(), _apply(model, method, positions=positions) as handle:
        assert_generate_matches_recompute(model, handle, batch, 3, method in TEXT_GUIDED)


@pytest.mark.parametrize("method", CASES)
def test_batch_rows_of_different_sizes_equal_rows_alone(model, method):
    rows = [[("image", (1, 4, 6))], [("image", (1, 8, 8)), ("image", (1, 4, 6))], []]
    batch = qwen_batch(rows, [7, 2, 5], seed=4)
    with torch.no_grad(), _apply(model, method) as handle:
        together = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(len(rows)):
            alone = model(**row_alone(batch, rows, row)).logits
            torch.testing.assert_close(real_logits(together, mask, row), alone[0], atol=1e-4, rtol=0)


def test_deepstack_features_follow_each_images_reduction(model):
    batch = qwen_batch(ROWS, [5, 2])
    pixels, grid = batch["pixel_values"], batch["image_grid_thw"]
    with torch.no_grad():
        plain = model.model.get_image_features(pixels, grid)
        with visiondrop.apply(model, "visiondrop", schedule=Schedule(encoder=(3, 2))) as handle:
            reduced = model.model.get_image_features(pixels, grid)
            reductions = [r for _, r in handle.adapter._reductions["image"]]
    sizes = [tokens(g) for g in grid.tolist()]
    for level, reduced_level in zip(plain.deepstack_features, reduced.deepstack_features):
        per_image = level if isinstance(level, (tuple, list)) else level.split(sizes)
        got = reduced_level if isinstance(reduced_level, (tuple, list)) else reduced_level.split(5)
        for features, reduction, out in zip(per_image, reductions, got):
            expected = torch.cat([features[reduction.dominant[0]], merge_like(features[None], reduction.merge)[0]])
            torch.testing.assert_close(out, expected)
            assert out.shape[0] == 5 < features.shape[0]


def test_llm_scores_apply_the_per_head_qk_norms(eager):
    """FastV's kept tokens are the top of the last token's attention at layer K - 1, as the
    model itself computes it (after q_norm / k_norm): read from eager attention weights."""
    batch = qwen_batch([[("image", (1, 8, 8))]], [4], seed=5)
    visual = batch["mm_token_type_ids"][0].bool()
    with torch.no_grad():
        attentions = eager(**batch, output_attentions=True).attentions
        with visiondrop.apply(eager, "fastv", budget=8, layer=3) as handle:
            eager(**batch)
    kept = handle.report.stages[-1].segments[0].dominant
    scores = attentions[2][0, :, -1, visual].mean(0)  # FastV prunes layer 3's input by layer 2's attention
    expected = torch.topk(scores, len(kept)).indices.sort().values
    assert 0 < len(kept) < 16 and kept.tolist() == expected.tolist()


VIDEO_ROWS = [[("video", (2, 8, 8))], [("image", (1, 8, 8)), ("video", (2, 4, 12))], []]


@pytest.mark.parametrize("method", ["visiondrop", "random", "fastv"])
def test_video_steps_are_segments_with_their_own_budget(model, method):
    """A video is one placeholder run per temporal step; each step is planned on its own."""
    batch = qwen3_batch(VIDEO_ROWS, [3, 2, 5])
    with torch.no_grad(), _apply(model, method) as handle:
        model(**batch)
    stage = handle.report.stages[-1]
    assert [s.row for s in stage.segments] == [0, 0, 1, 1, 1]  # 2 steps; an image and 2 steps
    budget = CASES[method]["budget"]
    for segment in handle.report.stages[0].segments:
        assert segment.input_patches.numel() in (12, 16)  # a step of 8 x 8 or 4 x 12 patches, the image
    for row in (0, 1):  # per segment (an image, a step), averaged over the layers
        assert abs(handle.report.average_visual_tokens(row) - budget) <= 1, method


@pytest.mark.parametrize("positions", POLICIES)
@pytest.mark.parametrize("method", ["visiondrop", "fastv"])
def test_cached_generate_with_videos_equals_full_recompute(model, method, positions):
    batch = qwen3_batch(VIDEO_ROWS[:2], [3, 2], seed=6)
    with torch.no_grad(), _apply(model, method, positions=positions) as handle:
        assert_generate_matches_recompute(model, handle, batch, 3, method in TEXT_GUIDED)


@pytest.mark.parametrize("method", ["visiondrop", "fastv"])
def test_video_rows_equal_rows_alone(model, method):
    batch = qwen3_batch(VIDEO_ROWS, [3, 2, 5], seed=7)
    with torch.no_grad(), _apply(model, method) as handle:
        together = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(len(VIDEO_ROWS)):
            alone = model(**row_alone(batch, VIDEO_ROWS, row)).logits
            torch.testing.assert_close(real_logits(together, mask, row), alone[0], atol=1e-4, rtol=0)


def test_keep_everything_with_videos_is_a_no_op(model):
    batch = qwen3_batch(VIDEO_ROWS, [3, 2, 5])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=Schedule(encoder=(16, 0))):
            after = model(**batch).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_text_only_prompt_is_untouched(model):
    batch = qwen_batch([[], []], [5, 3])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, budget=4):
            after = model(**batch).logits
    assert torch.equal(before, after)


def test_moe_variant_prunes_and_restores():
    moe = tiny_qwen3(seed=1, moe=True)
    batch = qwen_batch(ROWS, [5, 2])
    with torch.no_grad():
        before = moe(**batch).logits
        with visiondrop.apply(moe, budget=4) as handle:
            pruned = moe(**batch).logits
            assert_generate_matches_recompute(moe, handle, batch, 2, text_guided=False)
        after = moe(**batch).logits
    assert pruned.shape[1] < before.shape[1] and torch.equal(before, after)
    assert type(moe).__name__ in visiondrop.supported_models()


def test_cli_generate_prunes_a_qwen3_checkpoint(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image
    from tiny_qwen2_5_vl import EOS, TinyQwenProcessor, tiny_image_processor, tiny_tokenizer

    import visiondrop.inputs
    from visiondrop.cli import main

    model = tiny_qwen3(seed=0)
    model.config.text_config.eos_token_id = EOS
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    tiny_image_processor().save_pretrained(tmp_path)
    image = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype("uint8")).save(image)
    # transformers builds Qwen3VLProcessor only with torchvision (its video processor)
    monkeypatch.setattr(visiondrop.inputs, "load_processor",
                        lambda path, config, **options: TinyQwenProcessor.from_pretrained(path))
    code = main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "what is this ?",
                 "--budget", "4", "--max-new-tokens", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "vision encoder:    6 -> 5 dominant + 1 contextual" in out  # 90 x 60 px -> 4 x 6 patches -> 6 tokens
    assert "tokens per layer (row 0): [6, 6, 4, 4, 3, 3, 2, 2]" in out
