"""The text-guided vs visual-only study (visiondrop.analysis.study, the paper's Figure 2)
on the shipped shapes-llava, on CPU, with 12 ShapesVQA questions and budgets 128 (both
scorings feasible on its 8-layer LM) and 64 (infeasible for PyramidDrop's schedule)."""

from __future__ import annotations

import argparse
import json

import pytest

import visiondrop
from visiondrop.analysis import study
from visiondrop.eval import harness
from visiondrop.eval.datasets import load_dataset
from visiondrop.eval.scorers import HEADLINE

LIMIT = 12
BUDGETS = (64, 128)  # given smallest first: the result lists them largest first


@pytest.fixture(scope="module")
def shapes():
    from visiondrop.zoo.shapes_llava import load_shapes_llava

    model, processor = load_shapes_llava()
    return model, processor, load_dataset("shapes", scenes=2)


@pytest.fixture(scope="module")
def studied(shapes, tmp_path_factory):
    model, processor, dataset = shapes
    out = tmp_path_factory.mktemp("study")
    result = study.run_study(model, processor, dataset, budgets=BUDGETS, out_dir=out, limit=LIMIT, batch_size=12,
                             template="plain", progress=False)
    return result, out


def _count_answers(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = harness.answer_batch

    def counting(model, processor, samples, *args, **kwargs):
        calls.append(len(samples))
        return real(model, processor, samples, *args, **kwargs)

    monkeypatch.setattr(harness, "answer_batch", counting)
    return calls


def test_result_structure(studied):
    result, out = studied
    assert result["dataset"] == "shapes" and result["scorer"] == "exact"
    assert result["metric"] == HEADLINE["exact"] == "accuracy"
    assert result["questions"] == LIMIT and result["limit"] == LIMIT
    assert result["model"] == "shapes-llava" and result["template"] == "plain"
    assert result["methods"] == {"text_guided": "pdrop", "visual_only": "pdrop-visual"}
    assert result["budgets"] == [128, 64]
    assert result["unpruned"]["method"] == "full" and result["unpruned"]["budget"] is None
    assert [(r["budget"], r["role"], r["method"]) for r in result["runs"]] == [
        (128, "text_guided", "pdrop"), (128, "visual_only", "pdrop-visual"),
        (64, "text_guided", "pdrop"), (64, "visual_only", "pdrop-visual")]
    for row in result["runs"]:
        if row["budget"] == 128:
            assert row["infeasible"] is None and row["answered"] == LIMIT
            assert 0 <= row["score"] <= 100
            assert row["percent_of_unpruned"] == pytest.approx(100 * row["score"] / result["unpruned"]["score"])
        else:  # 576 tokens stay through layer 0 of 8: PyramidDrop's schedule cannot average 64
            assert row["infeasible"] and "budget" in row["infeasible"]
            assert row["score"] is None and row["path"] is None and row["metrics"] == {}
    g128, g64 = result["gaps"]
    text, visual = study.find_run(result, "text_guided", 128), study.find_run(result, "pdrop-visual", 128)
    assert g128 == {"budget": 128, "text_guided": text["score"], "visual_only": visual["score"],
                    "gap": pytest.approx(visual["score"] - text["score"])}
    assert g64 == {"budget": 64, "text_guided": None, "visual_only": None, "gap": None}
    assert json.loads(json.dumps(result)) == result  # plain JSON


def test_scored_with_the_datasets_rule(studied):
    result, out = studied
    rows = [result["unpruned"]] + [r for r in result["runs"] if not r["infeasible"]]
    assert len(rows) == 3
    for row in rows:
        path = out / row["path"]
        metrics = harness.score(path)
        assert row["metrics"] == metrics and row["score"] == metrics["accuracy"]
        assert metrics["count"] == LIMIT
        meta = harness.read_meta(path)
        assert meta["dataset"] == "shapes" and meta["scorer"] == "exact" and meta["total"] == LIMIT
        expected = "full" if row["budget"] is None else row["method"]
        assert (meta["run"]["method"], meta["run"]["budget"]) == (expected, row["budget"])
    assert len({row["path"] for row in rows}) == 3  # each its own file
    # the shipped model answers nearly all of its own held-out questions unpruned
    assert result["unpruned"]["score"] >= 90


def test_rerun_resumes_without_answering_again(shapes, studied, monkeypatch):
    model, processor, dataset = shapes
    first, out = studied
    calls = _count_answers(monkeypatch)
    again = study.run_study(model, processor, dataset, budgets=BUDGETS, out_dir=out, limit=LIMIT, batch_size=12,
                            template="plain", progress=False)
    assert calls == []
    assert all(r["answered"] == 0 for r in [again["unpruned"], *again["runs"]])
    assert again["gaps"] == first["gaps"] and again["unpruned"]["score"] == first["unpruned"]["score"]

    # an interrupted run: the visual-only file lost its last 5 answers and half a line
    path = out / study.find_run(first, "visual_only", 128)["path"]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:LIMIT - 5]) + lines[LIMIT - 5][:20])
    resumed = study.run_study(model, processor, dataset, budgets=BUDGETS, out_dir=out, limit=LIMIT, batch_size=12,
                              template="plain", progress=False)
    assert sum(calls) == 5
    assert study.find_run(resumed, "visual_only", 128)["answered"] == 5
    assert resumed["gaps"] == first["gaps"]  # greedy answers: the same predictions again
    assert getattr(model, "_visiondrop_handle", None) is None  # every handle removed


