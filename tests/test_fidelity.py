"""The fidelity benchmark (visiondrop.eval.fidelity and ``visiondrop fidelity``) on a
smoke checkpoint and the first few held-out questions."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import visiondrop
from visiondrop.cli import FIDELITY_BUDGETS, main
from visiondrop.data import shapes
from visiondrop.eval import fidelity
from visiondrop.eval.fidelity import load, run_fidelity, save, slice_accuracy
from visiondrop.eval.vqa import accuracy_by_kind, answer, items_of
from visiondrop.zoo.shapes_llava import load_shapes_llava, word_list

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 12  # two scenes
BUDGETS = (128, 16)  # LLM-only methods (fastv, pdrop, ...) cannot average 16 on an 8-layer LM
LLM_ONLY = ("fastv", "pdrop", "pdrop-visual", "sparsevlm")


def _coin(model, processor, items) -> None:
    """Rewire the LM head so the model answers 'yes' or 'no' by the sign of one
    direction of its final hidden state: the direction in which pruning moves it
    most, among those along which the items' unpruned-or-pruned mean states agree.

    A smoke checkpoint (two training steps) always answers the same token, so every
    accuracy would be 0 and every comparison trivially true. This one's answers to
    ``items`` change with the pruning method and budget, and it gets some yes/no
    questions right, so accuracies, % of full and per-question strings carry
    information."""
    seen: list[torch.Tensor] = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0][:, -1].double()))
    answer(model, processor, items, batch_size=len(items))
    for method in visiondrop.available_methods():
        for budget in (64, 16):
            try:
                handle = visiondrop.apply(model, method, budget=budget)
            except visiondrop.BudgetInfeasible:  # LLM-only methods on this 8-layer LM
                continue
            with handle:
                answer(model, processor, items, batch_size=len(items))
    hook.remove()
    states = torch.stack(seen)  # (runs, items, hidden)
    means = states.mean(0)  # per item, over runs
    _, sizes, vh = torch.linalg.svd(means, full_matrices=False)
    basis = vh[sizes > 1e-6 * sizes[0]]
    spread = (states - means).flatten(0, 1)
    spread = spread - spread @ basis.T @ basis  # orthogonal to every item's mean: the threshold is 0
    direction = torch.linalg.svd(spread, full_matrices=False).Vh[0]
    words = word_list()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[words.index("yes")] = direction.float()
        model.lm_head.weight[words.index("no")] = -direction.float()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    """A smoke-trained shapes-llava, rewired by :func:`_coin`, on disk."""
    base = tmp_path_factory.mktemp("fidelity")
    smoke, coin = base / "smoke", base / "coin"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_shapes_llava.py"), "--out", str(smoke), "--smoke"],
                   check=True, capture_output=True, text=True)
    model, processor = load_shapes_llava(smoke)
    _coin(model, processor, items_of(shapes.heldout(2), LIMIT))
    model.save_pretrained(coin)
    processor.save_pretrained(coin)
    return str(coin)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_shapes_llava(checkpoint)


@pytest.fixture(scope="module")
def items():
    return items_of(shapes.heldout(2), LIMIT)


@pytest.fixture(scope="module")
def result(loaded, items):
    model, processor = loaded
    return run_fidelity(model, processor, items, budgets=BUDGETS, batch_size=8, progress=False,
                        model_name="coin", command="pytest")


@pytest.fixture(scope="module")
def direct(loaded, items):
    """Every run's answers, computed here without the benchmark."""
    model, processor = loaded
    answers = {("full", None): answer(model, processor, items, batch_size=5)}
    for method in fidelity.normalize_methods(None):
        name, options = fidelity.parse_method(method)
        for budget in BUDGETS:
            try:
                handle = visiondrop.apply(model, name, budget=budget, **options)
            except visiondrop.BudgetInfeasible:
                continue
            with handle:
                answers[method, budget] = answer(model, processor, items, batch_size=5)
    return answers


def test_entries_and_metadata(result, items):
    methods = fidelity.normalize_methods(None)
    assert "visiondrop[positions=keep]" in methods and set(visiondrop.available_methods()) <= set(methods)
    assert [(e.method, e.budget) for e in result.entries] == [("full", None)] + [
        (m, b) for m in methods for b in sorted(BUDGETS, reverse=True)]
    assert result.methods == methods and result.budgets == sorted(BUDGETS, reverse=True)
    meta = result.metadata
    assert (meta.questions, meta.scenes, meta.limit) == (LIMIT, 2, LIMIT)
    assert meta.fingerprint == shapes.fingerprint(shapes.heldout(2))
    assert meta.kinds == shapes.KINDS and meta.proxy == "shapes-llava"
    assert [meta.kinds[int(k)] for k in meta.item_kinds] == [it.question.kind for it in items]
    assert set(meta.versions) == {"visiondrop", "torch", "transformers", "python"}
    assert (meta.device, meta.dtype, meta.batch_size, meta.command, meta.model) == ("cpu", "float32", 8, "pytest",
                                                                                    "coin")
    assert meta.date.endswith("+00:00")
    assert all(e.seconds > 0 for e in result.entries if not e.infeasible)
    assert meta.seconds == pytest.approx(sum(e.seconds for e in result.entries), abs=0.01)


