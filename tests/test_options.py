"""Method options are typed by their config: checked as given in Python (``apply``),
converted from text one way for every command (``eval run --option``, ``fidelity``'s
``name[key=value]``, lmms-eval's model_args); schedules take ints only (issue 18)."""

import json
import math
from pathlib import Path

import pytest

import visiondrop
from visiondrop import Schedule
from visiondrop.cli import main
from visiondrop.eval import fidelity
from visiondrop.methods import available_methods, get_method
from visiondrop.methods.options import check_option, option_types, parse_method_options, parse_option
from visiondrop.schedule import StageSpec
from visiondrop.testing import save_tiny_checkpoint

WRONG = {  # a value of the wrong type for each kind of option
    "bool": ["no", 1, None],
    "int": [2.5, "2", True],
    "float": ["0.1", "2", math.nan, math.inf, True],
    "str": [3, None],
    "tuple[int, ...] | None": [2.5, ["8"], ()],
    "int | None": [2.5, "64", False],
}


def _wrong_values():
    for method in available_methods():
        for name, annotation in option_types(get_method(method).Config).items():
            if name in ("budget", "schedule"):
                continue
            for value in WRONG.get(annotation, []):
                yield pytest.param(method, name, value, id=f"{method}-{name}-{value!r}")


@pytest.mark.parametrize("method, name, value", list(_wrong_values()))
def test_apply_refuses_an_option_of_the_wrong_type_naming_it(model, method, name, value):
    with pytest.raises(ValueError, match=f"^{name}"):
        visiondrop.apply(model, method, budget=160, **{name: value})
    assert not hasattr(model, "_visiondrop_handle")


def test_every_option_type_has_a_check():
    for method in available_methods():
        for name, annotation in option_types(get_method(method).Config).items():
            with pytest.raises(ValueError, match=f"^{name}"):  # a type with no check raises TypeError
                check_option(name, object(), annotation)


def test_apply_takes_right_types():
    assert check_option("contextual_ratio", 0, "float") == 0.0 and isinstance(
        check_option("contextual_ratio", 0, "float"), float)
    assert check_option("layers", 8, "tuple[int, ...] | None") == 8
    assert check_option("layers", [8, 16], "tuple[int, ...] | None") == (8, 16)


@pytest.mark.parametrize("text, annotation, expected", [
    ("False", "bool", False), ("true", "bool", True), ("no", "bool", False),
    ("0", "float", 0.0), ("1/8", "float", 0.125), ("2", "float", 2.0),
    ("64", "int | None", 64), ("none", "int | None", None), ("'keep'", "str", "keep"),
    ("[8,16,24]", "tuple[int, ...] | None", (8, 16, 24)), ("8;16", "tuple[int, ...] | None", (8, 16)),
])
def test_text_is_converted_by_the_annotation(text, annotation, expected):
    value = parse_option("x", text, annotation)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, annotation, match", [
    ("maybe", "bool", "x: expected true or false"), ("nan", "float", "x: expected a number"),
    ("2.5", "int", "x: expected an integer"), ("8,x", "tuple[int, ...] | None", "x: expected integers"),
])
def test_bad_text_is_named(text, annotation, match):
    with pytest.raises(ValueError, match=match):
        parse_option("x", text, annotation)


def test_parse_method_options_types_and_names_unknown_ones():
    assert parse_method_options("visiondrop", {"keep_cls": "False", "entry_factor": "2"}) == {
        "keep_cls": False, "entry_factor": 2.0}
    assert parse_method_options("visiondrop", {"newline": "end"}, {"newline": ("base", "end")}) == {"newline": "end"}
    with pytest.raises(ValueError, match="ratio: unknown option for method 'visiondrop'"):
        parse_method_options("visiondrop", {"ratio": "2"})


def test_fidelity_specs_are_typed_the_same_way():
    assert fidelity.parse_method("visiondrop[keep_cls=False;contextual_ratio=0]") == (
        "visiondrop", {"keep_cls": False, "contextual_ratio": 0.0})
    with pytest.raises(ValueError, match="keep_cls: expected true or false"):
        fidelity.parse_method("visiondrop[keep_cls=nope]")


@pytest.mark.parametrize("kwargs, match", [
    (dict(encoder=(20.5, 2)), r"schedule.encoder dominant must be an int, got 20.5"),
    (dict(encoder=(20, 2.0)), r"schedule.encoder contextual must be an int, got 2.0"),
    (dict(llm=[(10, 1)], layers=(2.7,)), r"schedule.layers\[0\] must be an int, got 2.7"),
    (dict(llm=[(10, 1)], layers=2.0), r"schedule.layers\[0\] must be an int, got 2.0"),
    (dict(llm=[7.5]), r"schedule.llm\[0\] must be an int, got 7.5"),
    (dict(llm=[StageSpec(7.5, 0)]), r"schedule.llm\[0\].dominant must be an int"),
    (dict(llm=[(True, 1)]), r"schedule.llm\[0\] dominant must be an int, got True"),
])
def test_schedules_refuse_non_integers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_schedules_keep_integers():
    import numpy as np

    schedule = Schedule(encoder=(np.int64(20), 2), llm=[(10, 1), 5], layers=(2, np.int32(4)))
    assert schedule.encoder == StageSpec(20, 2) and schedule.llm == (StageSpec(10, 1), StageSpec(5, 0))
    assert schedule.layers == (2, 4) and all(type(x) is int for x in schedule.layers)


# ------------------------------------------------------------------ eval run --option

@pytest.fixture(scope="module")
def pope_run(tmp_path_factory, pope):
    checkpoint = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint(checkpoint)
    return ["eval", "run", *pope, "--model", str(checkpoint), "--limit", "1", "--budget", "16"]


def test_eval_run_options_are_typed_and_recorded_so(pope_run, tmp_path):
    out = tmp_path / "p.jsonl"
    assert main([*pope_run, "--out", str(out), "--option", "keep_cls=False", "--option", "entry_factor=2",
                 "--option", "contextual_ratio=0"]) == 0
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["run"]["options"] == {"keep_cls": False, "entry_factor": 2.0, "contextual_ratio": 0.0}


@pytest.mark.parametrize("option, named", [
    ("keep_cls=nope", "--option: keep_cls: expected true or false"),
    ("contextual_ratio=lots", "--option: contextual_ratio: expected a number"),
    ("ratio=2", "--option: ratio: unknown option for method 'visiondrop'"),
    ("budget=8", "--option: budget is not an option here"),
])
def test_eval_run_refuses_a_bad_option_before_loading_anything(pope_run, tmp_path, monkeypatch, capsys, option,
                                                               named):
    import visiondrop.inputs

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(visiondrop.inputs, "load_model", no_loading)
    assert main([*pope_run, "--out", str(tmp_path / "x.jsonl"), "--option", option]) == 2
    assert named in capsys.readouterr().err
