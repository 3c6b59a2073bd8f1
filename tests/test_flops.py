"""Analytic FLOPs (visiondrop.bench.flops): the formula by hand, the bookkeeping against
real pruned runs on tiny models, the paper's Table 4, and `visiondrop flops`."""

import pytest
import torch

import visiondrop
from visiondrop.bench import flops as fl
from visiondrop.cli import main
from visiondrop.testing import image_prompt, llava_next_prompt, tiny_llava, tiny_llava_next


def test_layer_flops_by_hand():
    # 2 tokens, d 4, d_kv 2, MLP 8: q,o 2*2*4*4 each; k,v 2*2*4*2 each; gated MLP 3 * 2*2*4*8; QK and AV 2 * 2*2*2*4
    expected = 2 * 64 + 2 * 32 + 3 * 128 + 2 * 32
    assert fl.transformer_layer_flops(2, 4, 8, kv_hidden=2) == expected
    assert fl.transformer_layer_flops(2, 4, 8, kv_hidden=2, gated_mlp=False) == expected - 128


def test_llm_flops_needs_one_count_per_layer():
    config = tiny_llava(num_layers=4).config
    with pytest.raises(ValueError, match="tokens_per_layer: 3 counts for a 4-layer LM"):
        fl.llm_flops(config.text_config, [1, 2, 3])
    with pytest.raises(ValueError, match="text_tokens"):
        fl.prefill_flops(config, [1] * 4, text_tokens=-1)


@pytest.mark.parametrize("method, budget", [("visiondrop", 8), ("fastv", 20), ("visionzip", 6), ("pdrop", 24)])
def test_llava_counts_match_a_pruned_run(method, budget):
    model = tiny_llava(num_layers=8, image_size=112)  # 64 tokens per image
    batch = image_prompt(model, [5])
    with torch.no_grad(), visiondrop.apply(model, method, budget=budget) as handle:
        model(**batch)
    counts = visiondrop.models.adapter_for(model).image_counts(handle.schedule)
    assert counts.per_layer == handle.report.layer_visual_tokens[0].tolist()
    placeholders = int(batch["input_ids"].eq(visiondrop.testing.IMAGE_TOKEN_ID).sum())
    assert (counts.encoder_passes, counts.projected) == (1, placeholders)
    assert visiondrop.plan(model, method, budget=budget) == handle.schedule


@pytest.mark.parametrize("size", [(224, 224), (112, 224), (150, 100)])
@pytest.mark.parametrize("method, budget, newline", [("visiondrop", 20, "drop"), ("visiondrop", 20, "end"),
                                                     ("fastv", 40, "drop")])
def test_llava_next_counts_match_a_pruned_run(size, method, budget, newline):
    model = tiny_llava_next()
    batch = llava_next_prompt(model, [4], [[size]])
    with torch.no_grad(), visiondrop.apply(model, method, budget=budget, newline=newline) as handle:
        model(**batch)
    adapter = visiondrop.models.adapter_for(model)
    adapter.configure(newline=newline)
    counts = adapter.image_counts(handle.schedule, size)
    kept_newline = int(newline == "end" and method == "visiondrop")  # in the sequence, not a prunable token
    assert counts.per_layer == (handle.report.layer_visual_tokens[0] + kept_newline).tolist()
    unpruned = adapter.image_counts(None, size)
    assert unpruned.per_layer[0] == int(batch["input_ids"].eq(visiondrop.testing.IMAGE_TOKEN_ID).sum())
    assert counts.encoder_passes == unpruned.encoder_passes == adapter._crops(size)


def test_prefill_flops_adds_up_and_shrinks_with_pruning():
    model = tiny_llava(num_layers=8)
    full = fl.model_prefill_flops(model, text_tokens=10)
    pruned = fl.model_prefill_flops(model, visiondrop.plan(model, "visiondrop", budget=4), text_tokens=10)
    assert full.total == full.vision + full.projector + full.llm + full.lm_head
    assert (pruned.vision, pruned.projector) == (full.vision, full.projector)  # the tower runs in full
    assert pruned.llm < full.llm and pruned.lm_head < full.lm_head
    text = model.config.text_config
    assert full.llm == fl.llm_flops(text, [576 + 10] * 8)


