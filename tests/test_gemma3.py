"""Gemma 3 on a tiny random model (tests/tiny_gemma3.py): the guarantees every model gets, the
image blocks (an image's tokens attend both ways) kept through every stage, the encoder stage's
square scores, refusals.

An image here has 64 SigLIP patches pooled into 16 tokens (2 x 2 squares); the LM has 8 layers,
layer 5 full attention, the others a sliding window of 24.
"""

import pytest
import torch
from helpers import assert_same_selections, prompt_queries, real_logits, selections
from tiny_gemma3 import IMG, PER_IMAGE, WINDOW, gemma3_batch, row_alone, tiny_gemma3

import visiondrop
from visiondrop import Schedule
from visiondrop.models import decoder, gemma3

CASES = {  # method -> budget per image (LLM-only methods keep all 16 in layer 0, so not below 2)
    "visiondrop": 8, "random": 8, "fastv": 12, "pdrop": 12, "pdrop-visual": 12, "sparsevlm": 12,
}
REFUSED = ["pool", "visionzip", "vispruner"]
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
IMAGES = [1, 2]


@pytest.fixture(scope="module")
def model():
    return tiny_gemma3(seed=0)


@pytest.fixture(scope="module")
def eager():
    return tiny_gemma3(seed=0, attn="eager")


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == sorted([*CASES, *REFUSED])


@pytest.mark.parametrize("method", REFUSED)
def test_methods_without_a_rule_here_are_refused_at_apply(model, method):
    with pytest.raises(ValueError, match=f"{method}.*Gemma 3"):
        visiondrop.apply(model, method, budget=8)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("method", CASES)
def test_per_image_counts_average_the_budget_and_remove_restores(model, method):
    images = [1, 2, 0]
    batch = gemma3_batch(images, [5, 2, 4])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, method, budget=CASES[method]) as handle:
            pruned = model(**batch).logits
        after = model(**batch).logits
    for row in (0, 1):  # per image, over the rows' images
        assert abs(handle.report.average_visual_tokens(row) - CASES[method]) <= 1, (method, row)
    assert handle.report.layer_visual_tokens[2].eq(0).all()
    assert not torch.equal(pruned, before) and torch.equal(before, after)
    assert not model._forward_pre_hooks and not model.model.multi_modal_projector.mm_soft_emb_norm._forward_pre_hooks


@pytest.mark.parametrize("schedule", [Schedule(encoder=(16, 0)), Schedule(llm=((16, 0),), layers=(3,)),
                                      Schedule(llm=((16, 0),), layers=(5,)),
                                      Schedule(llm=((16, 0), (16, 0)), layers=(2, 6))],
                         ids=["encoder", "llm-sliding", "llm-full", "llm-two"])
def test_keep_everything_is_a_no_op(model, schedule):
    """Stages rebuild every later layer's masks: the image blocks must be there, in sliding
    and full layers, or the logits differ (the causal-only rule is checked to differ)."""
    batch = gemma3_batch(IMAGES, [5, 2])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=schedule) as handle:
            after = model(**batch).logits
    assert handle.report.layer_visual_tokens[:, -1].tolist() == [16, 32]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_causal_only_stage_masks_would_change_the_logits(model, monkeypatch):
    """The guard above can fail: with LLaVA's causal masks after a stage the logits move."""
    batch = gemma3_batch(IMAGES, [5, 2])
    monkeypatch.setattr(gemma3.Gemma3Adapter, "mask_rule", decoder.MaskRule())
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=Schedule(llm=((16, 0),), layers=(3,))):
            after = model(**batch).logits
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("method", CASES)
def test_eager_and_sdpa_select_the_same_tokens(model, eager, method):
    batch = gemma3_batch(IMAGES, [5, 2])
    runs = []
    for m in (model, eager):
        with torch.no_grad(), visiondrop.apply(m, method, budget=CASES[method]) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("method", CASES)
def test_cached_generate_equals_full_recompute(model, method):
    batch = gemma3_batch([2, 1], [2, 6], seed=3)
    steps = 3
    with torch.no_grad(), visiondrop.apply(model, method, budget=CASES[method]) as handle:
        generated = model.generate(**batch, max_new_tokens=steps, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True)
        inputs = dict(batch)
        for step in range(steps):
            guard = prompt_queries(handle.method, step) if method in TEXT_GUIDED else torch.no_grad()
            with guard:
                logits = model(**inputs, use_cache=False).logits
            token = logits[:, -1].argmax(-1)
            assert token.tolist() == generated.sequences[:, batch["input_ids"].shape[1] + step].tolist()
            torch.testing.assert_close(logits[:, -1], generated.logits[step], atol=1e-4, rtol=0)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], token[:, None]], 1)
            for name, value in (("attention_mask", 1), ("token_type_ids", 0)):
                inputs[name] = torch.cat([inputs[name], torch.full_like(token, value)[:, None]], 1)


@pytest.mark.parametrize("method", CASES)
def test_batch_rows_equal_rows_alone(model, method):
    images = [1, 2, 0]
    batch = gemma3_batch(images, [7, 2, 5], seed=4)
    with torch.no_grad(), visiondrop.apply(model, method, budget=CASES[method]) as handle:
        together = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(len(images)):
            alone = model(**row_alone(batch, images, row)).logits
            torch.testing.assert_close(real_logits(together, mask, row), alone[0], atol=1e-4, rtol=0)


