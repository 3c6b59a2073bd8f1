"""Kept-token pictures (visiondrop.analysis.visualize): report -> cells on the image, per layout;
compare_methods on real models; the ``visualize`` command and its errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import visiondrop
from visiondrop.analysis import visualize as vz
from visiondrop.report import PruningReport, SegmentRecord, StageRecord
from visiondrop.testing import NEXT_PINPOINTS, tiny_video_llava, video_llava_prompt
from visiondrop.viz import _PALETTE

INNER = 1  # pixels away from a cell's edge (outlines are drawn on the edge)


def _record(n, dominant, targets, merged, row=0, image=0, patches=None):
    merged_into = torch.full((n,), -1, dtype=torch.long)
    for local, slot in merged.items():
        merged_into[local] = slot
    patches = torch.arange(n) if patches is None else torch.as_tensor(patches)
    dominant, targets = torch.tensor(dominant, dtype=torch.long), torch.tensor(targets, dtype=torch.long)
    return SegmentRecord(row=row, image=image, dominant=dominant, targets=targets, merged_into=merged_into,
                         input_patches=patches, output_patches=torch.cat([patches[dominant], patches[targets]]))


def _report(*stages):
    return PruningReport(batch_size=2, num_layers=4, stages=list(stages))


def _interior(array, box):
    y0, y1, x0, x1 = box
    return array[y0 + INNER:y1 - INNER, x0 + INNER:x1 - INNER].astype(np.float64)


def _is_dark(picture, base, box):
    return np.all(np.abs(_interior(picture, box) - vz.DARK * _interior(base, box)) <= 1)


def _is_kept(picture, base, box):
    return np.array_equal(_interior(picture, box), _interior(base, box))


def _is_tinted(picture, base, box, slot):
    expected = (1 - vz.TINT) * _interior(base, box) + vz.TINT * _PALETTE[slot]
    return np.all(np.abs(_interior(picture, box) - expected) <= 1)


def _edge(picture, box):
    """The outline pixel at a cell's top-left corner."""
    return tuple(int(v) for v in picture[box[0], box[2]])


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(40, 216, size=(32, 32, 3), dtype=np.uint8)


# ------------------------------------------------------------------ known indices, one grid
def test_square_grid_marks_dominant_contextual_and_dropped_patches(image):
    """4 x 4 patches of 8 px: dominant {0, 5}; contextual target 7 with 8 and 9 merged into it."""
    layout = vz.square_layout(32, 8, mode="stretch")
    record = _record(16, dominant=[0, 5], targets=[7], merged={7: 0, 8: 0, 9: 0})
    pictures = vz.stage_pictures(image, _report(StageRecord("encoder", None, 16, 2, 1, [record])), 0, layout)
    assert [label for label, _ in pictures] == ["input", "vision encoder: 16 -> 2 kept + 1 merged"]
    base = np.asarray(pictures[0][1])
    assert np.array_equal(base, image)  # the processor's 32 px image, as is
    picture = np.asarray(pictures[1][1])

    def box(p):  # independent of the layout: row-major 8 px cells
        r, c = divmod(p, 4)
        return (8 * r, 8 * r + 8, 8 * c, 8 * c + 8)

    for p in (0, 5):
        assert _is_kept(picture, base, box(p)) and _edge(picture, box(p)) == (255, 255, 255)
    for p in (7, 8, 9):
        assert _is_tinted(picture, base, box(p), slot=0)
    assert _edge(picture, box(7)) == (0, 0, 0)  # the target is outlined
    for p in set(range(16)) - {0, 5, 7, 8, 9}:
        assert _is_dark(picture, base, box(p))


