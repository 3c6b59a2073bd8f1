"""shapes-llava-2's pieces at smoke size (issue 21): the training script end to end (seconds,
CPU), the model and processor it saves, answering ShapesVQA-2 (multi-token answers, exact
match), and the proxy-gates script on the shipped shapes-llava."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from visiondrop.data import shapes2
from visiondrop.eval import vqa2

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *argv: str) -> None:
    old = sys.argv
    sys.argv = [str(SCRIPTS / name), *argv]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(SCRIPTS / name), run_name="__main__")
        assert done.value.code == 0
    finally:
        sys.argv = old


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-llava-2")
    run_script("train_shapes_llava2.py", "--out", str(out), "--smoke")
    return out


def test_training_script_saves_a_loadable_checkpoint_in_small_shards(smoke_model):
    from visiondrop.zoo.shapes_llava2 import load_shapes_llava2

    shards = sorted(smoke_model.glob("model-*.safetensors"))
    assert len(shards) >= 3 and all(p.stat().st_size <= 16 * 2**20 for p in shards)  # a device call returns them
    model, processor = load_shapes_llava2(smoke_model)
    assert len(model.model.language_model.layers) == 32
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    log = json.loads((smoke_model / "training_log.json").read_text())
    assert list(log["stages"]) == ["vision", "text", "align", "instruct"]
    assert [e["stage"] for e in log["log"]] == ["vision", "text", "align", "instruct"]
    assert set(log["heldout_accuracy"]) == {*shapes2.KINDS, "overall"}
    assert processor.tokenizer("<s> a chat")["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<s>")


def test_prompt_starts_with_bos_and_the_system_prompt():
    from visiondrop.zoo.shapes_llava2 import PROMPT, shapes2_tokenizer

    tokens = shapes2_tokenizer().tokenize(PROMPT.format(question="how many rings are there ?"))
    assert tokens[0] == "<s>" and tokens[1:34] == shapes2.SYSTEM_PROMPT.split()
    assert "<unk>" not in tokens and tokens[-1] == "ASSISTANT:"


def test_answers_are_whole_multi_token_strings(smoke_model):
    from visiondrop.zoo.shapes_llava2 import PROMPT, load_shapes_llava2

    model, processor = load_shapes_llava2(smoke_model)
    items = vqa2.items_of(shapes2.heldout(1))
    answers = vqa2.answer(model, processor.tokenizer, PROMPT, items[:3], batch_size=2)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    caption = next(i for i in items if i.question.kind == "caption")
    assert len(caption.question.answer.split()) > 3
    right = [i.question.answer for i in items]
    assert vqa2.accuracy_by_kind(items, right)["overall"] == 1.0
    cut = [a.rsplit(" ", 1)[0] if len(a.split()) > 1 else "nope" for a in right]  # one token short: wrong
    assert vqa2.accuracy_by_kind(items, cut)["overall"] == 0.0


def test_gates_script_reports_every_gate_on_shapes_llava(tmp_path):
    run_script("proxy_gates.py", "--proxy", "1", "--questions", "12", "--prompts", "2", "--device", "cpu",
               "--out", str(tmp_path))
    result = json.loads((tmp_path / "gates-shapes-llava.json").read_text())
    assert sorted(result["gates"]) == ["1", "2", "3", "4", "5", "6"]
    assert all(isinstance(g["passed"], bool) for g in result["gates"].values())
    assert len(result["gates"]["1"]["image_share"]) == 8  # one per LM layer
    table = (tmp_path / "gates-shapes-llava.md").read_text()
    assert table.count("\n| ") == 7  # header + six gates


@pytest.mark.parametrize("path", ["gates-shapes-llava", "shapes-llava-2-attempts/gates-shapes-llava-2"])
def test_committed_gate_tables_are_their_json(path):
    proxy = Path(__file__).resolve().parents[1] / "docs" / "proxy"
    module = runpy.run_path(str(SCRIPTS / "proxy_gates.py"), run_name="gates")
    result = json.loads((proxy / f"{path}.json").read_text())
    table = module["to_markdown"](result)
    assert (proxy / f"{path}.md").read_text().strip() == table
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 6 and all(row in (proxy / "README.md").read_text() for row in rows)


def test_vision_stage_in_one_call_then_the_rest_in_the_next(tmp_path):
    """The two-call recipe: a device call lasts 10 minutes, and only the tower (11 MB) fits
    beside the working tree on the way back in."""
    from safetensors.torch import load_file

    from visiondrop.zoo.shapes_llava2 import load_shapes_llava2

    first, second = tmp_path / "vision", tmp_path / "model"
    run_script("train_shapes_llava2.py", "--out", str(first), "--smoke", "--stage", "vision")
    tower_file = first / "vision_tower.safetensors"
    assert tower_file.is_file() and not (first / "config.json").exists()
    saved = load_file(tower_file)
    run_script("train_shapes_llava2.py", "--out", str(second), "--smoke", "--vision-from", str(tower_file))
    model, _ = load_shapes_llava2(second)
    tower = model.model.vision_tower.state_dict()
    for name, value in saved.items():  # the later stages kept the loaded tower (saved in fp16)
        assert torch.allclose(tower[name], value, atol=2e-3, rtol=1e-2), name
    log = json.loads((second / "training_log.json").read_text())
    assert log["stages"]["vision"]["loaded_from"] == str(tower_file)
    assert [e["stage"] for e in log["log"]][:1] == ["vision"] and "--stage vision" in \
        log["stages"]["vision"]["separate_call"]


def test_init_from_trains_an_earlier_checkpoint_on(smoke_model, tmp_path):
    """A later device call goes on from the checkpoint an earlier one returned: the tower stays
    as it was, stages given 0 seconds are skipped, and the earlier record leads the log."""
    from visiondrop.zoo.shapes_llava2 import load_shapes_llava2

    out = tmp_path / "more"
    run_script("train_shapes_llava2.py", "--out", str(out), "--smoke", "--init-from", str(smoke_model),
               "--text-seconds", "0", "--align-seconds", "0")
    before, _ = load_shapes_llava2(smoke_model)
    after, _ = load_shapes_llava2(out)
    for (name, old), new in zip(before.model.vision_tower.state_dict().items(),
                                after.model.vision_tower.state_dict().values()):
        assert torch.equal(old, new), name
    lm_old, lm_new = before.model.language_model.state_dict(), after.model.language_model.state_dict()
    assert any(not torch.equal(lm_old[k], lm_new[k]) for k in lm_old)  # instruct trained it on
    log = json.loads((out / "training_log.json").read_text())
    assert log["stages"]["text"] == {"skipped": True} and log["stages"]["align"] == {"skipped": True}
    assert log["stages"]["instruct"]["steps"] >= 1
    assert log["earlier_commands"] == [json.loads((smoke_model / "training_log.json").read_text())["command"]]
    assert [e["stage"] for e in log["log"]] == ["vision", "text", "align", "instruct", "instruct"]


def test_init_from_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        runpy_args = [str(SCRIPTS / "train_shapes_llava2.py"), "--out", str(tmp_path / "x"), "--smoke",
                      "--init-from", str(tmp_path)]
        old, sys.argv = sys.argv, runpy_args
        try:
            runpy.run_path(runpy_args[0], run_name="__main__")
        finally:
            sys.argv = old
    assert stop.value.code == 2 and "--init-from" in capsys.readouterr().err


def test_gate_4_reads_a_tower_file_alone(tmp_path):
    """The tower's gate before any LM is trained (a --stage vision call's file)."""
    run_script("train_shapes_llava2.py", "--out", str(tmp_path / "v"), "--smoke", "--stage", "vision")
    run_script("proxy_gates.py", "--tower", str(tmp_path / "v" / "vision_tower.safetensors"), "--prompts", "2",
               "--device", "cpu", "--out", str(tmp_path / "g"))
    gate = json.loads((tmp_path / "g" / "gate4-vision_tower.json").read_text())["gates"]["4"]
    assert 0 < gate["cls_top1pct_share"] <= 1 and 0 <= gate["high_norm_fraction"] <= 1
    assert gate["passed"] == (gate["cls_top1pct_share"] >= 0.3 and 0.005 <= gate["high_norm_fraction"] <= 0.1)


def test_committed_tower_gate_is_below_its_threshold():
    """docs/proxy quotes this file: run 3's tower fails gate 4 (no concentrated CLS attention)."""
    attempts = Path(__file__).resolve().parents[1] / "docs" / "proxy" / "shapes-llava-2-attempts"
    path = attempts / "gate4-vision_tower.json"
    gate = json.loads(path.read_text())["gates"]["4"]
    assert gate["passed"] is False and gate["cls_top1pct_share"] < 0.3
    assert "0.20" in (path.parents[1] / "README.md").read_text()