def test_encoder_scores_are_the_attention_each_square_receives(eager):
    """The encoder stage keeps the 2 x 2 squares whose patches receive the most attention at
    the last SigLIP layer, as the tower's own eager attention weights give it."""
    batch = gemma3_batch([1], [3], seed=5)
    with torch.no_grad():
        tower = eager.model.vision_tower(pixel_values=batch["pixel_values"], output_attentions=True)
        with visiondrop.apply(eager, "visiondrop", schedule=Schedule(encoder=(5, 0))) as handle:
            eager(**batch)
    weights = tower.attentions[-1][0].mean(0)  # (64, 64): heads averaged
    per_square = weights.mean(0).view(4, 2, 4, 2).sum(dim=(1, 3)).flatten()  # 8 x 8 patches -> 4 x 4 squares
    expected = torch.topk(per_square, 5).indices.sort().values
    assert handle.report.stages[0].segments[0].dominant.tolist() == expected.tolist()


def _visual_columns(batch, row):
    return (batch["input_ids"][row] == IMG).nonzero().squeeze(1)


def test_llm_scores_see_the_image_blocks_and_the_window(eager):
    """VisionDrop's LLM stage ranks an image's tokens by the attention they receive from the
    visual queries (Eq. 4), which in Gemma 3 is bidirectional within the image and cut by the
    sliding window: its choice equals the one from the layer's own eager attention weights."""
    batch = gemma3_batch([2], [WINDOW - 10], seed=6)  # the second image's queries see past the window's edge
    layer, keep = 3, 6
    with torch.no_grad():
        full = eager(**batch, output_attentions=True)
        with visiondrop.apply(eager, "visiondrop", schedule=Schedule(llm=((keep, 0),), layers=(layer,))) as handle:
            eager(**batch)
    weights = full.attentions[layer][0].mean(0)  # (L, L), heads averaged
    columns = _visual_columns(batch, 0).view(2, PER_IMAGE)
    for image, cols in enumerate(columns):
        scores = weights[cols][:, cols].mean(0)
        expected = torch.topk(scores, keep).indices.sort().values
        assert handle.report.stages[0].segments[image].dominant.tolist() == expected.tolist(), image


def test_fastv_scores_are_the_last_tokens_attention_in_its_window(eager):
    """FastV ranks by the last token's attention; in a sliding layer the window hides the
    image's first tokens from it, and they must rank last."""
    batch = gemma3_batch([1], [4], seed=7, suffix=11)  # the last token sees the image's last 10 tokens
    with torch.no_grad():
        full = eager(**batch, output_attentions=True)
        with visiondrop.apply(eager, "fastv", budget=6) as handle:
            eager(**batch)
    stage = handle.report.stages[0]
    weights = full.attentions[stage.layer - 1][0].mean(0)[-1, _visual_columns(batch, 0)]
    assert (weights == 0).sum() == PER_IMAGE - 10 and stage.dominant < 10
    expected = torch.topk(weights, stage.dominant).indices.sort().values
    assert stage.segments[0].dominant.tolist() == expected.tolist()


def test_errors_are_clear(model):
    batch = gemma3_batch([1], [3])
    for name in ("input_ids", "token_type_ids"):
        batch[name] = torch.cat([batch[name][:, :5], batch[name][:, 6:]], 1)  # 15 placeholders
    batch["attention_mask"] = batch["attention_mask"][:, 1:]
    with visiondrop.apply(model, budget=8), torch.no_grad(), pytest.raises(ValueError, match="not a multiple of"):
        model(**batch)
    with pytest.raises(ValueError, match="budget must be in"):
        visiondrop.apply(model, budget=17)  # more than an image's 16 tokens
    with pytest.raises(ValueError, match="cuda_graphs: supported on .*not Gemma3ForConditionalGeneration"):
        visiondrop.apply(model, budget=8, cuda_graphs="frozen")
    assert not hasattr(model, "_visiondrop_handle")


def test_text_only_prompt_is_untouched(model):
    batch = gemma3_batch([0, 0], [5, 3])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, budget=8):
            after = model(**batch).logits
    assert torch.equal(before, after)


def test_cli_generate_prunes_a_gemma3_checkpoint(tmp_path, capsys):
    """The real loading path: the checkpoint folder's own processor (transformers'
    Gemma3Processor, with its chat template) and AutoModelForImageTextToText."""
    import numpy as np
    from PIL import Image
    from tiny_gemma3 import tiny_gemma3_processor

    from visiondrop.cli import main

    tiny_gemma3(seed=0).save_pretrained(tmp_path)
    tiny_gemma3_processor().save_pretrained(tmp_path)
    image = tmp_path / "square.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(image)
    code = main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "what is this ?",
                 "--budget", "8", "--max-new-tokens", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "vision encoder:   16 -> 10 dominant + 2 contextual" in out  # 1.5 x 8 enter, 1/8 of them contextual
    assert "tokens per layer (row 0): [12, 12," in out
