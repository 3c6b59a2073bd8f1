"""The README's first command-line block runs as written on the shipped model (issue 22): every
line, in a fresh folder, through the console script's own entry point; `python -c` lines run
as Python."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from visiondrop.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def shipped_model_block() -> list[str]:
    text = README.read_text()
    start = text.index("On the shipped shapes-llava, as written")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_block_is_there_and_names_every_tool():
    commands = " ".join(shipped_model_block())
    for tool in ("generate", "visualize", "methods", "fidelity", "bias", "study", "eval run", "eval score", "flops"):
        assert f"visiondrop {tool}" in commands


def test_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for line in shipped_model_block():
        for command in line.split(" && "):
            words = shlex.split(command)
            if words[:2] == ["python", "-c"]:
                exec(words[2], {})  # noqa: S102 (the README's own one-liner)
                continue
            assert words[0] == "visiondrop", command
            if words[1:] == ["--version"]:
                with pytest.raises(SystemExit) as done:
                    main(words[1:])
                assert done.value.code == 0
                continue
            code = main(words[1:])
            assert code == 0, (command, capsys.readouterr().err[-2000:])
    assert (tmp_path / "scene.png").is_file() and (tmp_path / "shapes.jsonl").is_file()
    assert (tmp_path / "visiondrop-visualize" / "scene.png").is_file()


def test_readme_python_example_runs_as_written(capsys):
    text = README.read_text()
    start = text.index("On the shipped shapes-llava (runs as written")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    exec(code, {})  # noqa: S102 (the README's own example)
    out = capsys.readouterr().out
    assert "vision encoder:" in out and "layer average (row 0): 64.00" in out
