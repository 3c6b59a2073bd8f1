"""`visiondrop eval` end to end on the POPE and MME fixtures (real file formats) with a tiny
random LLaVA checkpoint on CPU: two shards, merge, score against the unpruned run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

from visiondrop.cli import main
from visiondrop.eval import harness
from visiondrop.testing import save_tiny_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint(path)
    return str(path)


def _run(pope, checkpoint, out, *extra):
    assert main(["eval", "run", *pope, "--model", checkpoint, "--out", str(out), *extra]) == 0


def test_two_shards_merge_and_score_against_the_unpruned_run(pope, checkpoint, tmp_path, capsys):
    for i in range(2):
        _run(pope, checkpoint, tmp_path / f"vd{i}.jsonl", "--budget", "64", "--shard", f"{i}/2", "--batch-size", "2")
    _run(pope, checkpoint, tmp_path / "full.jsonl", "--budget", "full")
    assert main(["eval", "merge", str(tmp_path / "vd0.jsonl"), str(tmp_path / "vd1.jsonl"),
                 "--out", str(tmp_path / "vd.jsonl")]) == 0
    merged = harness.read_records(tmp_path / "vd.jsonl")
    full = harness.read_records(tmp_path / "full.jsonl")
    assert [r["id"] for r in merged] == [r["id"] for r in full] and len(merged) == 5
    assert harness.read_meta(tmp_path / "vd.jsonl")["run"]["method"] == "visiondrop"
    assert harness.read_meta(tmp_path / "full.jsonl")["run"]["method"] == "full"
    assert merged[0]["prompt"].endswith("\nAnswer the question using a single word or phrase.")
    capsys.readouterr()
    assert main(["eval", "score", str(tmp_path / "vd.jsonl"), "--baseline", str(tmp_path / "full.jsonl"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    table = capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["benchmarks"]["pope"]["metric"] == "f1" and "| pope | f1 |" in table
    assert set(scores["benchmarks"]["pope"]["metrics"]["splits"]) == {"adversarial", "popular", "random"}
    assert "**Avg.**" in table


def test_mme_fixture_runs_and_scores(checkpoint, tmp_path):
    out = tmp_path / "mme.jsonl"
    assert main(["eval", "run", "--dataset", "mme", "--data",
                 f"root={FIXTURES / 'mme' / 'MME_Benchmark_release_version'}", "--model", checkpoint,
                 "--out", str(out), "--budget", "64"]) == 0
    metrics = harness.score(out)
    assert {"perception", "cognition", "total"} <= set(metrics)


def test_bad_input_is_named_before_any_compute(pope, checkpoint, tmp_path, capsys):
    cases = [
        (["--dataset", "nope", "--data", "x=y"], "dataset"),
        (["--dataset", "pope", "--data", f"questions={FIXTURES / 'pope'}"], "images"),
        ([*pope, "--shard", "3/2"], "--shard"),
        ([*pope, "--data", "oops"], "--data"),
        ([*pope, "--budget", "many"], "--budget"),
    ]
    for args, name in cases:
        code = main(["eval", "run", *args, "--model", checkpoint, "--out", str(tmp_path / "x.jsonl")])
        assert code == 2, args
        assert name in capsys.readouterr().err, args
    assert not (tmp_path / "x.jsonl").exists()


def test_shard_auto_reads_the_launchers_environment(pope, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    out = tmp_path / "p.{shard}.jsonl"
    assert main(["eval", "run", *pope, "--model", checkpoint, "--out", str(out), "--shard", "auto",
                 "--device", "cpu"]) == 0
    records = harness.read_records(tmp_path / "p.1of2.jsonl")
    assert [r["position"] for r in records] == [1, 3]
    assert main(["eval", "run", *pope, "--model", checkpoint, "--out", str(tmp_path / "q.jsonl"),
                 "--shard", "auto", "--device", "cpu"]) == 2
    monkeypatch.delenv("RANK")
    assert main(["eval", "run", *pope, "--model", checkpoint, "--out", str(out), "--shard", "auto"]) == 2


# ------------------------------------------------------------ launchers (issue 9 on CPU)
def _launch(launcher, pope, checkpoint, out):
    """``launcher`` starting two processes of `visiondrop eval run --shard auto` on the CPU."""
    command = [*launcher, "-m", "visiondrop.cli", "eval", "run", *pope, "--model", checkpoint,
               "--out", str(out), "--shard", "auto", "--device", "cpu", "--budget", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def _single_process(pope, checkpoint, tmp_path):
    _run(pope, checkpoint, tmp_path / "one.jsonl", "--budget", "64", "--device", "cpu")
    return harness.read_records(tmp_path / "one.jsonl")


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_launched_processes_give_the_single_process_predictions(launcher, pope, checkpoint, tmp_path):
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                   f"--master-port={free_port()}"]
    else:
        pytest.importorskip("accelerate")
        # --multi_gpu: accelerate's torch.distributed launcher (its --cpu launcher starts one process
        # unless MPI is set up); the processes themselves run on the CPU (--device cpu)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port())]
    _launch(command, pope, checkpoint, tmp_path / "p.{shard}.jsonl")
    shards = [tmp_path / f"p.{i}of2.jsonl" for i in range(2)]
    assert [len(harness.read_records(s)) for s in shards] == [3, 2]
    merged = harness.read_records(harness.merge(shards, tmp_path / "merged.jsonl"))
    assert merged == _single_process(pope, checkpoint, tmp_path)  # no sample lost, twice or changed


def test_an_interrupted_shard_resumes_under_torchrun(pope, checkpoint, tmp_path):
    """Rank 0's job dies mid-write; the same torchrun command again answers only what rank 0
    is missing, leaves rank 1's finished file alone, and the merge equals one process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    out = tmp_path / "p.{shard}.jsonl"
    _launch([*command, f"--master-port={free_port()}"], pope, checkpoint, out)
    shards = [tmp_path / f"p.{i}of2.jsonl" for i in range(2)]
    first_line = shards[0].read_text().splitlines(keepends=True)[0]
    shards[0].write_text(first_line + '{"id": "cut off mid-wri')
    finished = shards[1].read_bytes()
    with pytest.raises(ValueError, match=r"1 of its 3 samples answered; finish it"):
        harness.merge(shards, tmp_path / "early.jsonl")

    _launch([*command, f"--master-port={free_port()}"], pope, checkpoint, out)
    assert shards[0].read_text().startswith(first_line) and shards[1].read_bytes() == finished
    merged = harness.read_records(harness.merge(shards, tmp_path / "merged.jsonl"))
    assert merged == _single_process(pope, checkpoint, tmp_path)


