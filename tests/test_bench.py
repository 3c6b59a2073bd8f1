"""`visiondrop bench` bookkeeping on CPU with tiny models (no timing asserted)."""

import json

import pytest

from visiondrop.bench import latency
from visiondrop.testing import tiny_llava, tiny_llava_next

SMALL = dict(throughput_batches=(2,), decode_batches=(1, 2), decode_steps=2, new_tokens=3, repeats=2, warmup=1,
             dtype="float32", device="cpu", text_tokens=8)


@pytest.fixture(scope="module")
def llava_result():
    model = tiny_llava(num_layers=8, image_size=112)  # 64 visual tokens
    config = latency.BenchConfig(model="tiny-llava", methods=("visiondrop", "fastv", "visionzip"), budget=24, **SMALL)
    return model, latency.run_bench(config, model=model, progress=False)


def test_every_variant_has_every_figure(llava_result):
    _, result = llava_result
    figures = result["figures"]
    assert list(figures) == ["full", "visiondrop", "fastv", "visionzip", "ideal"]
    expected = {"ttft_ms", "prefill_images_per_s@2", "decode_ms_per_step@1", "decode_ms_per_step@2", "generate_3_ms"}
    for name, by_key in figures.items():
        assert set(by_key) == expected, name
        for figure in by_key.values():
            assert len(figure["samples"]) == 2  # repeats, warm-up dropped
            assert figure["q1"] <= figure["median"] <= figure["q3"] and figure["median"] > 0


def test_visual_tokens_and_cache_follow_the_schedules(llava_result):
    model, result = llava_result
    import visiondrop

    for method in ("visiondrop", "fastv", "visionzip"):
        schedule = visiondrop.plan(model, method, budget=24)
        expected = visiondrop.models.adapter_for(model).image_counts(schedule).per_layer
        assert result["visual_tokens"][method] == expected
    text = model.config.text_config
    per_token_layer = 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 4  # fp32 K+V
    memory = result["memory"]
    assert memory["full"]["kv_cache_mib"] * 2**20 == per_token_layer * (64 + 8) * text.num_hidden_layers
    assert memory["ideal"]["kv_cache_mib"] * 2**20 == per_token_layer * (24 + 8) * text.num_hidden_layers
    pruned = sum(n + 8 for n in result["visual_tokens"]["visiondrop"]) * per_token_layer
    assert memory["visiondrop"]["kv_cache_mib"] * 2**20 == pruned


def test_outputs_written(llava_result, tmp_path):
    _, result = llava_result
    paths = latency.save(result, tmp_path)
    table = paths["md"].read_text()
    for name in ("full", "visiondrop", "fastv", "visionzip", "ideal"):
        assert f"| {name} |" in table
    assert "TTFT b1 (ms)" in table and "prefill + 3 tok (ms)" in table
    assert json.loads(paths["json"].read_text())["config"]["budget"] == 24
    assert paths["png"].stat().st_size > 10_000


def test_llava_next_bench_runs_anyres_inputs():
    model = tiny_llava_next()
    config = latency.BenchConfig(model="tiny-next", methods=("visiondrop",), budget=20,
                                 **{**SMALL, "throughput_batches": (), "decode_batches": (1,), "repeats": 1})
    result = latency.run_bench(config, model=model, progress=False)
    assert result["visual_tokens"]["visiondrop"][0] == 5 * 6  # 4 per crop, 1.5 x 4 = 6 enter from each of 5 crops


@pytest.mark.parametrize("change, message", [
    ({"budget": 0}, "budget must be >= 1"), ({"repeats": 0}, "repeats must be >= 1"),
    ({"throughput_batches": (0,)}, "throughput_batches"), ({"dtype": "int8"}, "dtype"),
])
def test_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        latency.BenchConfig(**{**SMALL, **change})


def test_infeasible_budget_fails_before_timing():
    model = tiny_llava(num_layers=8, image_size=112)
    config = latency.BenchConfig(model="tiny", methods=("fastv",), budget=2, **SMALL)
    with pytest.raises(ValueError, match="budget"):
        latency.run_bench(config, model=model, progress=False)


def test_machinery_share_is_recorded_per_method(llava_result):
    _, result = llava_result
    assert set(result["machinery"]) == {"visiondrop", "fastv", "visionzip"}  # not full, not ideal
    for shares in result["machinery"].values():
        assert set(shares) == {"share@1", "share@2"}
        assert all(0 < share < 1 for share in shares.values())
    table = latency.to_markdown(result)
    assert "machinery b1" in table and "machinery b2" in table


def test_machinery_recorder_counts_marked_calls_only_while_measuring():
    from visiondrop import timing

    @timing.machinery
    def marked(x):
        return x + 1

    assert marked(1) == 2 and not timing.RECORDER.active
    with timing.measure_machinery() as spent:
        for i in range(3):
            assert marked(i) == i + 1
    assert len(timing.RECORDER.spans) == 3 and spent() >= 0
    marked(0)
    assert len(timing.RECORDER.spans) == 3  # off again


# ---------------------------------------------------------------- captured prefills
@pytest.fixture(scope="module")
def captured_result():
    from visiondrop.bench import captured

    model = tiny_llava(num_layers=8, image_size=112)
    config = latency.BenchConfig(model="tiny-llava", methods=("visiondrop", "fastv"), budget=24, **SMALL)
    return captured.run_captured(config, model=model, progress=False)


def test_captured_bench_has_every_variant_and_figure(captured_result):
    figures = captured_result["figures"]
    assert list(figures) == ["full", "full+graph", "visiondrop+graph", "fastv+graph", "ideal+graph"]
    for name, by_key in figures.items():
        assert set(by_key) == {"ttft_ms"}, name
        assert len(by_key["ttft_ms"]["samples"]) == 2 and by_key["ttft_ms"]["median"] > 0
    assert captured_result["graph"] is False  # CPU: the bookkeeping without graphs


def test_captured_bench_checks_against_eager(captured_result):
    checks = captured_result["checks"]
    assert set(checks) == {"full+graph", "visiondrop+graph", "fastv+graph"}
    for check in checks.values():  # on the CPU the frozen plans must reproduce eager exactly
        assert check["max_abs_logit_diff"] < 1e-4 and check["same_greedy_tokens"] and check["logit_std"] > 0


def test_captured_bench_outputs_written(captured_result, tmp_path):
    from visiondrop.bench import captured

    paths = captured.save(captured_result, tmp_path)
    table = paths["md"].read_text()
    assert "| visiondrop+graph |" in table and "vs full+graph" in table
    assert json.loads(paths["json"].read_text())["checks"] == captured_result["checks"]
    assert paths["png"].stat().st_size > 0


def test_captured_bench_refuses_other_models():
    from visiondrop.bench import captured

    config = latency.BenchConfig(model="tiny-next", methods=("visiondrop",), budget=40, **SMALL)
    with pytest.raises(ValueError, match="--config: captured prefills support LLaVA-1.5"):
        captured.run_captured(config, model=tiny_llava_next(), progress=False)
