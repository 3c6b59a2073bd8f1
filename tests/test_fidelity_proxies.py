"""The fidelity benchmark on shapes-llava-2 (``proxy=`` / ``--proxy``) and under a position
policy (``positions=`` / ``--positions``), on tiny checkpoints and a few questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visiondrop.cli import main
from visiondrop.data import shapes2
from visiondrop.eval import fidelity
from visiondrop.eval.fidelity import load, run_fidelity, save, with_positions
from visiondrop.zoo.proxies import get_proxy

ROOT = Path(__file__).resolve().parents[1]
PROXY = get_proxy("shapes-llava-2")
LIMIT = 8  # scene 0's seven questions and the first of scene 1
BOTH = ["visiondrop[positions=reindex]", "visiondrop[positions=keep]"]


@pytest.fixture(scope="module")
def yes_model(yes_shapes_llava2):
    return PROXY.load(yes_shapes_llava2)


@pytest.fixture(scope="module")
def items():
    return PROXY.items(LIMIT)


@pytest.fixture(scope="module")
def result(yes_model, items):
    model, processor = yes_model
    return run_fidelity(model, processor, items, methods=["visiondrop"], budgets=[64], positions="both",
                        proxy="shapes-llava-2", progress=False, model_name="yes", command="pytest")


def _refuse_to_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("answered questions before validating the arguments")

    monkeypatch.setattr(fidelity, "_run_all", refuse)


def test_both_position_policies_are_labelled_runs(result):
    assert [e.label for e in result.entries] == ["full", *(f"{m}@64" for m in BOTH)]
    assert result.methods == BOTH


def test_metadata_is_shapes_llava_2s(result, items):
    meta = result.metadata
    assert meta.proxy == "shapes-llava-2" and meta.kinds == shapes2.KINDS
    assert (meta.questions, meta.scenes, meta.limit) == (LIMIT, 2, LIMIT)
    assert meta.fingerprint == shapes2.fingerprint(shapes2.heldout(2))
    assert [meta.kinds[int(k)] for k in meta.item_kinds] == [item.question.kind for item in items]


def test_outcomes_are_the_yes_answers(result, items):
    expected = "".join("1" if item.question.answer == "yes" else "0" for item in items)
    assert "1" in expected and "0" in expected  # the fixture is informative
    for entry in result.entries:  # the yes-sayer ignores the image: pruning changes nothing
        assert entry.correct == expected
        assert entry.accuracy == PROXY.accuracy_by_kind(items, ["yes"] * LIMIT)


def test_round_trip_and_reports_name_the_proxy(result, tmp_path):
    paths = save(result, tmp_path)
    assert json.loads(paths["json"].read_text())["metadata"]["proxy"] == "shapes-llava-2"
    assert load(tmp_path) == result
    text = paths["markdown"].read_text()
    assert "## Fidelity: yes on ShapesVQA-2" in text and f"first {LIMIT} of 2,099 held-out" in text
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")][2:-2] == list(shapes2.KINDS)


def test_a_file_without_a_proxy_is_shapes_llava():
    committed = ROOT / "docs" / "fidelity" / "fidelity.json"
    assert "proxy" not in json.loads(committed.read_text())["metadata"]
    assert load(committed).metadata.proxy == "shapes-llava"


def test_an_unknown_proxy_in_a_file_is_refused(result, tmp_path):
    data = result.to_dict()
    data["metadata"]["proxy"] = "shapes-llava-9"
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"metadata\.proxy: unknown 'shapes-llava-9'; available: shapes-llava, "):
        load(path)


@pytest.mark.parametrize(("kwargs", "parameter", "detail"), [
    ({"proxy": "shapes-llava-9"}, "proxy", "available: shapes-llava, shapes-llava-2"),
    ({"positions": "sideways"}, "positions", "('reindex', 'keep', 'both')"),
    ({"methods": ["visiondrop[positions=sideways]"], "positions": "both"}, "methods", "positions must be one of"),
])
def test_bad_arguments_fail_before_compute(tiny_shapes_llava2, items, monkeypatch, kwargs, parameter, detail):
    model, processor = PROXY.load(tiny_shapes_llava2)
    _refuse_to_run(monkeypatch)
    arguments = {"proxy": "shapes-llava-2", "budgets": [64], "progress": False, **kwargs}
    with pytest.raises(fidelity.FidelityConfigError) as caught:
        run_fidelity(model, processor, items, **arguments)
    assert caught.value.parameter == parameter and detail in caught.value.message


def test_questions_of_another_proxy_are_refused(tiny_shapes_llava2, monkeypatch):
    model, processor = PROXY.load(tiny_shapes_llava2)
    _refuse_to_run(monkeypatch)
    with pytest.raises(fidelity.FidelityConfigError, match=r"^items: question kinds \['colour', 'shape'\]"):
        run_fidelity(model, processor, get_proxy("shapes-llava").items(6), proxy=PROXY, progress=False)


def test_with_positions_runs_each_method_under_each_policy():
    specs = ["visiondrop", "fastv[layer=3]", "pool[positions=keep]", "visiondrop[positions=keep]"]
    assert with_positions(specs, None) == specs
    assert with_positions(specs, "both") == [
        "visiondrop[positions=reindex]", "visiondrop[positions=keep]",  # the fourth spec is the second of these
        "fastv[layer=3;positions=reindex]", "fastv[layer=3;positions=keep]", "pool[positions=keep]"]
    assert with_positions(["fastv[layer=3;]"], "reindex") == ["fastv[layer=3;positions=reindex]"]
    for spec in with_positions(specs, "both"):
        assert fidelity.parse_method(spec)[1]["positions"] in ("reindex", "keep")


def test_a_method_without_the_option_runs_once(monkeypatch):
    from visiondrop.methods import get_method, options

    real = options.option_types
    random_config = get_method("random").Config
    monkeypatch.setattr(options, "option_types", lambda cls: {} if cls is random_config else real(cls))
    assert with_positions(["random", "pool"], "both") == ["random", "pool[positions=reindex]", "pool[positions=keep]"]


def test_default_methods_under_a_policy_drop_the_default_variants():
    import visiondrop

    registered = list(visiondrop.available_methods())
    assert fidelity.normalize_methods(None) == registered + list(fidelity.DEFAULT_VARIANTS)
    assert fidelity.normalize_methods(None, "both") == [f"{m}[positions={p}]" for m in registered
                                                        for p in ("reindex", "keep")]
    assert fidelity.normalize_methods(None, "keep") == [f"{m}[positions=keep]" for m in registered]


def test_cli_runs_shapes_llava_2_under_both_policies(yes_shapes_llava2, tmp_path, capsys):
    out = tmp_path / "fidelity"
    argv = ["fidelity", "--proxy", "shapes-llava-2", "--model", yes_shapes_llava2, "--limit", "4", "--methods",
            "visiondrop", "--budgets", "64", "--device", "cpu", "--positions", "both", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    written = load(out)
    assert stdout.startswith(fidelity.to_markdown(written)) and "on ShapesVQA-2" in stdout
    assert [e.label for e in written.entries] == ["full", *(f"{m}@64" for m in BOTH)]
    assert (written.metadata.proxy, written.metadata.questions, written.metadata.model) == (
        "shapes-llava-2", 4, yes_shapes_llava2)
    assert all(f"| {m} | 64 |" in stdout for m in BOTH)


@pytest.mark.parametrize(("args", "line"), [
    (["--proxy", "nope"], "visiondrop: --proxy: unknown 'nope'; available: shapes-llava, shapes-llava-2"),
    (["--proxy", "shapes-llava-2", "--limit", "2100"], "visiondrop: --limit: must be an integer in [1, 2,099]"),
    (["--proxy", "shapes-llava-2", "--methods", "nope", "--positions", "both"], "visiondrop: --methods: unknown"),
])
def test_cli_bad_values_exit_2_before_loading(tmp_path, capsys, args, line):
    out = tmp_path / "out"
    code = main(["fidelity", "--model", str(tmp_path / "missing"), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(line) and len(err.strip().splitlines()) == 1
    assert not out.exists()
