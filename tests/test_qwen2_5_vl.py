"""Qwen2.5-VL on a tiny random model (tests/tiny_qwen2_5_vl.py): every method that
runs on it, mRoPE positions under both policies, images of different sizes, video,
the encoder stage's scores, and errors.

Images here have 6 (grid 1 x 4 x 6), 16 (1 x 8 x 8) or 4 (1 x 4 x 4) tokens; a video
of grid 2 x 4 x 4 has 8. Every image is planned on its own token count, so with
budget B each image larger than B averages about B tokens over the 8 decoder layers.
"""

import pytest
import torch
from helpers import assert_same_selections, prompt_queries, real_logits, selections
from tiny_qwen2_5_vl import IMG, qwen_batch, row_alone, tiny_qwen, tokens

import visiondrop
from visiondrop import Schedule
from visiondrop.core.layout import Segment
from visiondrop.models.decoder import MultimodalPositionRule

WORKING = ["fastv", "pdrop", "pdrop-visual", "random", "sparsevlm", "visiondrop"]
REFUSED = ["pool", "visionzip", "vispruner"]
BUDGET = {"visiondrop": 4, "random": 4, "fastv": 4, "pdrop": 4, "pdrop-visual": 4, "sparsevlm": 5}
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
ENCODER = {"visiondrop", "random"}
POLICIES = ["reindex", "keep"]
ROWS = [[("image", (1, 4, 6))], [("image", (1, 8, 8))]]


@pytest.fixture(scope="module")
def model():
    return tiny_qwen(seed=0)


@pytest.fixture(scope="module")
def eager():
    return tiny_qwen(seed=0, attn="eager")


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == sorted(WORKING + REFUSED)


@pytest.mark.parametrize("method", REFUSED)
def test_methods_without_a_rule_here_are_refused_at_apply(model, method):
    with pytest.raises(ValueError, match=method):
        visiondrop.apply(model, method, budget=4)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("method", WORKING)
def test_each_image_follows_its_own_schedule_and_averages_the_budget(model, method):
    rows = [*ROWS, [], [("image", (1, 4, 4))]]
    batch = qwen_batch(rows, [5, 2, 4, 3])
    budget = BUDGET[method]
    with torch.no_grad(), visiondrop.apply(model, method, budget=budget) as handle:
        model(**batch)
    counts = handle.report.layer_visual_tokens
    for row, grid in ((0, (1, 4, 6)), (1, (1, 8, 8))):
        schedule = handle.adapter._segment_schedule(tokens(grid), "image")
        entry = schedule.encoder.total if schedule.encoder else tokens(grid)
        if method != "sparsevlm":  # its recycling keeps what it pruned, not the spec's share
            assert counts[row].tolist() == schedule.tokens_per_layer(8, entry), (method, row)
        assert abs(handle.report.average_visual_tokens(row) - budget) <= 1, (method, counts[row].tolist())
    assert counts[2].eq(0).all()
    assert counts[3].eq(4).all()  # 4 tokens <= budget: passed whole


@pytest.mark.parametrize("method", WORKING)
def test_remove_restores_bit_identical_outputs(model, method):
    batch = qwen_batch(ROWS, [5, 2])
    with torch.no_grad():
        before = model(**batch).logits
        handle = visiondrop.apply(model, method, budget=BUDGET[method])
        pruned = model(**batch).logits
        handle.remove()
        after = model(**batch).logits
    assert pruned.shape[1] < before.shape[1]
    assert not torch.allclose(pruned[:, -1], before[:, -1])
    assert torch.equal(before, after)
    assert "get_image_features" not in vars(model.model) and "generate" not in vars(model)