def test_outputs_written(studied, tmp_path):
    result, _ = studied
    paths = study.save(result, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "plot"}
    assert json.loads(paths["json"].read_text()) == result
    text = paths["markdown"].read_text()
    assert text == study.to_markdown(result)
    assert "| 128 |" in text and "infeasible (a)" in text and "pdrop-visual" in text
    gap = result["gaps"][0]["gap"]
    assert f"{gap:+.2f}" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_api_errors_before_compute(shapes, tmp_path, monkeypatch):
    model, processor, dataset = shapes
    calls = _count_answers(monkeypatch)
    cases = [({"budgets": (128, 128)}, "budgets"), ({"budgets": ()}, "budgets"), ({"budgets": (0,)}, "budgets"),
             ({"budgets": "128"}, "budgets"), ({"methods": ("pdrop",)}, "methods"),
             ({"methods": ("pdrop", "nope")}, "methods"), ({"methods": ("pdrop", "pdrop[foo=1]")}, "methods"),
             ({"limit": 0}, "limit"), ({"batch_size": 0}, "batch_size"), ({"template": "vicuna"}, "template")]
    for kwargs, parameter in cases:
        with pytest.raises(ValueError, match=f"^{parameter}:"):
            study.run_study(model, processor, dataset, out_dir=tmp_path / "x", progress=False, **kwargs)
    handle = visiondrop.apply(model, "pdrop", budget=128)
    try:
        with pytest.raises(RuntimeError, match="active"):
            study.run_study(model, processor, dataset, out_dir=tmp_path / "x", progress=False)
    finally:
        handle.remove()
    assert calls == [] and not (tmp_path / "x").exists()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="visiondrop")
    study.add_parser(parser.add_subparsers(dest="command", required=True))
    return study.main(parser.parse_args(["study", *argv]))


@pytest.mark.parametrize(("argv", "option"), [
    (["--budgets", "192,abc"], "--budgets"), (["--budgets", ""], "--budgets"), (["--budgets", "128,128"], "--budgets"),
    (["--budgets", "0"], "--budgets"), (["--dataset", "nope"], "nope"), (["--data", "scenes"], "--data"),
    (["--data", "color=red"], "color"), (["--limit", "0"], "--limit"), (["--batch-size", "x"], "--batch-size"),
    (["--methods", "pdrop"], "--methods"), (["--methods", "pdrop,nope"], "--methods"),
])
def test_cli_errors_name_the_parameter(argv, option, tmp_path, monkeypatch, capsys):
    from visiondrop.zoo import shapes_llava

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(shapes_llava, "load_shapes_llava", no_model)
    assert _cli([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visiondrop: ") and option in err
    assert not (tmp_path / "o").exists()


def test_cli_runs_the_study(tmp_path, capsys):
    out = tmp_path / "cli"
    assert _cli(["--limit", "6", "--budgets", "128", "--batch-size", "6", "--data", "scenes=1", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 128 |" in printed
    result = json.loads((out / "study.json").read_text())
    assert result["budgets"] == [128] and result["questions"] == 6 and result["model"] == "shapes-llava"
    assert (out / "study.md").is_file() and (out / "study.png").is_file()
    for row in [result["unpruned"], *result["runs"]]:
        assert harness.score(out / row["path"])["accuracy"] == row["score"]
