import shutil
from pathlib import Path

import pytest
import torch

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
