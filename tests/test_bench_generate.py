"""`visiondrop bench --mode generate` bookkeeping on CPU with a tiny model (no timing asserted)."""

import json

import pytest

from visiondrop.bench import generate, latency
from visiondrop.cli import main
from visiondrop.testing import tiny_llava

SMALL = dict(generate_batches=(1, 2), generate_tokens=(1, 3), repeats=2, warmup=1, dtype="float32", device="cpu",
             text_tokens=8)


@pytest.fixture(scope="module")
def result():
    model = tiny_llava(num_layers=8, image_size=112)  # 64 visual tokens
    config = latency.BenchConfig(model="tiny-llava", methods=("visiondrop", "fastv"), budget=24, **SMALL)
    return generate.run_generate(config, model=model, progress=False)


def test_every_variant_has_every_case(result):
    assert list(result["figures"]) == ["full", "visiondrop", "fastv", "ideal"]
    cases = ["generate_ms@b1_t1", "generate_ms@b1_t3", "generate_ms@b2_t1", "generate_ms@b2_t3"]
    for figures in result["figures"].values():
        assert list(figures) == cases
        assert all(len(f["samples"]) == 2 and f["q1"] <= f["median"] <= f["q3"] for f in figures.values())


def test_operations_are_counted_inside_the_hooks_only_when_pruning(result):
    ops = result["operations"]
    assert ops["full"]["ops"] > 0 and ops["full"]["machinery_ops"] == 0 and ops["full"]["per_hook"] == {}
    for method in ("visiondrop", "fastv"):
        assert 0 < ops[method]["machinery_ops"] < ops[method]["ops"]
        assert sum(c["ops"] for c in ops[method]["per_hook"].values()) == ops[method]["machinery_ops"]
    assert "LlavaAdapter._projector_pre_hook" in ops["visiondrop"]["per_hook"]  # the encoder stage
    assert "LlavaAdapter._projector_pre_hook" not in ops["fastv"]["per_hook"]  # LLM-only
    assert ops["ideal"]["machinery_ops"] == 0


def test_markdown_and_files(result, tmp_path):
    table = generate.to_markdown(result)
    assert "| variant | b1, 1 new | b1, 3 new | b2, 1 new | b2, 3 new |" in table
    assert "`DecoderPruner._prefill_layer`" in table and "n/a (CPU)" in table
    paths = generate.save(result, tmp_path)
    assert json.loads(paths["json"].read_text())["config"]["generate_tokens"] == [1, 3]
    assert paths["png"].stat().st_size > 0


def test_cli_refuses_bad_generate_lists(capsys):
    assert main(["bench", "--mode", "generate", "--generate-tokens", "0", "--device", "cpu"]) == 2
    assert "--generate-tokens" in capsys.readouterr().err


def test_graph_variants_replay_through_generate():
    """--cuda-graphs: full (method none) and each capturable method again with
    apply(..., cuda_graphs=...) ("frozen" on the CPU); their handles survive the rounds
    (detached while other variants run), so every layout is captured once and replayed."""
    model = tiny_llava(num_layers=8, image_size=112)
    config = latency.BenchConfig(model="tiny-llava", methods=("visiondrop", "sparsevlm"), budget=24,
                                 cuda_graphs=True, **{**SMALL, "warmup": 2, "generate_tokens": (2,)})
    result = generate.run_generate(config, model=model, progress=False)
    assert list(result["figures"]) == ["full", "visiondrop", "sparsevlm", "ideal", "full+graphs",
                                       "visiondrop+graphs"]  # sparsevlm's shapes depend on its text
    # three layouts: generate()'s prefill at batches 1 and 2 (4 rounds each) and the profiled
    # forward at batch 1 (3 untimed calls and 1 profiled); each is captured on its second sight,
    # and that call and every later one replays
    assert result["graphs"] == {name: {"captures": 3, "replays": 3 + 3 + 3}
                                for name in ("full+graphs", "visiondrop+graphs")}
    assert not hasattr(model, "_visiondrop_handle") and "forward" not in vars(model)  # all removed
    assert "graphed full)" in generate.to_markdown(result)


def test_qwen_vl_inputs_and_variants():
    """Qwen-VL rows carry their grid, patch rows and mm_token_type_ids; the bench runs full,
    a method and the ideal on them (its grids reach the ideal's get_image_features)."""
    from tiny_qwen3_vl import tiny_qwen3

    model = tiny_qwen3()
    inputs = latency.make_inputs(model, 2, 8, image_size=(112, 112))
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]] * 2 and inputs["pixel_values"].shape == (128, 1176)
    assert inputs["mm_token_type_ids"].sum().item() == 2 * 16
    with pytest.raises(ValueError, match="image_size"):
        latency.make_inputs(model, 1, 8, image_size=(100, 112))
    config = latency.BenchConfig(model="tiny-qwen3", methods=("visiondrop",), budget=4, image_size=(112, 112),
                                 **{**SMALL, "generate_tokens": (2,)})
    result = generate.run_generate(config, model=model, progress=False)
    assert list(result["figures"]) == ["full", "visiondrop", "ideal"]
    assert result["operations"]["visiondrop"]["machinery_ops"] > 0