def test_cls_rows_images_and_llm_stages(image):
    """[CLS] (-1) has no cell but is counted; each row / image picks its own records; an
    LLM stage's contextual token carries its target's patch id."""
    cls_first = torch.arange(17) - 1
    encoder = StageRecord("encoder", None, 17, 3, 1, [
        _record(17, dominant=[0, 1, 2], targets=[4], merged={4: 0, 5: 0}, patches=cls_first),  # row 0
        _record(17, dominant=[16], targets=[], merged={}, row=1, image=1, patches=cls_first)])
    llm = StageRecord("llm", 2, 4, 1, 1, [
        _record(4, dominant=[1], targets=[3], merged={2: 0, 3: 0}, patches=[0, 1, 3, 4])])  # ids 0, 1, 3, 4
    layout = vz.square_layout(32, 8, mode="stretch")
    pictures = vz.stage_pictures(image, _report(encoder, llm), 0, layout)
    assert [label for label, _ in pictures] == ["input", "vision encoder: 17 -> 3 kept + 1 merged (+1 off-image)",
                                                "before LLM layer 2: 4 -> 1 kept + 1 merged"]
    base, llm_picture = np.asarray(pictures[0][1]), np.asarray(pictures[2][1])
    assert _is_kept(llm_picture, base, layout.cell(1))
    assert _is_tinted(llm_picture, base, layout.cell(3), 0) and _is_tinted(llm_picture, base, layout.cell(4), 0)
    assert _is_dark(llm_picture, base, layout.cell(0)) and _is_dark(llm_picture, base, layout.cell(2))
    other = vz.stage_pictures(image, _report(encoder, llm), 1, layout)  # row 1: only its encoder record
    assert [label for label, _ in other] == ["input", "vision encoder: 17 -> 1 kept + 0 merged"]
    assert _is_kept(np.asarray(other[1][1]), base, layout.cell(15))
    assert _is_dark(np.asarray(other[1][1]), base, layout.cell(0))


def test_cover_mode_crops_the_centre_as_clip_does():
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 200  # the centre square, what CLIP's shortest-edge resize + centre crop keeps
    base = vz.square_layout(20, 10).render(wide)
    assert base.shape == (20, 20, 3) and base.min() >= 190


# ------------------------------------------------------------------ anyres, frames, merged blocks
def test_anyres_crop_ids_land_in_their_tiles():
    """Tiny LLaVA-NeXT geometry (112 px crops of 8 x 8 patches): a 224 x 224 image is the base
    crop (ids 0..63) and 2 x 2 tiles (crop c holds c * 64 ..), drawn right of the base crop."""
    layout = vz.anyres_layout((224, 224), 112, 14, NEXT_PINPOINTS)
    left = 112 + vz.GAP
    assert (layout.height, layout.width) == (224, left + 224)
    assert layout.cell(9) == (14, 28, 14, 28)  # base crop, row 1 col 1
    assert layout.cell(4 * 64) == (112, 126, left + 112, left + 126)  # crop 4 = bottom-right tile, patch 0
    assert layout.cell(2 * 64 + 7) == (0, 14, left + 112 + 98, left + 224)  # crop 2 = top-right tile, last column
    assert layout.cell(-2) is None and layout.cell(5 * 64) is None  # newline; past the last tile
    wide = vz.anyres_layout((112, 224), 112, 14, NEXT_PINPOINTS)  # pinpoint 112 x 224: 1 x 2 tiles
    assert (wide.height, wide.width) == (112, left + 224)
    assert wide.cell(2 * 64 + 8) == (14, 28, left + 112, left + 126)  # second tile, row 1, col 0


