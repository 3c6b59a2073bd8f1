"""scripts/train_shapes_llava.py end to end at smoke size (seconds, CPU), including the
two-call split (stage 1 in one call, a longer stage 2 in the next)."""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_shapes_llava.py"


def run_script(*argv: str) -> None:
    old = sys.argv
    sys.argv = [str(SCRIPT), *argv]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        assert done.value.code == 0
    finally:
        sys.argv = old


def test_vision_stage_then_lm_stage(tmp_path):
    first, second = tmp_path / "vision", tmp_path / "model"
    run_script("--out", str(first), "--smoke", "--stage", "vision")
    vision_file = first / "vision_tower.safetensors"
    assert vision_file.is_file() and not (first / "config.json").exists()  # stage 1 only
    saved = load_file(vision_file)
    run_script("--out", str(second), "--smoke", "--vision-from", str(vision_file))
    from visiondrop.zoo.shapes_llava import load_shapes_llava

    model, _ = load_shapes_llava(second)
    tower = model.model.vision_tower.state_dict()
    assert saved.keys() == tower.keys()
    for name, value in saved.items():  # the LM stage kept the loaded ViT (saved in fp16)
        assert torch.allclose(tower[name], value, atol=2e-3, rtol=1e-2), name
    log = json.loads((second / "training_log.json").read_text())
    stage1 = log["stage1_vision"]
    assert stage1["loaded_from"] == str(vision_file)
    # Stage 1's own record (vision_log.json beside the file) is carried into the final log.
    assert stage1["steps"] == 2 and "--stage vision" in stage1["separate_call"]["command"]
    assert [e["stage"] for e in log["log"]] == ["vision", "lm"]


@pytest.mark.parametrize("argv, message", [
    (["--stage", "vision", "--vision-from", "x.safetensors"], "cannot be combined"),
    (["--vision-from", "/nonexistent.safetensors"], "--vision-from: no such file"),
    (["--scenes", "0"], "--scenes must be >= 1"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    old = sys.argv
    sys.argv = [str(SCRIPT), "--out", str(tmp_path / "o"), *argv]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old
    assert done.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("step_seconds", "budget", "expected"), [(12.0, 60.0, 5), (0.01, 3.0, 300)])
def test_timed_loop_ends_on_time_whether_a_step_takes_seconds_or_milliseconds(step_seconds, budget, expected,
                                                                              monkeypatch):
    """On a CPU a step can take seconds: the loop must not wait for 50 steps before it first
    checks its time (a 60-second stage ran 50 steps of 12 s before the fix). A fake clock, so the
    test measures the loop's arithmetic, not this machine."""
    timed_loop = runpy.run_path(str(SCRIPT), run_name="timed_loop")["timed_loop"]
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def step_fn(step):
        clock[0] += step_seconds
        return {}

    steps = timed_loop("t", budget, 100_000, step_fn, optimizer, 0.1, 2, [])
    assert abs(steps - expected) <= 1
    assert abs(steps * step_seconds - budget) <= step_seconds + 1e-6
