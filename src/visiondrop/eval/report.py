"""Scores of several benchmarks as one table, and the paper's "Avg. %": each benchmark's
headline score (:data:`~visiondrop.eval.scorers.HEADLINE`) as a percentage of the
unpruned model's from the same harness, averaged over the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from .harness import read_meta, score
from .scorers import HEADLINE, relative_scores


def _headlines(paths: Sequence[str]) -> dict[str, dict]:
    out = {}
    for path in paths:
        meta = read_meta(path)
        name = meta["dataset"]
        if name in out:
            raise ValueError(f"{path}: a second predictions file for {name}")
        metrics = score(path)
        key = HEADLINE.get(meta["scorer"], "accuracy")
        out[name] = {"path": str(path), "run": meta.get("run", {}), "metric": key, "score": metrics[key],
                     "metrics": metrics}
    return out


def score_files(predictions: Sequence[str], baseline: Sequence[str] | None = None) -> dict:
    """Headline scores of ``predictions`` (one merged file per benchmark); with
    ``baseline`` (the unpruned model's files for the same benchmarks) also each score
    as a percentage of the baseline's and their mean ("avg")."""
    result = {"benchmarks": _headlines(predictions)}
    if baseline:
        base = _headlines(baseline)
        missing = sorted(set(result["benchmarks"]) - set(base))
        if missing:
            raise ValueError(f"--baseline: no unpruned predictions for {missing}")
        result["baseline"] = base
        result["relative"] = relative_scores({k: v["score"] for k, v in result["benchmarks"].items()},
                                             {k: base[k]["score"] for k in result["benchmarks"]})
    return result


def to_markdown(result: dict) -> str:
    has_base = "baseline" in result
    header = ["benchmark", "metric", "score"] + (["unpruned", "% of unpruned"] if has_base else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in result["benchmarks"].items():
        cells = [name, entry["metric"], f"{entry['score']:.2f}"]
        if has_base:
            cells += [f"{result['baseline'][name]['score']:.2f}", f"{result['relative'][name]:.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    if has_base:
        lines.append(f"| **Avg.** | | | | **{result['relative']['avg']:.2f}%** |")
    return "\n".join(lines)