def test_anyres_encoder_records_are_offset_per_crop():
    """The encoder stage records each crop with its own ids 0..63: the k-th record is crop k."""
    rng = np.random.default_rng(1)
    image = rng.integers(40, 216, size=(224, 224, 3), dtype=np.uint8)
    layout = vz.anyres_layout((224, 224), 112, 14, NEXT_PINPOINTS)
    crops = [_record(65, dominant=[], targets=[], merged={}, patches=torch.arange(65) - 1) for _ in range(5)]
    crops[0] = _record(65, dominant=[10], targets=[], merged={}, patches=torch.arange(65) - 1)  # base patch 9
    crops[4] = _record(65, dominant=[1], targets=[3], merged={3: 0, 4: 0}, patches=torch.arange(65) - 1)
    llm = StageRecord("llm", 2, 320, 1, 0, [_record(320, dominant=[4 * 64], targets=[], merged={})])
    pictures = vz.stage_pictures(image, _report(StageRecord("encoder", None, 65, 1, 1, crops), llm), 0, layout)
    assert [label for label, _ in pictures][1:] == ["vision encoder: 325 -> 2 kept + 1 merged",
                                                   "before LLM layer 2: 320 -> 1 kept + 0 merged"]
    base, encoder_picture, llm_picture = (np.asarray(p) for _, p in pictures)
    assert _is_kept(encoder_picture, base, layout.cell(9))
    assert _is_kept(encoder_picture, base, layout.cell(4 * 64))  # crop 4's patch 0: the bottom-right tile
    assert _is_tinted(encoder_picture, base, layout.cell(4 * 64 + 2), 0)
    assert _is_tinted(encoder_picture, base, layout.cell(4 * 64 + 3), 0)
    assert _is_dark(encoder_picture, base, layout.cell(64)) and _is_dark(encoder_picture, base, layout.cell(0))
    assert _is_kept(llm_picture, base, layout.cell(4 * 64)) and _is_dark(llm_picture, base, layout.cell(9))
    assert np.all(encoder_picture[:, 112:112 + vz.GAP] == 255)  # the gap between base crop and tiles stays white


def test_frames_side_by_side_and_merged_blocks():
    frames = np.stack([np.full((28, 28, 3), 30 * (f + 1), dtype=np.uint8) for f in range(3)])
    layout = vz.frames_layout(3, 28, 2)
    assert layout.width == 3 * 28 + 2 * vz.GAP
    assert layout.cell(2 * 4 + 1) == (0, 14, 2 * (28 + vz.GAP) + 14, 2 * (28 + vz.GAP) + 28)  # frame 2, patch 1
    base = layout.render(frames)
    for f in range(3):  # each frame in its own box
        assert np.all(base[:, f * (28 + vz.GAP):f * (28 + vz.GAP) + 28] == 30 * (f + 1))
    merged = vz.merged_layout((1, 4, 6), 14)  # Qwen2.5-VL: 4 x 6 patches -> 2 x 3 merged blocks over 56 x 84
    assert (merged.height, merged.width) == (56, 84)
    assert merged.cell(4) == (28, 56, 28, 56) and merged.cell(6) is None


# ------------------------------------------------------------------ real reports
def test_video_llava_frames_hold_their_own_kept_patches():
    model = tiny_video_llava(seed=0, num_layers=16, image_size=56)
    batch = video_llava_prompt(model, [4], [["video"]])
    frames = np.random.default_rng(2).integers(0, 255, size=(8, 56, 56, 3), dtype=np.uint8)
    layout = vz.layout_for(model, batch, 0, "video")
    assert layout.width == 8 * 56 + 7 * vz.GAP
    with torch.no_grad(), visiondrop.apply(model, "visiondrop", budget=16) as handle:
        model(**batch)
        report = handle.report
        pictures = vz.stage_pictures(frames, report, 0, layout)
    assert len(pictures) == 1 + len(report.stages)
    encoder = report.stage("encoder")
    for frame, record in enumerate(encoder.rows(0)):
        for patch in record.dominant_patches.tolist():
            if patch >= 0:
                y0, y1, x0, x1 = layout.cell(patch)
                assert frame * (56 + vz.GAP) <= x0 < x1 <= frame * (56 + vz.GAP) + 56
    base, picture = np.asarray(pictures[0][1]), np.asarray(pictures[1][1])
    kept = {p for r in encoder.rows(0) for p in r.dominant_patches.tolist() if p >= 0}
    assert kept and all(_is_kept(picture, base, layout.cell(p)) for p in kept)


@pytest.fixture(scope="module")
def shapes_images(tmp_path_factory):
    from visiondrop.data import shapes

    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for scene in shapes.heldout(2):
        path = folder / f"scene{scene.index}.png"
        Image.fromarray(scene.image).save(path)
        paths.append(str(path))
    return paths


def _run(argv):
    commands = argparse.ArgumentParser(prog="visiondrop").add_subparsers(dest="command")
    vz.add_parser(commands)
    parser = commands.choices["visualize"]
    return vz.main(parser.parse_args(argv))


