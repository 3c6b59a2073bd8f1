"""A newcomer's first hour (issue 22): the command line answers help and argument errors without
loading torch, says its version, and turns the usual mistakes into one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visiondrop.cli import main


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["eval", "run", "--help"], ["bias", "--budget"],
                                  ["nosuch"], ["--version"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = f"from visiondrop.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    loaded = _modules_after(code)
    assert "torch" not in loaded and "transformers" not in loaded


def test_version(capsys):
    import visiondrop

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"visiondrop {visiondrop.__version__}"


def test_the_package_loads_its_api_on_first_use():
    assert "torch" not in _modules_after("import visiondrop")
    loaded = _modules_after("import visiondrop\nvisiondrop.apply\nvisiondrop.models.adapter_for")
    assert "torch" in loaded and "visiondrop.api" in loaded


SHIPPED = "src/visiondrop/zoo/shapes-llava"
NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is there")


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    path = tmp_path / "picture.png"
    Image.new("RGB", (48, 48), "white").save(path)
    return str(path)


MISTAKES = [  # (argv with {image} and {empty} filled in, the flag the one-line error names)
    (["generate", "--model", "./no-such-model", "--image", "{image}", "--prompt", "hi"], "--model: no such folder"),
    (["generate", "--model", "{empty}", "--image", "{image}", "--prompt", "hi"], "--model: '"),
    (["generate", "--model", "no-such-org/no-such-model", "--image", "{image}", "--prompt", "hi"],
     "--model: cannot load 'no-such-org/no-such-model' (not a local folder; the hub is not reachable"),
    (["generate", "--model", SHIPPED, "--image", "{image}", "--prompt", "hi", "--attn", "nosuch"], "--attn:"),
    (["generate", "--model", SHIPPED, "--image", "{image}", "--prompt", "hi", "--method", "nosuch"], "--method:"),
    (["generate", "--model", SHIPPED, "--image", "nope.png", "--prompt", "hi"], "--image:"),
    (["generate", "--model", SHIPPED, "--image", "{image}", "--prompt", "hi", "--max-new-tokens", "0"],
     "--max-new-tokens:"),
    (["visualize", "--model", "./nope", "--image", "{image}", "--prompt", "hi"], "--model: no such folder"),
    (["eval", "run", "--dataset", "nosuch", "--out", "{empty}/p.jsonl"], "dataset: unknown name"),
    (["eval", "run", "--dataset", "shapes"], "--out: required"),
    (["eval", "run", "--dataset", "shapes", "--out", "{empty}/p.jsonl", "--attn", "nope"], "--attn:"),
    (["eval", "score", "nope.jsonl"], "nope.jsonl: no such predictions file"),
    (["flops", "--config", "nosuch"], "--config: 'nosuch' is not one of the built-in configurations"),
    (["flops", "--methods", "nosuch"], "--methods:"),
    (["flops", "--image-size", "big"], "--image-size:"),
    (["bench", "--methods", "nosuch"], "--methods:"),
    (["bench", "--config", "llava-1.5-7b", "--device", "cpu"], "--config: llava-1.5-7b with random weights needs"),
    (["fidelity", "--budgets", "x"], "--budgets:"),
    (["fidelity", "--proxy", "nope"], "--proxy: unknown 'nope'; available: shapes-llava, shapes-llava-2"),
    (["demo", "--proxy", "nope", "--out", "{empty}/d.png"], "--proxy: unknown 'nope'"),
]
CUDA_MISTAKES = [
    ["generate", "--model", SHIPPED, "--image", "{image}", "--prompt", "hi", "--device", "cuda"],
    ["visualize", "--image", "{image}", "--prompt", "hi", "--device", "cuda"],
    ["eval", "run", "--dataset", "shapes", "--out", "{empty}/p.jsonl", "--device", "cuda"],
    ["fidelity", "--device", "cuda"],
    ["bias", "--device", "cuda"],
]


def _filled(argv, picture, tmp_path):
    (tmp_path / "empty").mkdir(exist_ok=True)
    return [a.replace("{image}", picture).replace("{empty}", str(tmp_path / "empty")) for a in argv]


def _one_line_error(argv, capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    return captured.err.strip().splitlines()[0]


@pytest.mark.parametrize(("argv", "names"), MISTAKES, ids=[" ".join(m[0][:3]) + f" {m[1][:12]}" for m in MISTAKES])
def test_a_mistake_is_one_line_naming_the_flag(argv, names, picture, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = _one_line_error(_filled(argv, picture, tmp_path), capsys)
    assert first.startswith(f"visiondrop: {names}"), first


@NO_CUDA
@pytest.mark.parametrize("argv", CUDA_MISTAKES, ids=[a[0] for a in CUDA_MISTAKES])
def test_cuda_asked_for_without_cuda(argv, picture, tmp_path, capsys):
    first = _one_line_error(_filled(argv, picture, tmp_path), capsys)
    assert first == "visiondrop: --device: 'cuda' asked for, but CUDA is not available", first


def test_dataset_list_needs_no_out_and_says_what_each_reads(capsys):
    from visiondrop.eval.datasets import DATASETS

    assert main(["eval", "run", "--dataset", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(DATASETS)
    assert any(line.startswith("pope: ") and "--data questions=..." in line for line in lines)


def test_table4_says_which_cell_counts_newlines(capsys):
    assert main(["flops", "--table4"]) == 0
    assert "48 newline tokens" in capsys.readouterr().out


def test_bench_files_are_named_after_the_checkpoint_folder():
    from visiondrop.bench.latency import model_label

    assert model_label("../checkpoints/my-llava/") == "my-llava"
    assert model_label("llava-hf/llava-1.5-7b-hf") == "llava-hf_llava-1.5-7b-hf"
    assert model_label("llava-1.5-7b") == "llava-1.5-7b"


def test_a_pruned_generate_prints_no_deprecation_warning():
    import logging as std_logging

    import torch
    from transformers.utils import logging

    import visiondrop
    from visiondrop.testing import image_prompt, tiny_llava

    model = tiny_llava()
    batch = image_prompt(model, [5, 9])
    messages: list[str] = []
    handler = std_logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    library = logging.get_logger("transformers")  # every transformers logger reports here
    library.addHandler(handler)
    logging.get_logger("transformers").warning_once.cache_clear()  # once per process: forget earlier calls
    try:
        with torch.no_grad(), visiondrop.apply(model, budget=64):
            model.generate(**batch, max_new_tokens=3)
    finally:
        library.removeHandler(handler)
    assert not [m for m in messages if "deprecated" in m]
