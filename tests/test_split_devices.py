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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to split across")
def test_split_across_gpu_and_cpu_equals_one_device():
    pytest.importorskip("accelerate")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "split_check.py"
    spec = importlib.util.spec_from_file_location("split_check", path)
    split_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_check)
    assert split_check.main() == 0