def test_cli_on_the_shipped_model_writes_one_png_per_image(shapes_images, tmp_path, capsys):
    out = tmp_path / "pictures"
    code = _run(["--image", shapes_images[0], "--image", shapes_images[1], "--prompt", "what color is the circle ?",
                 "--methods", "visiondrop,fastv,visionzip", "--budget", "128", "--out", str(out),
                 "--answer-tokens", "1", "--panel-height", "168", "--device", "cpu"])
    assert code == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == sorted(Path(p).name for p in shapes_images)
    assert "wrote" in capsys.readouterr().out
    figure = Image.open(written[0])
    # rows: visiondrop (input + encoder + 3 LLM stages), fastv (input + 1), visionzip (input + encoder)
    assert figure.width > 5 * 168 and 3 * 168 < figure.height < 3 * (168 + 100) + 100  # + title and legend


def test_compare_methods_on_llava_next_checkpoint(tmp_path):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from visiondrop.testing import save_tiny_next_checkpoint

    save_tiny_next_checkpoint(tmp_path)
    model = LlavaNextForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    image = Image.fromarray((np.random.default_rng(1).random((150, 230, 3)) * 255).astype("uint8"))
    figure = vz.compare_methods(model, processor, image, "what is this ?", ["visiondrop", "fastv"], 160,
                                panel_height=112)
    # the picture of this 2 x 2-tile image: base crop + gap + 224 px of tiles, scaled to 112 px high
    picture_width = round((112 + vz.GAP + 224) * 112 / 224)
    assert figure.width >= vz.GAP + 4 * (picture_width + vz.GAP)  # visiondrop: input, encoder, 2+ LLM stages
    assert figure.height > 2 * 112


@pytest.mark.parametrize("argv, parameter", [
    (["--methods", "visiondrop,nosuch"], "--methods"),
    (["--budget", "0"], "--budget"),
    (["--methods", "fastv", "--budget", "32"], "--budget"),  # infeasible: layer 0 keeps all 576
    (["--image", "/nonexistent/scene.png"], "--image"),
    (["--video", "/nonexistent/frames"], "--image/--video"),  # an image and a video at once
    (["--model", "/nonexistent/checkpoint"], "--model"),
])
def test_bad_arguments_exit_2_before_any_compute(argv, parameter, shapes_images, tmp_path, capsys, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("a forward ran before the arguments were checked")

    monkeypatch.setattr(vz, "compare_methods", no_compute)
    base = ["--prompt", "what ?", "--out", str(tmp_path / "o"), "--device", "cpu"]
    if "--image" not in argv:
        base += ["--image", shapes_images[0]]
    assert _run(base + argv) == 2
    assert f"visiondrop: {parameter}:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_method_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def no_model(*args):
        raise AssertionError("model loaded")

    monkeypatch.setattr("visiondrop.inputs.load_model", no_model)
    assert _run(["--image", "x.png", "--prompt", "?", "--methods", "nosuch", "--out", str(tmp_path)]) == 2
    assert "--methods" in capsys.readouterr().err


def test_compare_methods_runs_on_llava_onevision_and_qwen2_5_vl():
    """Smoke: the layouts for OneVision (anyres on SigLIP, packed LLM layout) and
    Qwen2.5-VL (merged 2 x 2 blocks) render every stage of two methods end to end."""
    from tiny_qwen2_5_vl import TinyQwenProcessor, tiny_image_processor, tiny_qwen, tiny_tokenizer

    from visiondrop.testing import tiny_llava_onevision, tiny_onevision_processor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    cases = [(tiny_llava_onevision(), tiny_onevision_processor(), 80),
             (tiny_qwen(), TinyQwenProcessor(tiny_tokenizer(), tiny_image_processor()), 16)]
    for model, processor, budget in cases:
        one = vz.compare_methods(model, processor, image, "what is this ?", ["fastv"], budget)
        two = vz.compare_methods(model, processor, image, "what is this ?", ["visiondrop", "fastv"], budget)
        assert two.size[1] > one.size[1] and two.size[0] >= one.size[0]  # a row per method
