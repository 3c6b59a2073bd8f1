"""`visiondrop bench --mode data-parallel` (bench/parallel.py): bookkeeping on the CPU, with
processes started by torchrun as on a multi-GPU host (no timing asserted)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import free_port

from visiondrop.bench import latency, parallel
from visiondrop.cli import main
from visiondrop.testing import save_tiny_checkpoint, tiny_llava

ARGS = ["bench", "--mode", "data-parallel", "--methods", "visiondrop,visionzip", "--budget", "128",
        "--throughput-batches", "2,3", "--repeats", "2", "--warmup", "1", "--steps", "2", "--dtype", "float32",
        "--device", "cpu"]


def test_group_throughput_waits_for_the_slowest_process():
    assert parallel.group_throughput([0.5, 2.0], images_per_process=4) == 4.0  # 8 images in 2 s
    assert parallel.group_throughput([1.0], images_per_process=3) == 3.0
    for bad in ([], [1.0, 0.0]):
        with pytest.raises(ValueError, match="elapsed times must be positive"):
            parallel.group_throughput(bad, 4)


def test_place_from_the_launcher_environment():
    assert parallel.Place.from_env({}) == parallel.Place(0, 1, 0)
    assert parallel.Place.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == parallel.Place(3, 4, 1)
    with pytest.raises(ValueError, match="RANK=2 is outside WORLD_SIZE=2"):
        parallel.Place.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        parallel.Place.from_env({"RANK": "zero"})


def test_process_device():
    assert parallel.process_device("cpu", 3) == torch.device("cpu")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert parallel.process_device("cuda", count + 1) == torch.device("cuda", (count + 1) % count)
    else:
        with pytest.raises(ValueError, match="device: cuda requested but no GPU"):
            parallel.process_device("cuda", 0)


def test_bench_inputs_hold_one_image_of_placeholders_per_row():
    """Random text from a small vocabulary must not draw the image token (one more placeholder)."""
    model = tiny_llava(num_layers=2, image_size=112)
    inputs = latency.make_inputs(model, batch=64, text_tokens=200)
    per_row = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert per_row.tolist() == [64] * 64


@pytest.fixture(scope="module")
def two_world_sizes(tmp_path_factory):
    """One process, then two under torchrun, into one folder; the tiny checkpoint on the CPU."""
    root = tmp_path_factory.mktemp("dp")
    save_tiny_checkpoint(root / "tiny")
    out = root / "out"
    args = [*ARGS, "--config", str(root / "tiny"), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for launcher in ([], ["-m", "torch.distributed.run", "--nproc-per-node", "2", f"--master-port={free_port()}"]):
        done = subprocess.run([sys.executable, *launcher, "-m", "visiondrop.cli", *args], capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    stem = parallel._stem({"model": str(root / "tiny"), "budget": 128})
    return out, stem


def test_each_world_size_is_recorded(two_world_sizes):
    out, stem = two_world_sizes
    runs = parallel.load_runs(out, stem)
    assert [run["world_size"] for run in runs] == [1, 2]
    one, two = runs
    assert [p["rank"] for p in two["processes"]] == [0, 1] and two["devices"] == 1  # both on the CPU
    for run in runs:
        assert list(run["figures"]) == ["full", "visiondrop", "visionzip", "ideal"]
        for name, by_key in run["figures"].items():
            assert set(by_key) == {"images_per_s@2", "images_per_s@3"}
            for key, figure in by_key.items():
                assert len(figure["samples"]) == 2 and figure["median"] > 0  # repeats, warm-up dropped
                assert len(run["per_process"][name][key]) == run["world_size"]


def test_table_and_plot_cover_both_world_sizes(two_world_sizes):
    out, stem = two_world_sizes
    table = (out / f"{stem}.md").read_text()
    assert "| variant | 1 proc. img/s b2 | 1 proc. img/s b3 | 2 proc. img/s b2 | 2 proc. img/s b3 |" in table
    one, two = parallel.load_runs(out, stem)
    row = next(line for line in table.splitlines() if line.startswith("| visiondrop |"))
    value = two["figures"]["visiondrop"]["images_per_s@3"]["median"]
    scaling = value / (2 * one["figures"]["visiondrop"]["images_per_s@3"]["median"])
    assert f"{value:.1f} ({scaling:.2f})" in row
    assert "2 processes shared 1 device(s): not data parallelism" in table
    assert (out / f"{stem}.png").stat().st_size > 10_000


def _run(world_size, figures, devices=None):
    environment = {"torch": "t", "transformers": "x", "date": "d", "device": "cuda:0"}
    config = {"model": "m", "budget": 64, "dtype": "bfloat16", "attn": "sdpa", "repeats": 3, "warmup": 1}
    processes = [{"rank": r, "host": "h", "device": f"cuda:{r}", "gpu": "GPU"} for r in range(world_size)]
    return {"world_size": world_size, "devices": devices or world_size, "steps": 2, "config": config,
            "environment": environment, "processes": processes,
            "figures": {name: {"images_per_s@8": {"median": value}} for name, value in figures.items()}}


def test_scaling_is_group_throughput_over_linear():
    table = parallel.to_markdown([_run(1, {"full": 50.0, "visiondrop": 200.0}),
                                  _run(2, {"full": 100.0, "visiondrop": 300.0})])
    assert "| full | 50.0 | 100.0 (1.00) |" in table
    assert "| visiondrop | 200.0 | 300.0 (0.75) |" in table
    assert "not data parallelism" not in table  # one GPU per process
    with pytest.raises(ValueError, match="no data-parallel runs"):
        parallel.to_markdown([])


def test_a_foreign_file_in_the_folder_is_named(tmp_path):
    (tmp_path / "dp-m-b64-w2.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"dp-m-b64-w2.json: not a data-parallel bench result"):
        parallel.load_runs(tmp_path, "dp-m-b64")


def test_cli_refuses_bad_steps_before_any_model(capsys, tmp_path):
    assert main([*ARGS, "--steps", "0", "--config", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
