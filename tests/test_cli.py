"""The command line on a tiny checkpoint written to disk (from_pretrained path)."""

from pathlib import Path

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


def _save_tiny_video_llava_checkpoint(path) -> None:
    """A tiny Video-LLaVA with a word-level tokenizer (``<image>``, ``<video>``) and its
    image processor; without torchvision the CLI encodes videos frame by frame."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, VideoLlavaImageProcessor

    from visiondrop.testing import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, tiny_video_llava

    words = ["<pad>", "<unk>", "<s>", "</s>", "USER:", "ASSISTANT:", "?", "what", "is", "this", "x"]
    vocab = {word: i for i, word in enumerate(words + [f"w{i}" for i in range(IMAGE_TOKEN_ID - len(words))])}
    vocab.update({"<image>": IMAGE_TOKEN_ID, "<video>": VIDEO_TOKEN_ID})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>", extra_special_tokens={"image_token": "<image>", "video_token": "<video>"}
                            ).save_pretrained(path)
    model = tiny_video_llava(seed=0, num_layers=8, image_size=56)
    model.config.text_config.eos_token_id = 3
    model.save_pretrained(path)
    VideoLlavaImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(path)


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    from transformers import AutoImageProcessor

    path = tmp_path_factory.mktemp("tiny-video-llava")
    _save_tiny_video_llava_checkpoint(path)
    try:
        AutoImageProcessor.from_pretrained(path)
    except ImportError as error:  # transformers < 5.23 loads this image processor with torchvision only
        pytest.skip(f"the image processor cannot load here: {str(error).strip().splitlines()[0]}")
    frames = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(2)
    for i in range(12):
        Image.fromarray((rng.random((60, 80, 3)) * 255).astype("uint8")).save(frames / f"frame{i:03d}.png")
    array = tmp_path_factory.mktemp("npy") / "clip.npy"
    np.save(array, (rng.random((9, 60, 80, 3)) * 255).astype("uint8"))
    return str(path), str(frames), str(array)


def test_generate_video_llava_video(video_checkpoint, capsys):
    path, frames, array = video_checkpoint
    code = main(["generate", "--model", path, "--video", frames, "--prompt", "what is this ?",
                 "--budget", "16", "--max-new-tokens", "3", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # 16 over 8 frames: 2 per frame, and VisionDrop lets 3 x 2 = 6 enter per frame (5 + 1)
    assert "[video, per frame:" in captured.out
    assert "vision encoder:   17 -> 5 dominant + 1 contextual" in captured.out
    assert "tokens per layer (row 0): [48, 48," in captured.out


def test_generate_video_llava_image_and_video_from_npy(video_checkpoint, capsys):
    path, frames, array = video_checkpoint
    image = str(sorted(Path(frames).iterdir())[0])
    code = main(["generate", "--model", path, "--image", image, "--video", array, "--prompt", "what is this ?",
                 "--budget", "16", "--max-new-tokens", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the image's 16 tokens all enter (its 1.5 x B entry exceeds them), beside the video's 48
    assert "tokens per layer (row 0): [64, 64," in captured.out


@pytest.mark.parametrize("arguments, parameter, message", [
    ([], "--image/--video", "give an image, a video, or both"),
    (["--video", "FEW"], "--video", "holds 3 frames; the model takes 8"),
    (["--video", "/nonexistent"], "--video", "neither a folder"),
    (["--video", "BAD_NPY"], "--video", "must hold a uint8 array"),
    (["--video", "FRAMES", "--frames", "4"], "--frames", "this model takes 8 frames per video, got 4"),
])
def test_generate_video_errors(video_checkpoint, tmp_path, capsys, arguments, parameter, message):
    path, frames, _ = video_checkpoint
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((8, 4, 4), dtype=np.float32))
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(few / f"{i}.png")
    arguments = [{"FRAMES": frames, "BAD_NPY": str(bad), "FEW": str(few)}.get(a, a) for a in arguments]
    code = main(["generate", "--model", path, "--prompt", "x", "--budget", "16", "--device", "cpu", *arguments])
    err = capsys.readouterr().err
    assert code == 2
    assert f"visiondrop: {parameter}" in err and message in err, err


def _unreadable_npy(path, kind: str) -> None:
    """A ``.npy`` that numpy cannot give as one array without pickle."""
    if kind == "object":
        np.save(path, np.array([np.zeros(3), "frame"], dtype=object), allow_pickle=True)
    elif kind in ("truncated", "header-only"):
        np.save(path, np.zeros((9, 8, 8, 3), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:300 if kind == "truncated" else 40])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-npy":
        path.write_bytes(b"frames" * 20)
    else:  # an .npz archive under a .npy name
        with path.open("wb") as stream:
            np.savez(stream, frames=np.zeros((9, 8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("kind", ["object", "truncated", "header-only", "empty", "not-npy", "npz"])
def test_generate_unreadable_npy_video_is_a_named_error(video_checkpoint, tmp_path, capsys, kind):
    path, _, _ = video_checkpoint
    bad = tmp_path / "clip.npy"
    _unreadable_npy(bad, kind)
    code = main(["generate", "--model", path, "--video", str(bad), "--prompt", "x", "--budget", "16",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"visiondrop: --video: {str(bad)!r}: ") and err.count("\n") == 1, err
