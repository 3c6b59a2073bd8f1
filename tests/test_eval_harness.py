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
    bad.write_bytes(_line(1) + b"not json\n" + _line(2))
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
    path.write_bytes(_line(0))
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps(
        {"dataset": "vqav2-testdev", "scorer": None, "total": 1, "shard": [0, 1], "owned": 1}))
    with pytest.raises(ValueError, match="scored by its benchmark's server"):
        harness.score(path)


torch.set_num_threads(2)


# ------------------------------------------------ issue 18: damaged files, duplicate ids
def _line(i, prediction="yes", **changes) -> bytes:
    """One predictions line as `run` writes it (``ensure_ascii=False``), with ``changes``;
    a change to None drops the field."""
    row = {"id": f"q{i}", "prediction": prediction, "reference": "yes", "meta": {"split": "random"},
           "prompt": "?", "position": i, **changes}
    return (json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n").encode()


def test_a_line_cut_inside_a_multibyte_character_is_dropped(tmp_path):
    path = tmp_path / "p.jsonl"
    whole, cut = _line(0, "caf\u00e9"), _line(1, "caf\u00e9")
    path.write_bytes(whole + cut[:cut.index("\u00e9".encode()) + 1])  # half of the two bytes of "é"
    assert [r["prediction"] for r in harness.read_records(path)] == ["caf\u00e9"]
    path.write_bytes(whole + _line(1).replace(b"yes", b"y\xffs", 1) + whole)
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not UTF-8"):  # elsewhere a bad byte is an error
        harness.read_records(path)


def test_resume_after_a_write_cut_inside_a_multibyte_character(tiny, tmp_path, monkeypatch):
    reference = _run(tiny, tmp_path / "ref.jsonl")
    path = tmp_path / "p.jsonl"
    head = b"".join(reference.read_bytes().splitlines(keepends=True)[:4])
    path.write_bytes(head + '{"id": "q4", "prediction": "\u00e9'.encode()[:-1])
    calls = []
    original = harness.answer_batch
    monkeypatch.setattr(harness, "answer_batch", lambda *a: calls.append([s.id for s in a[2]]) or original(*a))
    _run(tiny, path, batch_size=2)
    assert calls == [["q4", "q5"]]
    assert harness.read_records(path) == harness.read_records(reference)


@pytest.mark.parametrize("content, named", [
    (_line(0) + b"[1, 2]\n", r"p\.jsonl:2: .*JSON object"),
    (_line(0) + _line(1, prediction=None), r"p\.jsonl:2: .*'prediction'"),
    (_line(0, id=None) + _line(1), r"p\.jsonl:1: .*'id'"),
    (_line(0, id=7) + _line(1), r"p\.jsonl:1: .*'id'"),
    (_line(0, position="0") + _line(1), r"p\.jsonl:1: .*'position'"),
    (_line(0).replace(b"yes", b"y\xffs", 1) + _line(1), r"p\.jsonl:1: not UTF-8"),
    (b'{"id": "q0",\n' + _line(1), r"p\.jsonl:1: not JSON"),
], ids=["list", "no-prediction", "no-id", "id-number", "position-text", "bad-byte", "bad-json"])
def test_a_resumed_run_refuses_a_damaged_file_naming_file_and_line(tmp_path, content, named):
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=named):  # checked before any model call: no model needed
        harness.run(None, None, Toy(), path, template="plain", progress=False)


@pytest.mark.parametrize("sidecar, named", [
    (b'{"dataset": "toy"', r"p\.jsonl\.meta\.json: not JSON"),
    (b'{"dataset": "t\xffy"}', r"p\.jsonl\.meta\.json: not UTF-8"),
    (b"[]", r"p\.jsonl\.meta\.json: .*JSON object"),
    (b'{"dataset": "toy", "scorer": "pope", "total": 6, "owned": 6}', r"p\.jsonl\.meta\.json: .*'shard'"),
    (b'{"dataset": "toy", "scorer": "pope", "total": 6, "owned": 6, "shard": [0]}', r"p\.jsonl\.meta\.json: .*'shard'"),
], ids=["bad-json", "bad-byte", "list", "no-shard", "shard-short"])
def test_a_damaged_sidecar_is_named_with_its_key(tmp_path, sidecar, named):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"".join(_line(i) for i in range(6)))
    (tmp_path / "p.jsonl.meta.json").write_bytes(sidecar)
    for read in (harness.read_meta, harness.score,
                 lambda p: harness.run(None, None, Toy(), p, template="plain", progress=False)):
        with pytest.raises(ValueError, match=named):
            read(path)


def test_score_refuses_an_id_twice(tmp_path):
    """12 records, q3 twice and q11 missing: the count matches the sidecar's total, the ids do not."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"".join(_line(i, "no" if i in (3, 5, 7, 9) else "yes", id=f"q{3 if i == 11 else i}")
                              for i in range(12)))
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps(
        {"dataset": "toy", "scorer": "exact", "total": 12, "shard": [0, 1], "owned": 12}))
    with pytest.raises(ValueError, match=r"p\.jsonl: sample 'q3' appears twice"):
        harness.score(path)
