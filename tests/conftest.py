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