def test_the_fixture_is_informative(result):
    # Not a property of the code under test: without it the tests below prove little.
    assert result.full.accuracy["overall"] > 0, "the coin checkpoint scores 0; comparisons would be trivial"
    assert len({e.correct for e in result.entries}) > 1, "pruning never changes an answer of the coin checkpoint"


def test_entries_match_answers_computed_directly(result, items, direct):
    for e in result.entries:
        if e.infeasible:
            assert (e.method, e.budget) not in direct
            continue
        answers = direct[e.method, e.budget]
        assert e.correct == "".join("1" if a == it.question.answer else "0" for it, a in zip(items, answers))
        assert e.accuracy == accuracy_by_kind(items, answers)


@pytest.mark.parametrize("n", [1, 5, 6, 7, LIMIT])
def test_slice_accuracy_matches_accuracy_by_kind(result, items, direct, n):
    for e in result.entries:
        if e.infeasible:
            continue
        expected = accuracy_by_kind(items[:n], direct[e.method, e.budget][:n])
        assert slice_accuracy(e, n) == pytest.approx(expected["overall"], abs=1e-12)
        assert result.slice_accuracy_by_kind(e, n) == pytest.approx(expected, abs=1e-12)
        assert result.slice_accuracy_by_kind(e, n).keys() == expected.keys()


@pytest.mark.parametrize("n", [0, LIMIT + 1, True, 2.0])
def test_slice_accuracy_rejects_bad_n(result, n):
    with pytest.raises(ValueError, match="n must be an int"):
        slice_accuracy(result.full, n)


def test_percent_of_full(result):
    full = result.full.accuracy["overall"]
    assert result.full.percent_of_full == pytest.approx(100.0)
    for e in result.entries:
        if e.infeasible:
            assert e.percent_of_full is None and e.accuracy == {} and e.correct == ""
            continue
        assert e.percent_of_full == pytest.approx(100 * e.accuracy["overall"] / full)


def test_infeasible_pairs_are_recorded_not_run(result, tmp_path):
    infeasible = {(e.method, e.budget) for e in result.entries if e.infeasible}
    assert infeasible == {(m, 16) for m in LLM_ONLY}
    assert all("too small" in result.entry(m, b).infeasible for m, b in infeasible)
    table = fidelity.to_markdown(result)
    assert table.count("infeasible (") == len(infeasible) and "(1) fastv at 16: budget" in table
    assert load(save(result, tmp_path)["json"]).entries == result.entries  # round trip keeps the reasons


def test_a_method_that_reaches_no_budget_is_a_config_error(loaded, items):
    model, processor = loaded
    with pytest.raises(fidelity.FidelityConfigError, match="budgets: method 'fastv' can reach none"):
        run_fidelity(model, processor, items, methods=["fastv"], budgets=[32, 16], progress=False)


def test_json_round_trip(result, tmp_path):
    paths = save(result, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"fidelity.json", "fidelity.md", "fidelity.png"}
    assert load(paths["json"]) == result
    assert load(tmp_path / "out") == result  # the folder works too
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "visiondrop-fidelity" and data["version"] == 1
    assert data["metadata"]["proxy"] == "shapes-llava"
    assert data["entries"][0]["budget"] is None and data["entries"][0]["method"] == "full"
    assert paths["markdown"].read_text() == fidelity.to_markdown(result)


def test_markdown_table(result):
    text = fidelity.to_markdown(result)
    meta = result.metadata
    for needle in (f"`{meta.command}`", meta.device_name, meta.date, f"torch {meta.versions['torch']}",
                   f"transformers {meta.versions['transformers']}", f"visiondrop {meta.versions['visiondrop']}",
                   f"first {LIMIT} of 2,040"):
        assert needle in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header, rule, rows = table[0], table[1], table[2:]
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "budget", *shapes.KINDS, "overall",
                                                                 "% of full"]
    assert rule.count("|") == header.count("|")
    assert len(rows) == len(result.entries)
    for row, e in zip(rows, result.entries):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:2] == [e.method, "full" if e.budget is None else str(e.budget)]
        if e.infeasible:
            assert cells[-1].startswith("infeasible (")
            continue
        assert float(cells[-2]) == pytest.approx(100 * e.accuracy["overall"], abs=0.05)
        assert float(cells[-1]) == pytest.approx(e.percent_of_full, abs=0.05)