@pytest.mark.parametrize("positions", POLICIES)
@pytest.mark.parametrize("stage", ["encoder", "llm"])
def test_keep_everything_is_a_no_op(model, stage, positions):
    batch = qwen_batch([*ROWS, [("video", (2, 4, 4))]], [5, 2, 3])
    schedule = Schedule(encoder=(16, 0)) if stage == "encoder" else Schedule(llm=((16, 0),), layers=(3,))
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=schedule, positions=positions) as handle:
            after = model(**batch).logits
    assert handle.report.layer_visual_tokens[:, -1].tolist() == [6, 16, 8]
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("method", WORKING)
def test_eager_and_sdpa_select_the_same_tokens(model, eager, method):
    batch = qwen_batch(ROWS, [5, 2])
    runs = []
    for m in (model, eager):
        with torch.no_grad(), visiondrop.apply(m, method, budget=BUDGET[method]) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


def assert_generate_matches_recompute(model, handle, batch, steps, text_guided):
    """Cached ``generate()`` equals recomputing prompt + generated tokens without a cache,
    token for token and in its logits (``mm_token_type_ids`` grows with the text)."""
    generated = model.generate(**batch, max_new_tokens=steps, do_sample=False, output_logits=True,
                               return_dict_in_generate=True)
    new_tokens = generated.sequences[:, batch["input_ids"].shape[1]:]
    inputs = dict(batch)
    for step in range(steps):
        guard = prompt_queries(handle.method, step) if text_guided else torch.no_grad()
        with guard:
            logits = model(**inputs, use_cache=False).logits
        token = logits[:, -1].argmax(-1)
        assert token.tolist() == new_tokens[:, step].tolist(), f"step {step}"
        assert torch.allclose(logits[:, -1], generated.logits[step], atol=1e-4), f"step {step}"
        for key, value in (("input_ids", token), ("attention_mask", 1), ("mm_token_type_ids", 0)):
            column = torch.full_like(inputs[key][:, :1], value) if key != "input_ids" else value[:, None]
            inputs[key] = torch.cat([inputs[key], column], 1)


@pytest.mark.parametrize("positions", POLICIES)
@pytest.mark.parametrize("method", WORKING)
def test_cached_generate_equals_full_recompute(model, method, positions):
    batch = qwen_batch([[("image", (1, 8, 8))], [("image", (1, 4, 6))], [("video", (2, 4, 4))]], [2, 6, 3], seed=3)
    with torch.no_grad(), visiondrop.apply(model, method, budget=BUDGET[method], positions=positions) as handle:
        assert_generate_matches_recompute(model, handle, batch, 3, method in TEXT_GUIDED)


