"""The paper's "Avg. %" table from predictions files, and the server / judge exports."""

import csv
import json

import pytest

from visiondrop.eval.export import export
from visiondrop.eval.report import score_files, to_markdown


def _write(path, dataset, scorer, rows):
    records = [{"id": str(i), "position": i, "prompt": "q", **row} for i, row in enumerate(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (path.parent / (path.name + ".meta.json")).write_text(json.dumps(
        {"dataset": dataset, "scorer": scorer, "total": len(rows), "shard": [0, 1], "owned": len(rows),
         "template": "llava_v1", "run": {}}))
    return path


def _gqa(tmp_path, name, right):
    rows = [{"prediction": "cat" if i < right else "dog", "reference": "cat", "meta": {}} for i in range(4)]
    return _write(tmp_path / name, "gqa", "gqa", rows)


def _pope(tmp_path, name, answers):
    refs = ["yes", "no", "yes", "no"]
    rows = [{"prediction": a, "reference": r, "meta": {"split": "random"}} for a, r in zip(answers, refs)]
    return _write(tmp_path / name, "pope", "pope", rows)


def test_avg_percent_of_the_unpruned_run(tmp_path):
    pruned = [_gqa(tmp_path, "g.jsonl", 2), _pope(tmp_path, "p.jsonl", ["yes", "yes", "yes", "no"])]
    full = [_gqa(tmp_path, "gf.jsonl", 4), _pope(tmp_path, "pf.jsonl", ["yes", "no", "yes", "no"])]
    result = score_files([str(p) for p in pruned], [str(p) for p in full])
    # GQA 50 of 100; POPE F1: tp 2, fp 1, fn 0 -> precision 2/3, recall 1 -> F1 80 of 100
    assert result["benchmarks"]["gqa"]["score"] == pytest.approx(50.0)
    assert result["benchmarks"]["pope"]["metric"] == "f1"
    assert result["benchmarks"]["pope"]["score"] == pytest.approx(80.0)
    assert result["relative"] == pytest.approx({"gqa": 50.0, "pope": 80.0, "avg": 65.0})
    table = to_markdown(result)
    assert "| gqa | accuracy | 50.00 | 100.00 | 50.00% |" in table and "**65.00%**" in table


def test_baseline_must_cover_every_benchmark(tmp_path):
    with pytest.raises(ValueError, match="--baseline: no unpruned predictions for \\['pope'\\]"):
        score_files([str(_pope(tmp_path, "p.jsonl", ["yes"] * 4))], [str(_gqa(tmp_path, "g.jsonl", 4))])


def test_vqav2_and_vizwiz_uploads_use_evalai_answer_processing(tmp_path):
    vqa = _write(tmp_path / "v.jsonl", "vqav2", None, [
        {"prediction": "Two.", "reference": None, "meta": {"question_id": 42}},
        {"prediction": "the Dog", "reference": None, "meta": {"question_id": 7}}])
    assert json.loads(export(vqa, tmp_path / "up.json").read_text()) == [
        {"question_id": 42, "answer": "2"}, {"question_id": 7, "answer": "dog"}]
    viz = _write(tmp_path / "z.jsonl", "vizwiz", None, [
        {"prediction": "Unanswerable", "reference": None, "meta": {"image": "VizWiz_test_00000001.jpg"}},
        {"prediction": "", "reference": None, "meta": {"image": "VizWiz_test_00000002.jpg"}}])
    assert json.loads(export(viz, tmp_path / "vz.json").read_text()) == [
        {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000002.jpg", "answer": "unanswerable"}]


def test_mmbench_and_video_exports(tmp_path):
    mmb = _write(tmp_path / "m.jsonl", "mmbench", None, [
        {"prediction": "B", "reference": None,
         "meta": {"index": 3, "question": "Which?", "options": {"A": "x", "B": "y"}, "category": "ocr"}}])
    with export(mmb, tmp_path / "m.tsv").open() as stream:
        rows = list(csv.reader(stream, delimiter="\t"))
    assert rows == [["index", "question", "A", "B", "prediction", "category", "l2-category"],
                    ["3", "Which?", "x", "y", "B", "ocr", ""]]
    video = _write(tmp_path / "t.jsonl", "msvd", "videoqa", [
        {"prediction": "a man", "reference": "man", "meta": {"question": "who?"}}])
    assert json.loads(export(video, tmp_path / "t.json").read_text()) == [
        {"id": "0", "question": "who?", "answer": "man", "pred": "a man"}]


def test_export_refuses_what_is_scored_locally_or_unfinished(tmp_path):
    with pytest.raises(ValueError, match="nothing to export"):
        export(_gqa(tmp_path, "g.jsonl", 4), tmp_path / "x.json")
    partial = _write(tmp_path / "v.jsonl", "vqav2", None, [{"prediction": "2", "reference": None,
                                                            "meta": {"question_id": 1}}])
    meta = json.loads((tmp_path / "v.jsonl.meta.json").read_text())
    (tmp_path / "v.jsonl.meta.json").write_text(json.dumps({**meta, "total": 2}))
    with pytest.raises(ValueError, match="incomplete \\(1 of 2"):
        export(partial, tmp_path / "x.json")


# ------------------------------------------------ readers of fixture files -> scorers
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "eval"


def _records(name, predictions, **paths):
    from visiondrop.eval.base import record
    from visiondrop.eval.datasets import load_dataset

    samples = list(load_dataset(name, **paths).samples())
    return [record(s, predictions[s.id]) for s in samples]


def test_mme_fixture_scored_by_hand():
    from visiondrop.eval.scorers import score_mme

    root = FIXTURES / "mme" / "MME_Benchmark_release_version"
    answers = {"artwork/14777.jpg#0": "Yes", "artwork/14777.jpg#1": "Yes, it is.",  # one of two wrong
               "code_reasoning/0020.png#0": "yes", "code_reasoning/0020.png#1": "No",
               "existence/000000006040.jpg#0": "Yes", "existence/000000006040.jpg#1": "no.",
               "position/000000472046.jpg#0": "Maybe", "position/000000472046.jpg#1": "No"}
    out = score_mme(_records("mme", answers, root=str(root)))
    # artwork 50 + 0; existence 100 + 100; position ("Maybe" is neither) 50 + 0; code_reasoning 200
    assert out["subtasks"]["artwork"]["score"] == 50.0 and out["subtasks"]["position"]["score"] == 50.0
    assert out["perception"] == 300.0 and out["cognition"] == 200.0 and out["total"] == 500.0


def test_mmbench_fixture_circular_scored_by_hand():
    from visiondrop.eval.scorers import score_mmbench

    tsv = FIXTURES / "mmbench" / "mmbench_dev_20230712.tsv"
    # question 241: both rotations right; question 9: its third rotation wrong -> 1 of 2 questions
    answers = {"241": "B", "1000241": "The answer is A.", "9": "C", "1000009": "A. blue", "2000009": "A"}
    out = score_mmbench(_records("mmbench", answers, questions=str(tsv)))
    assert out["questions"] == 2 and out["accuracy"] == 50.0 and out["unparsed"] == 0


def test_export_refuses_an_id_twice(tmp_path):
    path = _write(tmp_path / "v.jsonl", "vqav2", None, [
        {"prediction": "two", "reference": None, "meta": {"question_id": i}} for i in range(3)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")  # id "1" twice, "2" missing
    with pytest.raises(ValueError, match=r"v.jsonl: sample '1' appears twice"):
        export(path, tmp_path / "up.json")
