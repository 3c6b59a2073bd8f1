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


@pytest.mark.parametrize("method, budget, options", [("visiondrop", 8, {}), ("fastv", 12, {"layer": 3}),
                                                     ("visiondrop", 30, {})])
def test_qwen3_vl_counts_match_a_pruned_run(method, budget, options):
    """Qwen3-VL plans each image for its own token count: the counts for an image size equal
    a pruned run's on an image of that size (28-px merged cells on the tiny model; an image
    with fewer tokens than the budget passes whole)."""
    from tiny_qwen3_vl import qwen3_batch, tiny_qwen3

    model = tiny_qwen3()
    grid = (1, 8, 12)  # 112 x 168 px: 4 x 6 = 24 merged tokens, 96 patches
    with torch.no_grad(), visiondrop.apply(model, method, budget=budget, **options) as handle:
        model(**qwen3_batch([[("image", grid)]], [4]))
    adapter = visiondrop.models.adapter_for(model)
    _, schedule = adapter.plan(visiondrop.methods.get_method(method).from_options(budget=budget, **options))
    counts = adapter.image_counts(schedule, (112, 168))
    assert counts.per_layer == handle.report.layer_visual_tokens[0].tolist()
    assert (counts.encoder_passes, counts.projected, counts.encoder_tokens) == (1, 24, 96)
    with pytest.raises(ValueError, match="plan the method on this adapter first"):
        visiondrop.models.adapter_for(model).image_counts(schedule, (112, 168))
    flops = fl.model_prefill_flops(model, method=method, budget=budget, options=options, image_size=(112, 168))
    assert flops.vision == 4 * fl.transformer_layer_flops(96, 32, 64, gated_mlp=False)
    assert flops.projector == 3 * 2 * 24 * (128 * 128 + 128 * 64)  # the merger and 2 DeepStack mergers


def test_full_size_qwen3_vl_flops():
    """Qwen3-VL-8B, one 512 x 512 image (32 x 32 patches, 256 merged tokens), and the CLI with
    method options (FastV's default layer is refused there: DeepStack)."""
    qwen = fl.meta_model("qwen3-vl-8b")
    full = fl.model_prefill_flops(qwen)
    pruned = fl.model_prefill_flops(qwen, method="visiondrop", budget=64)
    assert full.vision == pruned.vision == 27 * fl.transformer_layer_flops(1024, 1152, 4304, gated_mlp=False)
    assert full.projector == 4 * 2 * 256 * (4608 * 4608 + 4608 * 4096)
    assert full.llm == fl.llm_flops(qwen.config.text_config, [256 + 64] * 36)
    assert 1.9 < full.total / pruned.total < 2.1
    bigger = fl.model_prefill_flops(qwen, image_size=(1024, 768))  # 32 x 24 merged tokens
    assert bigger.llm == fl.llm_flops(qwen.config.text_config, [768 + 64] * 36)


def test_cli_flops_qwen3_vl_with_method_options(capsys):
    assert main(["flops", "--config", "qwen3-vl-8b", "--methods", "visiondrop,fastv[layer=3]"]) == 0
    out = capsys.readouterr().out
    assert "| fastv[layer=3] |" in out and "| full | 0.972 |" in out
    assert main(["flops", "--config", "qwen3-vl-8b", "--methods", "fastv"]) == 2
    assert "--budget: fastv: schedule: Qwen3-VL adds its DeepStack features" in capsys.readouterr().err
    assert main(["flops", "--config", "qwen3-vl-8b", "--methods", "fastv[layr=3]"]) == 2
    assert "--methods: 'fastv[layr=3]': layr: unknown option" in capsys.readouterr().err


def test_flops_doc_table_of_current_models_is_what_the_code_counts():
    """docs/benchmarks/flops.md's table of InternVL3, Qwen3-VL and Gemma 3: every cell."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "benchmarks" / "flops.md").read_text()
    for name in ("internvl3-8b", "qwen3-vl-8b", "gemma-3-4b"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        model = fl.meta_model(name)
        full = fl.model_prefill_flops(model)
        pruned = fl.model_prefill_flops(model, method="visiondrop", budget=64)
        expected = [f"{full.vision / 1e12:.3f}", f"{full.projector / 1e12:.3f}", f"{full.llm / 1e12:.3f}",
                    f"{full.total / 1e12:.2f}", f"{pruned.total / 1e12:.2f}", f"{pruned.total / full.total:.1%}"]
        assert cells[2:] == expected, name


def test_full_size_gemma3_geometry_and_flops():
    gemma = fl.meta_model("gemma-3-4b")
    assert round(sum(p.numel() for p in gemma.parameters()) / 1e9, 2) == 4.30
    assert str(visiondrop.plan(gemma, "visiondrop", budget=64)) == "encoder 84+12; llm [L8:62+9, L17:45+7, L26:33+5]"
    full = fl.model_prefill_flops(gemma)
    assert full.vision == 27 * fl.transformer_layer_flops(4096, 1152, 4304, gated_mlp=False)
    assert full.projector == 2 * 256 * 1152 * 2560  # one matrix on the pooled tokens
    # attention width 8 x 256 = 2048, not the hidden 2560; keys and values 4 x 256
    assert full.llm == 34 * fl.transformer_layer_flops(256 + 64, 2560, 10240, 1024, attention_width=2048)