def test_table4_reproduced_within_3_percent():
    rows = fl.table4_rows()
    assert [(r["config"], r["budget"], r["paper_tflops"]) for r in rows] == [(c, b, p) for c, _, b, p in fl.TABLE4]
    for row in rows:
        assert abs(row["gap"]) <= 0.03, row
    # the NeXT VisionDrop cell needs its 48 newlines: without them it falls 6 % short
    model = fl.meta_model("llava-next-7b")
    plain = fl.model_prefill_flops(model, visiondrop.plan(model, "visiondrop", budget=320)).total / 1e12
    assert plain / 7.70 - 1 < -0.05


def test_cli_flops(capsys):
    assert main(["flops", "--config", "llava-1.5-7b", "--methods", "visiondrop,fastv", "--budget", "64"]) == 0
    out = capsys.readouterr().out
    assert "| full |" in out and "| 9.08 | 100.0% |" in out
    assert "| visiondrop |" in out and "| 2.10 |" in out
    assert main(["flops", "--table4"]) == 0
    assert "| llava-next-7b | visiondrop | 320 | 7.70 | 7.81 | +1.4% |" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--budget", "9999"], "--budget: visiondrop: budget must be in [1, 576]"),
    (["--methods", "nope"], "--methods: nope: unknown method"),
    (["--image-size", "12by3"], "--image-size: expected HxW"),
    (["--text-tokens", "-2"], "--text-tokens: must be >= 0"),
    (["--config", "/nonexistent-model"], "--config"),
])
def test_cli_flops_errors(capsys, arguments, message):
    assert main(["flops", *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("method, budget", [("visiondrop", 8), ("fastv", 12)])
def test_internvl_counts_match_a_pruned_run(method, budget):
    from tiny_internvl import internvl_batch, tiny_internvl

    model = tiny_internvl()
    with torch.no_grad(), visiondrop.apply(model, method, budget=budget) as handle:
        model(**internvl_batch([[1]], [4]))
    counts = visiondrop.models.adapter_for(model).image_counts(handle.schedule)
    assert counts.per_layer == handle.report.layer_visual_tokens[0].tolist()
    assert (counts.encoder_passes, counts.projected) == (1, 16)
    with pytest.raises(ValueError, match="image_size"):
        visiondrop.models.adapter_for(model).image_counts(None, (448, 896))


def test_full_size_internvl3_and_qwen3_vl_geometry():
    """The released geometries (model_configs) on the meta device: parameter counts, the
    plans a user gets, and InternVL3-8B's FLOPs (one 448-px tile: 1,025 tower tokens with
    [CLS], 256 after the pixel shuffle, through a 4 x wider projector input)."""
    internvl, qwen = fl.meta_model("internvl3-8b"), fl.meta_model("qwen3-vl-8b")
    assert round(sum(p.numel() for p in internvl.parameters()) / 1e9, 2) == 7.94
    assert round(sum(p.numel() for p in qwen.parameters()) / 1e9, 2) == 8.77
    assert str(visiondrop.plan(internvl, "visiondrop", budget=64)) == "encoder 84+12; llm [L7:61+9, L14:45+7, L21:33+5]"
    assert visiondrop.plan(qwen, "visiondrop", budget=64).layers == (9, 18, 27)  # after the 3 DeepStack levels
    with pytest.raises(ValueError, match="layer 3 or later"):
        visiondrop.plan(qwen, "fastv", budget=128)  # its default K = 2
    config = internvl.config
    assert fl.vision_tokens(config.vision_config) == 1025
    full = fl.model_prefill_flops(internvl)
    pruned = fl.model_prefill_flops(internvl, visiondrop.plan(internvl, "visiondrop", budget=64))
    assert full.vision == pruned.vision == 24 * fl.transformer_layer_flops(1025, 1024, 4096, gated_mlp=False)
    assert full.projector == 2 * 256 * (4096 * 3584 + 3584 * 3584)
    assert 2.0 < full.total / pruned.total < 2.2