def test_plot_written(result, tmp_path):
    from PIL import Image

    path = fidelity.plot(result, tmp_path / "plot.png")
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200


def _mutations():
    def drop(key):
        return lambda d: d["entries"][1].pop(key)

    def setter(*keys_value):
        *keys, value = keys_value

        def apply(d):
            target = d
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
        return apply

    return {
        "metadata not an object": (setter("metadata", []), "metadata must be an object"),
        "wrong format": (setter("format", "something"), "'format' must be 'visiondrop-fidelity'"),
        "future version": (setter("version", 2), "unsupported version 2"),
        "no metadata": (lambda d: d.pop("metadata"), "missing key 'metadata'"),
        "questions a string": (setter("metadata", "questions", "12"), "metadata.questions must be an integer"),
        "batch size a bool": (setter("metadata", "batch_size", True), "metadata.batch_size must be an integer"),
        "kinds mismatch": (setter("metadata", "item_kinds", lambda s: s[:-1] + "9"), "metadata.item_kinds"),
        "entries not a list": (setter("entries", {}), "entries must be a list"),
        "no entries": (setter("entries", []), "entries is empty"),
        "missing correct": (drop("correct"), "entries[1]: missing key 'correct'"),
        "correct not 0/1": (setter("entries", 1, "correct", lambda s: "2" + s[1:]), "only '0' and '1'"),
        "correct too short": (setter("entries", 1, "correct", lambda s: s[:-1]), f"11 characters for {LIMIT}"),
        "budget a string": (setter("entries", 1, "budget", "64"), "entries[1].budget must be an integer or null"),
        "budget zero": (setter("entries", 1, "budget", 0), "budget >= 1"),
        "accuracy tampered": (setter("entries", 1, "accuracy", "overall", lambda v: v + 0.01 if v < 0.5 else v - 0.01),
                              "entries[1].accuracy.overall"),
        "accuracy missing a kind": (lambda d: d["entries"][1]["accuracy"].pop("read"), "must have the keys"),
        "accuracy a string": (setter("entries", 1, "accuracy", "read", "high"), "must be a number"),
        "percent tampered": (setter("entries", 1, "percent_of_full", lambda v: v + 1), "percent_of_full"),
        "full not first": (lambda d: d["entries"].reverse(), "entries[0] must be the full model"),
        "duplicate entry": (lambda d: d["entries"].append(copy.deepcopy(d["entries"][1])), "appears twice"),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_load_rejects_malformed_json(result, tmp_path, name):
    mutate, problem = _mutations()[name]
    data = result.to_dict()
    mutate(data)
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


@pytest.mark.parametrize(("text", "problem"), [('{"format": "visiondrop-fidelity", ', "not valid JSON"),
                                               ("[]", "the JSON must be an object"),
                                               ("", "not valid JSON")])
def test_load_rejects_text_that_is_not_a_result(tmp_path, text, problem):
    path = tmp_path / "fidelity.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_load_accepts_a_full_model_scoring_zero(result, tmp_path):
    data = result.to_dict()
    for entry in data["entries"]:
        if entry.get("infeasible"):
            continue
        entry["correct"] = "0" * LIMIT
        entry["accuracy"] = {k: 0.0 for k in entry["accuracy"]}
        entry["percent_of_full"] = None
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps(data))
    assert load(path).entries[1].percent_of_full is None
    data["entries"][1]["percent_of_full"] = 0.0  # undefined: must be null
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="percent_of_full"):
        load(path)


