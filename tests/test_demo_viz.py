"""The demo on the shipped model, and the stage pictures it draws."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from visiondrop.cli import main
from visiondrop.data import shapes2
from visiondrop.demo import _first_rows
from visiondrop.report import SegmentRecord
from visiondrop.viz import TINT, stage_panel


def test_stage_panel_marks_kept_merged_and_dropped_patches():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(28, 42, 3), dtype=np.uint8)  # 2 x 3 patches of 14
    # Encoder-style stage: CLS (patch -1) + 6 patches; keep CLS and patch 4, merge 0/1/2
    # into one contextual token (target patch 1), drop nothing else (3 and 5 dropped).
    segment = SegmentRecord(row=0, image=0, dominant=torch.tensor([0, 5]), targets=torch.tensor([2]),
                            merged_into=torch.tensor([-1, 0, 0, 0, -1, -1, -1]),
                            input_patches=torch.tensor([-1, 0, 1, 2, 3, 4, 5]),
                            output_patches=torch.tensor([-1, 4, 1]))
    panel = np.asarray(stage_panel(image, segment, 14)).astype(int)
    cell = {p: (slice((p // 3) * 14, (p // 3 + 1) * 14), slice((p % 3) * 14, (p % 3 + 1) * 14)) for p in range(6)}
    inner = (slice(1, -1), slice(1, -1))  # away from the outlines

    def interior(p, array):
        return array[cell[p]][inner]

    assert np.array_equal(interior(4, panel), interior(4, image.astype(int)))  # dominant: as is
    for dropped in (3, 5):
        assert np.all(interior(dropped, panel) <= interior(dropped, image.astype(int)) * 0.25 + 1)
    tinted = [interior(p, panel) for p in (0, 1, 2)]
    for p, patch in zip((0, 1, 2), tinted):
        assert not np.array_equal(patch, interior(p, image.astype(int)))
        assert not np.all(patch <= interior(p, image.astype(int)) * 0.25 + 1)  # not darkened like a drop
    # One contextual token: the same tint on its three patches (equal offsets from the image's share).
    offsets = [patch - (1 - TINT) * interior(p, image.astype(int)) for p, patch in zip((0, 1, 2), tinted)]
    assert np.allclose(offsets[0].mean((0, 1)), offsets[2].mean((0, 1)), atol=2)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_runs_on_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--scenes", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for run in ("full", "budget 192", "budget 128", "budget 64", "budget 32"):
        assert f"\n{run} " in text
    assert text.count("%") >= 5 and "wrote" in text
    figure = Image.open(out)
    # One scene: input + encoder + 3 LLM stages = 5 panels of 336 px, side by side, under a
    # heading and a legend, with the question and answers beneath.
    assert figure.width > 5 * 336 and 336 < figure.height < 2 * 336
    top = np.asarray(figure.convert("RGB"))[:60]
    assert (top < 100).any()  # the heading and the legend's swatches are drawn above the panels


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_runs_on_shapes_llava_2(yes_shapes_llava2, tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--proxy", "shapes-llava-2", "--model", yes_shapes_llava2, "--scenes", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    scene = shapes2.heldout(1)[0]
    assert text.startswith("visiondrop demo: shapes-llava-2 (") and "32-layer Llama" in text
    assert f"on 1 ShapesVQA-2 scenes, {len(scene.questions)} questions" in text
    for question in scene.questions:  # every question of the scene, multi-token truths included
        assert f"{question.text:<48} {question.answer:>8} " in text
    right = sum(q.answer == "yes" for q in scene.questions) / len(scene.questions)  # the model says "yes"
    for run in ("full", "budget 192", "budget 32"):
        assert re.search(rf"\n{run} .* {right:.1%} ", text), run
    assert "--proxy shapes-llava-2" in text
    assert Image.open(out).width > 5 * 336


def test_each_scene_is_drawn_with_its_first_question():
    scenes = [SimpleNamespace(questions=[0] * 7), SimpleNamespace(questions=[0] * 6), SimpleNamespace(questions=[0])]
    assert _first_rows(scenes) == [0, 7, 13]


@pytest.mark.parametrize("args, detail", [(["--scenes", "0"], "num_scenes"),
                                          (["--figure-budget", "50"], "figure_budget"),
                                          (["--model", "/nonexistent/folder"], "no shapes-llava checkpoint"),
                                          (["--proxy", "nope"], "--proxy: unknown 'nope'")])
def test_demo_bad_arguments_exit_2(args, detail, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "x.png"), *args]) == 2
    assert detail in capsys.readouterr().err
