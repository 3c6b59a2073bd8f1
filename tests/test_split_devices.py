"""A model split across devices by accelerate (device_map): each stage computes on the device
of the layer that scores it, and its state follows. The CPU tests check the pieces; the run
across a GPU and the CPU (every method, LLaVA and LLaVA-NeXT) is scripts/split_check.py,
recorded in docs/multi-gpu.md, and runs here too where CUDA and accelerate are present."""

import types

import pytest
import torch

from visiondrop.core.layout import Segment
from visiondrop.models.decoder import Layout, execution_device


def test_execution_device_follows_accelerate_hook_then_parameters():
    layer = torch.nn.Linear(2, 2)
    hidden = torch.zeros(1)
    assert execution_device(layer, hidden) == torch.device("cpu")
    layer._hf_hook = types.SimpleNamespace(execution_device=0)
    assert execution_device(layer, hidden) == torch.device("cuda", 0)
    layer._hf_hook = types.SimpleNamespace(execution_device="cpu")
    assert execution_device(layer, hidden) == torch.device("cpu")
    offloaded = torch.nn.Linear(2, 2, device="meta")  # weights elsewhere, no hook: the input decides
    assert execution_device(offloaded, hidden) == hidden.device


def test_layout_to_its_own_device_is_the_same_object_and_keeps_row_counts():
    layout = Layout(torch.ones(2, 5), torch.arange(10).view(2, 5), (Segment(0, 1, 3), Segment(1, 0, 2)), (0, 1),
                    [torch.arange(3), torch.arange(2)], torch.arange(10).view(2, 5))
    assert layout.to(torch.device("cpu")) is layout
    assert layout.row_counts.tolist() == [3, 2]


def _split_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "split_check.py"
    spec = importlib.util.spec_from_file_location("split_check", path)
    split_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_check)
    return split_check


@pytest.mark.parametrize("second", ["cpu", 1])
def test_split_check_device_map_puts_the_second_half_on_the_second_device(second):
    from visiondrop.testing import tiny_llava

    model = tiny_llava(num_layers=8)
    placement = _split_check().device_map(model, 3, second)
    layers = [placement[f"model.language_model.layers.{i}"] for i in range(8)]
    assert layers == [0, 0, 0] + [second] * 5
    assert placement["model.language_model.norm"] == placement["lm_head"] == second
    assert placement["model.vision_tower"] == placement["model.language_model.embed_tokens"] == 0
    # every parameter of the model is placed by exactly one entry
    for name, _ in model.named_parameters():
        owners = [key for key in placement if name == key or name.startswith(key + ".")]
        assert len(owners) == 1, (name, owners)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to split across")
def test_split_across_devices_equals_one_device():
    """GPU 0 + CPU, and GPU 0 + GPU 1 where there are two GPUs."""
    pytest.importorskip("accelerate")
    assert _split_check().main() == 0
