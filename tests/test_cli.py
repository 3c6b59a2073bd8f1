"""The command line on a tiny checkpoint written to disk (from_pretrained path)."""

import numpy as np
import pytest
from PIL import Image

from visiondrop.cli import main
from visiondrop.testing import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llava")
    save_tiny_checkpoint(path)
    image = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((200, 300, 3)) * 255).astype("uint8")).save(image)
    return str(path), str(image)


def test_generate_pruned_prints_answer_and_stage_counts(checkpoint, capsys):
    path, image = checkpoint
    code = main(["generate", "--model", path, "--image", image, "--prompt", "what is this ?",
                 "--budget", "16", "--max-new-tokens", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "577 -> 21 dominant + 3 contextual" in out
    assert "tokens per layer (row 0): [24, 24, 18, 18, 13, 13, 9, 9]" in out
    assert len(out.splitlines()[0].split()) == 4  # four generated words


def test_generate_full_runs_unpruned(checkpoint, capsys):
    path, image = checkpoint
    assert main(["generate", "--model", path, "--image", image, "--prompt", "what ?", "--budget", "full",
                 "--max-new-tokens", "2", "--device", "cpu"]) == 0
    assert "full model: no pruning" in capsys.readouterr().out


def test_generate_bad_budget_is_a_clear_error(checkpoint, capsys):
    path, image = checkpoint
    assert main(["generate", "--model", path, "--image", image, "--prompt", "x", "--budget", "999",
                 "--device", "cpu"]) == 2
    assert "budget must be in [1, 576]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--model", path, "--image", image, "--prompt", "x", "--budget", "lots"])


def test_generate_missing_image(checkpoint, capsys):
    path, _ = checkpoint
    assert main(["generate", "--model", path, "--image", "/nonexistent.png", "--prompt", "x"]) == 2
    assert "--image" in capsys.readouterr().err


def test_methods_lists_visiondrop(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("visiondrop ") for line in lines)
    assert any(line.startswith("random ") for line in lines)


@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory):
    from visiondrop.testing import save_tiny_next_checkpoint

    path = tmp_path_factory.mktemp("tiny-llava-next")
    save_tiny_next_checkpoint(path)
    image = tmp_path_factory.mktemp("img-next") / "wide.png"
    Image.fromarray((np.random.default_rng(1).random((150, 230, 3)) * 255).astype("uint8")).save(image)
    return str(path), str(image)


def test_generate_llava_next_prunes_every_crop(next_checkpoint, capsys):
    path, image = next_checkpoint
    code = main(["generate", "--model", path, "--image", image, "--prompt", "what is this ?",
                 "--budget", "40", "--max-new-tokens", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    # budget 40 over 5 crops: 8 per crop, 12 (10 + 2) enter the LLM from each of them;
    # the processor tiles this 150 x 230 image 2 x 2 (a base + 4 tiles): 60 at LM entry
    assert "65 -> 10 dominant + 2 contextual" in out
    assert "tokens per layer (row 0): [60, 60, 45, 45, 30, 30, 25, 25]" in out
    assert main(["generate", "--model", path, "--image", image, "--prompt", "x", "--budget", "42",
                 "--device", "cpu"]) == 2
    assert "multiple of 5" in capsys.readouterr().err
