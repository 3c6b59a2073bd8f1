import shutil
from pathlib import Path

import pytest
import torch
from helpers import save_tiny_shapes_llava2

from visiondrop.testing import tiny_llava

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def model():
    return tiny_llava(seed=0)


@pytest.fixture(scope="session")
def eager_model():
    return tiny_llava(seed=0, attn_implementation="eager")


@pytest.fixture(scope="session")
def siglip_model():
    return tiny_llava(seed=0, vision_tower="siglip", image_size=224, patch_size=14)


@pytest.fixture(scope="session")
def pope(tmp_path_factory):
    """`eval run` arguments for the POPE fixture, its deliberately missing image supplied."""
    root = tmp_path_factory.mktemp("pope")
    shutil.copytree(Path(__file__).parent / "fixtures" / "eval" / "pope", root, dirs_exist_ok=True)
    images = root / "val2014"
    shutil.copy(images / "COCO_val2014_000000210789.jpg", images / "COCO_val2014_000000016631.jpg")
    return ["--dataset", "pope", "--data", f"questions={root}", "--data", f"images={images}"]


@pytest.fixture(scope="session")
def tiny_shapes_llava2(tmp_path_factory) -> str:
    """A random shapes-llava-2 checkpoint folder (its answers: 24 tokens of noise)."""
    return save_tiny_shapes_llava2(tmp_path_factory.mktemp("tiny-shapes-llava-2"))


@pytest.fixture(scope="session")
def yes_shapes_llava2(tmp_path_factory) -> str:
    """A shapes-llava-2 checkpoint folder that answers "yes" to everything."""
    return save_tiny_shapes_llava2(tmp_path_factory.mktemp("yes-shapes-llava-2"), answers_yes=True)
