"""What only a server or a judge can score, exported in the format it reads:

- VQAv2 test-dev: the EvalAI upload, a JSON list ``[{"question_id": int, "answer": str}]``;
- VizWiz test: the EvalAI upload, ``[{"image": "VizWiz_test_00000000.jpg", "answer": str}]``;
- MMBench / MMBench-CN test: a TSV of every row (index, question, options, category) with
  a ``prediction`` column, which the MMBench server takes (saved as .xlsx by any
  spreadsheet tool when the server asks for Excel);
- video QA (MSVD, MSRVTT, TGIF): Video-LLaVA's judge input, ``[{"id", "question",
  "answer", "pred"}]`` (``visiondrop eval judge`` runs the judge itself).

Answers to the VQA servers go through the same EvalAI answer processing LLaVA's
``convert_*_for_submission.py`` scripts apply (:func:`~visiondrop.eval.scorers.normalize_vqa_answer`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .harness import read_meta, read_records, refuse_repeats
from .scorers import normalize_vqa_answer


def _kind(meta: dict) -> str:
    name = meta["dataset"].lower()
    if meta["scorer"] == "videoqa":
        return "video"
    for kind in ("vqav2", "vizwiz", "mmbench"):
        if name.startswith(kind):
            return kind
    raise ValueError(f"{meta['dataset']}: nothing to export, its score comes from `visiondrop eval score`")


def export(predictions: str | Path, out: str | Path) -> Path:
    """Write ``predictions`` (a complete, merged file) in its server's or judge's format."""
    meta = read_meta(predictions)
    records = read_records(predictions)
    if meta["shard"] != [0, 1] or len(records) != meta["total"]:
        raise ValueError(f"{predictions}: incomplete ({len(records)} of {meta['total']}, shard "
                         f"{meta['shard'][0]}/{meta['shard'][1]}); merge and finish the run first")
    refuse_repeats(Path(predictions), records, {})
    kind = _kind(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "vqav2":
        rows = [{"question_id": int(r["meta"]["question_id"]), "answer": normalize_vqa_answer(r["prediction"])}
                for r in records]
        out.write_text(json.dumps(rows))
    elif kind == "vizwiz":
        # an empty answer after processing is what VizWiz calls "unanswerable"
        rows = [{"image": r["meta"]["image"], "answer": normalize_vqa_answer(r["prediction"]) or "unanswerable"}
                for r in records]
        out.write_text(json.dumps(rows))
    elif kind == "mmbench":
        letters = sorted({letter for r in records for letter in r["meta"]["options"]})
        with out.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, delimiter="\t")
            writer.writerow(["index", "question", *letters, "prediction", "category", "l2-category"])
            for r in records:
                m = r["meta"]
                writer.writerow([m["index"], m.get("question", r["prompt"]),
                                 *(m["options"].get(letter, "") for letter in letters), r["prediction"],
                                 m.get("category", ""), m.get("l2-category", m.get("l2_category", ""))])
    else:
        rows = [{"id": r["id"], "question": r["meta"].get("question", r["prompt"]), "answer": r["reference"],
                 "pred": r["prediction"]} for r in records]
        out.write_text(json.dumps(rows, ensure_ascii=False))
    return out