# ------------------------------------------------ issue 18: damaged files, duplicate ids
def _predictions(folder, lines: list[bytes], sidecar: bytes | None = None) -> Path:
    """A finished msvd predictions file (every command reads it: score, export, merge, judge)."""
    path = folder / "p.jsonl"
    path.write_bytes(b"".join(lines))
    meta = {"dataset": "msvd", "scorer": "videoqa", "total": len(lines), "shard": [0, 1], "owned": len(lines),
            "template": "llava_v1", "run": {}}
    (folder / "p.jsonl.meta.json").write_bytes(sidecar if sidecar is not None else json.dumps(meta).encode())
    return path


def _line(i, **changes) -> bytes:
    row = {"id": str(i), "prediction": "a man", "reference": "man", "meta": {}, "prompt": "who?", "position": i,
           **changes}
    return (json.dumps({k: v for k, v in row.items() if v is not None}) + "\n").encode()


COMMANDS = {"score": [], "export": ["--out", "x.json"], "merge": ["--out", "m.jsonl"],
            "judge": ["--judge-url", "http://127.0.0.1:9/v1", "--out", "v.jsonl"]}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("lines, sidecar, named", [
    ([_line(0), b"null\n"], None, "p.jsonl:2: "),
    ([_line(0), _line(1, prediction=None)], None, "p.jsonl:2: "),
    ([_line(0, id=None), _line(1)], None, "p.jsonl:1: "),
    ([_line(0).replace(b"man", b"m\xe4n", 1), _line(1)], None, "p.jsonl:1: "),
    ([b"{oops\n", _line(1)], None, "p.jsonl:1: "),
    ([_line(0), _line(1)], b'{"dataset": "msvd", "scorer": "videoqa", "total": 2, "owned": 2}',
     "p.jsonl.meta.json: "),
    ([_line(0), _line(1)], b"{", "p.jsonl.meta.json: "),
    ([_line(0), _line(1)], b'{"dataset": "\xe4"}', "p.jsonl.meta.json: "),
], ids=["null", "no-prediction", "no-id", "bad-byte", "bad-json", "sidecar-no-shard", "sidecar-json",
        "sidecar-byte"])
def test_a_damaged_file_is_exit_2_naming_file_and_line(tmp_path, capsys, command, lines, sidecar, named):
    path = _predictions(tmp_path, lines, sidecar)
    arguments = [str(tmp_path / a) if a.endswith("json") or a.endswith("jsonl") else a for a in COMMANDS[command]]
    assert main(["eval", command, str(path), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visiondrop: ") and named in err and err.count("\n") == 1, err


def test_score_refuses_an_id_twice(tmp_path, capsys):
    path = _predictions(tmp_path, [_line(i, **({"id": "3"} if i == 11 else {})) for i in range(12)])
    meta = json.loads((tmp_path / "p.jsonl.meta.json").read_text())
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps({**meta, "dataset": "gqa", "scorer": "gqa"}))
    assert main(["eval", "score", str(path)]) == 2
    assert f"{path}: sample '3' appears twice" in capsys.readouterr().err