def test_probe_tower_scores_each_input_and_checks_its_arguments(tmp_path, capsys):
    run_script("train_shapes_llava2.py", "--out", str(tmp_path / "v"), "--smoke", "--stage", "vision")
    tower = str(tmp_path / "v" / "vision_tower.safetensors")
    run_script("probe_tower.py", "--tower", tower, "--train", "2", "--test", "1", "--out", str(tmp_path / "p"))
    result = json.loads((tmp_path / "p" / "probe-vision_tower.json").read_text())
    assert set(result["accuracy"]) == {"tower", "random tower", "raw pixels", "shapes-llava's tower"}
    assert all(0 <= v <= 1 for v in result["accuracy"].values()) and result["object_patches_tested"] > 0
    for bad in (["--tower", str(tmp_path / "nothing")], ["--tower", tower, "--train", "0"]):
        with pytest.raises(SystemExit) as stop:
            old, sys.argv = sys.argv, [str(SCRIPTS / "probe_tower.py"), *bad]
            try:
                runpy.run_path(str(SCRIPTS / "probe_tower.py"), run_name="__main__")
            finally:
                sys.argv = old
        assert stop.value.code == 2
    assert "--tower" in capsys.readouterr().err


def test_labels_name_the_shape_under_each_patch():
    module = runpy.run_path(str(SCRIPTS / "probe_tower.py"), run_name="probe")
    scene = shapes2.heldout(1)[0]
    labels = module["labels"]([scene]).reshape(shapes2.NUM_PATCHES, shapes2.NUM_PATCHES)
    none = len(shapes2.SHAPES)
    owner = scene.patch_owner(min_cover=0.5)
    for index, item in enumerate(scene.objects):
        if (owner == index).any():
            assert (labels[torch.from_numpy(owner == index)] == sorted(shapes2.SHAPES).index(item.shape)).all()
    assert (labels[torch.from_numpy(owner < 0)] == none).all()


def test_region_data_pairs_each_object_s_patches_with_its_phrase(tmp_path):
    module = runpy.run_path(str(SCRIPTS / "train_shapes_llava2.py"), run_name="train")
    data = module["build_data"](0, 2, 1, tmp_path)
    for index in range(2):
        scene = shapes2.render_scene(0, index)
        owner = data["region_owner"][index]
        for k, item in enumerate(scene.objects):
            phrase = data["region_phrases"][index, k]
            assert [module["word_list"]()[t] for t in phrase[:3]] == item.name.split()
            assert data["region_present"][index, k] == (owner == k).any()
        assert data["region_present"][index].sum() >= 3  # most objects own patches
        assert (owner < len(scene.objects)).all()  # sign patches carry no phrase


def test_region_loss_trains_and_logs_its_accuracy(tmp_path):
    run_script("train_shapes_llava2.py", "--out", str(tmp_path), "--smoke", "--stage", "vision",
               "--region-weight", "0.5")
    entries = json.loads((tmp_path / "vision_log.json").read_text())["log"]
    assert entries and all("region_acc" in e and 0 <= e["region_acc"] <= 1 for e in entries)