@pytest.mark.parametrize("stage", ["encoder", "llm"])
def test_reindexed_decode_continues_after_a_shortened_image(model, stage):
    """Kept tokens that stop short of the image's last row and column shift the text
    after them, and decode positions with it: once before the LM, once in the LM."""
    batch = qwen_batch([[("image", (1, 8, 8))], [("image", (1, 8, 8))]], [3, 5])
    options = (dict(method="random", budget=2, seed=1) if stage == "encoder" else
               dict(method="visiondrop", schedule=Schedule(llm=((2, 0),), layers=(2,))))
    with torch.no_grad(), visiondrop.apply(model, positions="reindex", **options) as handle:
        model(**batch)
        for record in handle.report.stages[-1].segments:  # the 4 x 4 image lost its last row and column
            assert int(torch.maximum(record.output_patches // 4, record.output_patches % 4).max()) < 3
        assert_generate_matches_recompute(model, handle, batch, 3, text_guided=False)


@pytest.mark.parametrize("method", WORKING)
def test_batch_rows_of_different_sizes_equal_rows_alone(model, method):
    rows = [[("image", (1, 4, 6))], [("image", (1, 8, 8)), ("image", (1, 4, 6))], [], [("video", (2, 4, 4))],
            [("image", (1, 4, 4)), ("video", (2, 4, 4))]]
    batch = qwen_batch(rows, [5, 2, 7, 3, 1], seed=5)
    with torch.no_grad(), visiondrop.apply(model, method, budget=BUDGET[method]) as handle:
        out = model(**batch).logits
        mask, report = handle.report.output_mask, handle.report
        for row in range(len(rows)):
            alone = model(**row_alone(batch, rows, row)).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"
            alone_selection = [[s.dominant.tolist() for s in stage.segments] for stage in handle.report.stages]
            batch_selection = [[s.dominant.tolist() for s in stage.rows(row)] for stage in report.stages]
            assert alone_selection == batch_selection or not rows[row], f"row {row}"


def expected_encoder_scores(model, batch) -> torch.Tensor:
    """The mean attention each merged token receives in the last vision block, written
    independently of the adapter: softmax over each image, scattered to raster order."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
    from transformers.vision_utils import get_vision_window_index

    block, captured = model.model.visual.blocks[-1], {}

    def grab(module, args, kwargs):
        captured.update(hidden=args[0], rope=kwargs["position_embeddings"], bounds=kwargs["cu_seqlens"].tolist())

    hook = block.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    hook.remove()
    attention, hidden = block.attn, captured["hidden"]
    q, k, _ = attention.qkv(block.norm1(hidden)).reshape(len(hidden), 3, attention.num_heads, -1).unbind(1)
    q, k = apply_rotary_pos_emb_vision(q, k, *captured["rope"])
    received = torch.zeros(len(hidden))
    for a, b in zip(captured["bounds"], captured["bounds"][1:]):
        logits = torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) * attention.scaling
        received[a:b] = logits.softmax(-1).mean(dim=(0, 1))
    window_index, _ = get_vision_window_index(batch["image_grid_thw"], 2, 56, 14)
    scores = torch.zeros(len(hidden) // 4)
    scores[window_index] = received.view(-1, 4).sum(1)  # merged token m in window order is raster window_index[m]
    return scores


def test_encoder_stage_keeps_the_most_attended_merged_tokens(model):
    batch = qwen_batch([[("image", (1, 8, 8))]], [3])
    with torch.no_grad(), visiondrop.apply(model, "visiondrop", budget=4, contextual_ratio=0) as handle:
        model(**batch)
    record = handle.report.stage("encoder").segments[0]
    scores = expected_encoder_scores(model, batch)
    expected = scores.topk(len(record.dominant)).indices.sort().values
    assert record.dominant.tolist() == expected.tolist()
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(batch["image_grid_thw"], 2, 56, 14)
    assert not torch.equal(window_index, torch.arange(16))  # the raster mapping is exercised


def test_report_patch_ids_masks_and_kept_features(model):
    batch = qwen_batch([[("image", (1, 8, 8))], [("image", (1, 4, 6))]], [2, 5])
    with torch.no_grad():
        features = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
        entered = {}
        hook = model.model.language_model.register_forward_pre_hook(
            lambda m, a, k: entered.update(embeds=k["inputs_embeds"], mask=k["attention_mask"]), with_kwargs=True)
        with visiondrop.apply(model, "visiondrop", budget=4) as handle:
            out = model(**batch).logits
        hook.remove()
    report, spec = handle.report, handle.adapter._segment_schedule(16, "image").encoder
    encoder = report.stage("encoder")
    assert [s.image for s in encoder.segments] == [0, 1]
    for row, record in enumerate(encoder.segments):
        n = tokens(batch["image_grid_thw"][row].tolist())
        assert record.input_patches.tolist() == list(range(n))
        assert record.output_patches.tolist() == record.dominant.tolist() + record.targets.tolist()
        assert (record.merged_into >= 0).sum() == n - len(record.dominant)
        # the dominant tokens enter the LM as the merger made them, in raster order
        real = entered["embeds"][row][entered["mask"][row].bool()]
        start = int((batch["input_ids"][row][batch["attention_mask"][row].bool()] == IMG).nonzero()[0])
        assert torch.allclose(real[start:start + len(record.dominant)], features[row][record.dominant])
        final = int(batch["attention_mask"][row].sum()) - n + int(report.layer_visual_tokens[row, -1])
        assert int(report.output_mask[row].sum()) == final
    assert encoder.segments[0].dominant.numel() == spec.dominant
    assert report.output_mask.shape[1] == out.shape[1]
    assert "vision encoder:   16 -> 5 dominant + 1 contextual" in report.summary()


def test_positions_follow_the_policies(model):
    batch = qwen_batch([[("image", (1, 8, 8))]], [3])
    entered = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: entered.update(positions=k["position_ids"]), with_kwargs=True)
    with torch.no_grad():
        model(**batch)
        original = entered["positions"][:, 0]
        runs = {}
        for positions in POLICIES:
            with visiondrop.apply(model, "random", budget=4, positions=positions) as handle:
                model(**batch)
            runs[positions] = entered["positions"][:, 0]
    hook.remove()
    kept = handle.report.stage("encoder").segments[0].dominant
    assert torch.equal(runs["keep"][:, 4:8], original[:, 4 + kept])  # 3 text tokens and vision_start first
    assert torch.equal(runs["keep"][:, 8:], original[:, 20:])  # text keeps its positions, gap and all
    assert torch.equal(runs["reindex"][:, :8], runs["keep"][:, :8])  # the image keeps its offsets from its start
    # text continues right after the largest kept row or column of the 4 x 4 image starting at 4
    largest = int(torch.maximum(kept // 4, kept % 4).max())
    after = 4 + largest + 1 + torch.arange(runs["keep"].shape[1] - 8)
    assert torch.equal(runs["reindex"][:, 8:], after.expand(3, -1))


def test_reindex_compacts_mrope_positions():
    rule = MultimodalPositionRule()
    # row: pad, text 0 1, an image at 2 with kept tokens (t, h, w) = (2,2,3) (2,3,2) (2,3,4), text 6 7
    kept = torch.tensor([[[0, 0, 0], [0, 0, 0], [1, 1, 1], [2, 2, 3], [2, 3, 2], [2, 3, 4], [6, 6, 6], [7, 7, 7]]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]])
    out = rule.reindexed(mask, [Segment(0, 3, 3)], kept)
    assert out[0].tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [2, 2, 3], [2, 3, 2], [2, 3, 4], [5, 5, 5],
                               [6, 6, 6]]
    assert rule.rope_ids(out).shape == (3, 1, 8)


def test_errors_are_clear(model):
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(model, "visiondrop", budget=0)
    batch = qwen_batch(ROWS, [5, 2])
    with visiondrop.apply(model, "visiondrop", budget=4):
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"})
        with pytest.raises(ValueError, match="image_grid_thw"):
            model(**dict(batch, image_grid_thw=torch.tensor([[1, 8, 8], [1, 4, 6]])))
        with pytest.raises(ValueError, match="labels"):
            model(**batch, labels=batch["input_ids"])
        with pytest.raises(ValueError, match="num_beams"):
            model.generate(**batch, max_new_tokens=2, num_beams=2)
    with visiondrop.apply(model, "fastv", budget=1), pytest.raises(ValueError, match="budget.*16 visual tokens"):
        model(**batch)  # FastV keeps all 16 tokens until layer 1: more than 1 on average
    assert not hasattr(model, "_visiondrop_handle")


def test_text_only_prompt_is_untouched(model):
    batch = qwen_batch([[], []], [4, 7])
    with torch.no_grad():
        before = model.generate(**batch, max_new_tokens=3, do_sample=False)
        with visiondrop.apply(model, "visiondrop", budget=4) as handle:
            after = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(before, after)
    assert handle.report.layer_visual_tokens.eq(0).all()


def test_cli_generate_prunes_a_qwen_checkpoint(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image
    from tiny_qwen2_5_vl import TinyQwenProcessor, save_tiny_qwen_checkpoint

    import visiondrop.inputs
    from visiondrop.cli import main

    save_tiny_qwen_checkpoint(tmp_path)
    image = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype("uint8")).save(image)
    # transformers 5.23 builds Qwen2_5_VLProcessor only with torchvision (its video processor)
    monkeypatch.setattr(visiondrop.inputs, "load_processor",
                        lambda path, config, **options: TinyQwenProcessor.from_pretrained(path))
    code = main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "what is this ?",
                 "--budget", "4", "--max-new-tokens", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "vision encoder:    6 -> 5 dominant + 1 contextual" in out  # 90 x 60 px -> 4 x 6 patches -> 6 tokens
    assert "tokens per layer (row 0): [6, 6, 4, 4, 3, 3, 2, 2]" in out