def _fail_if_answering(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("answered questions before validating the arguments")

    monkeypatch.setattr(fidelity, "_run_all", refuse)


@pytest.mark.parametrize(("kwargs", "parameter", "detail"), [
    ({"methods": ["visiondrop", "no-such-method"]}, "methods", "available: "),
    ({"methods": ["full"]}, "methods", "always runs"),
    ({"methods": ["random", "random"]}, "methods", "more than once"),
    ({"budgets": (64, 577)}, "budgets", "[1, 576]"),
    ({"budgets": (64, 0)}, "budgets", ">= 1"),
    ({"budgets": (64, "16")}, "budgets", "must be an int"),
    ({"budgets": (64, 64)}, "budgets", "more than once"),
    ({"budgets": 64}, "budgets", "sequence"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
])
def test_run_fidelity_validates_before_compute(loaded, items, monkeypatch, kwargs, parameter, detail):
    model, processor = loaded
    _fail_if_answering(monkeypatch)
    with pytest.raises(ValueError, match=f"^{parameter}: ") as caught:
        run_fidelity(model, processor, items, progress=False, **kwargs)
    assert detail in str(caught.value)
    assert isinstance(caught.value, fidelity.FidelityConfigError) and caught.value.parameter == parameter
    handle = getattr(model, "_visiondrop_handle", None)
    assert handle is None or not handle.active  # the trial applications were removed


def test_unknown_method_lists_the_registry(loaded, items, monkeypatch):
    model, processor = loaded
    _fail_if_answering(monkeypatch)
    with pytest.raises(ValueError, match="^methods: unknown method 'nope'") as caught:
        run_fidelity(model, processor, items, methods=["nope"], progress=False)
    for name in visiondrop.available_methods():
        assert repr(name) in str(caught.value)


def test_run_fidelity_refuses_a_pruned_model(loaded, items, monkeypatch):
    model, processor = loaded
    _fail_if_answering(monkeypatch)
    with visiondrop.apply(model, "random", budget=16), pytest.raises(RuntimeError, match="active visiondrop handle"):
        run_fidelity(model, processor, items, progress=False)
    with pytest.raises(ValueError, match="^items: "):
        run_fidelity(model, processor, [], progress=False)


def test_cli_defaults_match_the_library():
    assert FIDELITY_BUDGETS == fidelity.DEFAULT_BUDGETS


@pytest.mark.parametrize(("args", "option", "detail"), [
    (["--budgets", "64,lots"], "--budgets", "'lots'"),
    (["--budgets", "64,0"], "--budgets", ">= 1"),
    (["--budgets", "32,32"], "--budgets", "more than once"),
    (["--budgets", "64,,16"], "--budgets", "''"),
    (["--methods", "nope"], "--methods", "unknown method 'nope'"),
    (["--methods", "visiondrop,"], "--methods", "comma list"),
    (["--methods", "full"], "--methods", "always runs"),
    (["--limit", "0"], "--limit", "[1, 2,040]"),
    (["--limit", "2041"], "--limit", "[1, 2,040]"),
    (["--batch-size", "x"], "--batch-size", ">= 1"),
])
def test_cli_bad_values_exit_2_before_loading(tmp_path, capsys, args, option, detail):
    out = tmp_path / "out"
    # A model folder that does not exist: a --model error would mean it was loaded first.
    code = main(["fidelity", "--model", str(tmp_path / "missing"), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"visiondrop: {option}: ")
    assert detail in err
    assert not out.exists()


def test_cli_budget_too_large_for_the_model(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["fidelity", "--model", checkpoint, "--budgets", "64,1000", "--limit", "6", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "visiondrop: --budgets: method" in err and "budget 1000" in err and "[1, 576]" in err
    assert not out.exists()


def test_cli_missing_model(tmp_path, capsys):
    assert main(["fidelity", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("visiondrop: --model: ")


def test_cli_writes_the_three_files(checkpoint, result, tmp_path, capsys):
    out = tmp_path / "fidelity"
    argv = ["fidelity", "--model", checkpoint, "--limit", str(LIMIT), "--budgets", "full,128,16", "--device", "cpu",
            "--batch-size", "8", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    written = load(out)
    assert stdout.startswith(fidelity.to_markdown(written))
    for name in ("fidelity.json", "fidelity.md", "fidelity.png"):
        assert f"wrote {out / name}" in stdout
        assert (out / name).stat().st_size > 0
    assert written.metadata.command == "visiondrop " + shlex.join(argv)
    assert written.metadata.model == checkpoint
    assert [(e.method, e.budget) for e in written.entries] == [("full", None)] + [
        (m, b) for m in fidelity.normalize_methods(None) for b in (128, 16)]
    for e in written.entries:  # same model, same questions: the same outcomes as the library call
        assert e.correct == result.entry(e.method, e.budget).correct


def test_method_variants_parse_and_fail_clearly():
    assert fidelity.parse_method("visiondrop") == ("visiondrop", {})
    assert fidelity.parse_method("visiondrop[positions=keep;contextual_ratio=0.25;keep_cls=false]") == (
        "visiondrop", {"positions": "keep", "contextual_ratio": 0.25, "keep_cls": False})
    for bad in ("visiondrop[positions=keep", "visiondrop[positions]", "nope[positions=keep]"):
        with pytest.raises(ValueError, match="^methods: "):
            fidelity.normalize_methods([bad])


def test_variant_with_a_bad_option_names_methods(loaded, items, monkeypatch):
    model, processor = loaded
    _fail_if_answering(monkeypatch)
    with pytest.raises(ValueError, match="^methods: .*bogus"):
        run_fidelity(model, processor, items, methods=["visiondrop[bogus=1]"], budgets=[16], progress=False)
