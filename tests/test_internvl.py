"""InternVL on a tiny random model (tests/tiny_internvl.py): the guarantees every model gets,
tiles (an image of k tiles keeps k x B), the encoder stage's block scores, refusals.

A tile here has 64 patches and a [CLS] in the tower and 16 tokens after the pixel shuffle;
the LM has 8 layers.
"""

import pytest
import torch
from helpers import assert_same_selections, prompt_queries, real_logits, selections
from tiny_internvl import IMG, PER_TILE, internvl_batch, row_alone, tiny_internvl

import visiondrop
from visiondrop import Schedule

CASES = {  # method -> budget per tile (LLM-only methods keep all 16 in layer 0, so not below 2)
    "visiondrop": 8, "random": 8, "fastv": 12, "pdrop": 12, "pdrop-visual": 12, "sparsevlm": 12,
}
REFUSED = ["pool", "visionzip", "vispruner"]
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
TILES = [[1], [3]]


@pytest.fixture(scope="module")
def model():
    return tiny_internvl(seed=0)


@pytest.fixture(scope="module")
def eager():
    return tiny_internvl(seed=0, attn="eager")


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == sorted([*CASES, *REFUSED])


@pytest.mark.parametrize("method", REFUSED)
def test_methods_without_a_rule_here_are_refused_at_apply(model, method):
    with pytest.raises(ValueError, match=f"{method}.*InternVL"):
        visiondrop.apply(model, method, budget=8)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("method", CASES)
def test_an_image_of_k_tiles_averages_k_times_the_budget_and_remove_restores(model, method):
    tiles = [[1], [3], [], [2]]
    batch = internvl_batch(tiles, [5, 2, 4, 3])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, method, budget=CASES[method]) as handle:
            pruned = model(**batch).logits
        after = model(**batch).logits
    for row, k in ((0, 1), (1, 3), (3, 2)):
        assert abs(handle.report.average_visual_tokens(row) - k * CASES[method]) <= k, (method, row)
    assert handle.report.layer_visual_tokens[2].eq(0).all()
    assert not torch.equal(pruned, before) and torch.equal(before, after)
    assert not model._forward_pre_hooks and not model.model.multi_modal_projector._forward_pre_hooks


@pytest.mark.parametrize("stage", ["encoder", "llm"])
def test_keep_everything_is_a_no_op(model, stage):
    batch = internvl_batch(TILES, [5, 2])
    schedule = Schedule(encoder=(16, 0)) if stage == "encoder" else Schedule(llm=((16, 0),), layers=(3,))
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, "visiondrop", schedule=schedule) as handle:
            after = model(**batch).logits
    assert handle.report.layer_visual_tokens[:, -1].tolist() == [16, 48]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", CASES)
def test_eager_and_sdpa_select_the_same_tokens(model, eager, method):
    batch = internvl_batch(TILES, [5, 2])
    runs = []
    for m in (model, eager):
        with torch.no_grad(), visiondrop.apply(m, method, budget=CASES[method]) as handle:
            logits = m(**batch).logits
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in (0, 1)]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("method", CASES)
def test_cached_generate_equals_full_recompute(model, method):
    batch = internvl_batch([[2], [1]], [2, 6], seed=3)
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
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(token)[:, None]], 1)


@pytest.mark.parametrize("method", CASES)
def test_batch_rows_equal_rows_alone(model, method):
    tiles = [[1], [2, 1], []]
    batch = internvl_batch(tiles, [7, 2, 5], seed=4)
    with torch.no_grad(), visiondrop.apply(model, method, budget=CASES[method]) as handle:
        together = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(len(tiles)):
            alone = model(**row_alone(batch, tiles, row)).logits
            torch.testing.assert_close(real_logits(together, mask, row), alone[0], atol=1e-4, rtol=0)


def test_encoder_scores_are_the_attention_each_block_receives(eager):
    """The encoder stage keeps the 2 x 2 blocks that receive the most attention at the
    feature layer, as the tower's own eager attention weights give it."""
    batch = internvl_batch([[1]], [3], seed=5)
    with torch.no_grad():
        tower = eager.model.vision_tower(pixel_values=batch["pixel_values"], output_attentions=True)
        with visiondrop.apply(eager, "visiondrop", schedule=Schedule(encoder=(5, 0))) as handle:
            eager(**batch)
    weights = tower.attentions[-1][0].mean(0)  # (65, 65): heads averaged, [CLS] first
    per_patch = weights.mean(0)[1:].view(4, 2, 4, 2).sum(dim=(1, 3)).flatten()  # 8 x 8 patches -> 4 x 4 blocks
    expected = torch.topk(per_patch, 5).indices.sort().values
    assert handle.report.stages[0].segments[0].dominant.tolist() == expected.tolist()


def test_report_patch_ids_are_tile_major(model):
    batch = internvl_batch([[3]], [2], seed=6)
    with torch.no_grad(), visiondrop.apply(model, "visiondrop", budget=8) as handle:
        model(**batch)
    encoder = handle.report.stages[0]
    assert len(encoder.segments) == 3  # one record per tile
    first_llm = handle.report.stages[1].segments[0]
    assert int(first_llm.input_patches.max()) >= 2 * PER_TILE  # the third tile's tokens are there
    assert first_llm.input_patches.numel() == 3 * handle.schedule.encoder.total  # 1.5 x B per tile enter


def test_errors_are_clear(model):
    batch = internvl_batch([[1]], [3])
    batch["input_ids"] = torch.cat([batch["input_ids"][:, :4], batch["input_ids"][:, 5:]], 1)  # 15 placeholders
    batch["attention_mask"] = batch["attention_mask"][:, 1:]
    with visiondrop.apply(model, budget=8), torch.no_grad(), pytest.raises(ValueError, match="not a multiple of"):
        model(**batch)
    with pytest.raises(ValueError, match="budget must be in"):
        visiondrop.apply(model, budget=17)  # more than a tile's 16 tokens
    assert (batch["input_ids"] == IMG).sum() == 15


def test_text_only_prompt_is_untouched(model):
    batch = internvl_batch([[], []], [5, 3])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, budget=8):
            after = model(**batch).logits
    assert torch.equal(before, after)


def test_cli_generate_prunes_an_internvl_checkpoint(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image
    from tiny_internvl import TinyInternVLProcessor

    import visiondrop.inputs
    from visiondrop.cli import main

    tiny_internvl(seed=0).save_pretrained(tmp_path)
    image = tmp_path / "square.png"
    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype("uint8")).save(image)
    monkeypatch.setattr(visiondrop.inputs, "load_processor", lambda path, config, **options: TinyInternVLProcessor())
    code = main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "what is this ?",
                 "--budget", "8", "--max-new-tokens", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "vision encoder:   16 -> 10 dominant + 2 contextual" in out  # 1.5 x 8 enter, 1/8 of them contextual
    assert "tokens per layer (row 0): [12, 12," in out
