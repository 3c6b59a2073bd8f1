"""The evaluation harness end to end on CPU with a tiny random LLaVA: streaming, resuming
after an interruption, two shards merged equal to one process, scoring, refusals."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import visiondrop
from visiondrop.eval import harness
from visiondrop.eval.base import Dataset, Sample
from visiondrop.testing import tiny_llava, tiny_processor


class Toy(Dataset):
    """Six yes/no questions on generated images (POPE-like records)."""

    name = "toy"
    scorer = "pope"

    def __init__(self, count: int = 6) -> None:
        self.count = count

    def samples(self):
        for i in range(self.count):
            pixels = np.random.default_rng(i).integers(0, 255, (40 + i, 30, 3), dtype=np.uint8)
            yield Sample(id=f"q{i}", prompt=f"w{i} is this ?", image=lambda p=pixels: Image.fromarray(p),
                         reference="yes" if i % 2 else "no", meta={"split": "random"}, max_new_tokens=3)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llava(num_layers=4)
    model.generation_config.eos_token_id = None  # fixed-length answers: comparable across runs
    return model, tiny_processor()


def _run(tiny, path, **kwargs):
    model, processor = tiny
    with visiondrop.apply(model, budget=64):
        return harness.run(model, processor, Toy(), path, template="plain", progress=False, **kwargs)


def test_predictions_stream_with_everything_a_scorer_needs(tiny, tmp_path):
    path = _run(tiny, tmp_path / "p.jsonl", batch_size=4)
    records = harness.read_records(path)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(6)]
    assert [r["position"] for r in records] == list(range(6))
    assert all(isinstance(r["prediction"], str) and r["reference"] in ("yes", "no") for r in records)
    meta = harness.read_meta(path)
    assert meta["dataset"] == "toy" and meta["owned"] == 6 and meta["shard"] == [0, 1]


def test_interrupted_run_resumes_without_repeating_answers(tiny, tmp_path, monkeypatch):
    reference = harness.read_records(_run(tiny, tmp_path / "ref.jsonl"))
    calls = []
    original = harness.answer_batch

    def crashing(model, processor, samples, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is killed after two batches
        calls.append([s.id for s in samples])
        return original(model, processor, samples, *args)

    monkeypatch.setattr(harness, "answer_batch", crashing)
    path = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, path, batch_size=2)
    assert len(harness.read_records(path)) == 4
    with path.open("a") as stream:
        stream.write('{"id": "q4", "predic')  # a write cut off mid-line
    calls.clear()
    monkeypatch.setattr(harness, "answer_batch", lambda *a: calls.append([s.id for s in a[2]]) or original(*a))
    _run(tiny, path, batch_size=2)
    assert calls == [["q4", "q5"]]  # only what was missing
    assert harness.read_records(path) == reference


def test_two_shards_merge_to_the_single_process_predictions(tiny, tmp_path):
    single = harness.read_records(_run(tiny, tmp_path / "all.jsonl"))
    shards = [_run(tiny, tmp_path / f"s{i}.jsonl", shard=(i, 2)) for i in range(2)]
    assert [r["id"] for r in harness.read_records(shards[1])] == ["q1", "q3", "q5"]
    merged = harness.merge(shards, tmp_path / "merged.jsonl")
    assert harness.read_records(merged) == single
    assert harness.score(merged) == harness.score(tmp_path / "all.jsonl")


def test_merge_refuses_missing_duplicate_or_unfinished_shards(tiny, tmp_path):
    shards = [_run(tiny, tmp_path / f"s{i}.jsonl", shard=(i, 2)) for i in range(2)]
    with pytest.raises(ValueError, match="expected each of 0..1 once"):
        harness.merge(shards[:1], tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="expected each of 0..1 once"):
        harness.merge([shards[0], shards[0]], tmp_path / "m.jsonl")
    lines = shards[1].read_text().splitlines()
    shards[1].write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="2 of its 3 samples answered"):
        harness.merge(shards, tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="merge the shards first"):
        harness.score(shards[0])


def test_a_file_of_another_run_is_not_mixed_in(tiny, tmp_path):
    path = _run(tiny, tmp_path / "p.jsonl")
    model, processor = tiny
    with visiondrop.apply(model, budget=64), pytest.raises(ValueError, match="predictions of another run"):
        harness.run(model, processor, Toy(), path, template="plain", progress=False, run_info={"budget": 32})


def test_bad_arguments(tmp_path):
    for text in ("2/2", "a/b", "1"):
        with pytest.raises(ValueError, match="--shard"):
            harness.parse_shard(text)
    assert harness.parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="template"):
        harness.prompt_text(None, next(Toy().samples()), "vicuna")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        harness.read_records(bad)


def test_llava_v1_template_is_the_release_conversation():
    sample = Sample(id="1", prompt="Is there a cat?\nAnswer the question using a single word or phrase.",
                    image=lambda: None)
    text = harness.prompt_text(None, sample, "llava_v1")
    assert text == ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the human's questions. USER: <image>\nIs there a "
                    "cat?\nAnswer the question using a single word or phrase. ASSISTANT:")


def test_score_refuses_server_scored_files(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "1", "prediction": "yes", "position": 0}) + "\n")
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps(
        {"dataset": "vqav2-testdev", "scorer": None, "total": 1, "shard": [0, 1], "owned": 1}))
    with pytest.raises(ValueError, match="scored by its benchmark's server"):
        harness.score(path)


torch.set_num_threads(2)
