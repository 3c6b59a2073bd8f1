"""The controlled study of the VisionDrop paper's Figure 2 as one call: PyramidDrop's
schedule with its text-guided score (``pdrop``: the last instruction token's attention)
against the same schedule with the visual-only score (``pdrop-visual``: VisionDrop's
image-to-image attention), at budgets 192, 128 and 64, on any dataset of the evaluation
harness (:mod:`visiondrop.eval`), the synthetic ShapesVQA by default.

- :func:`run_study` answers the dataset with the unpruned model once and with each
  (method, budget) through :func:`visiondrop.eval.harness.run`, one predictions file
  each under ``out_dir/predictions/`` (so an interrupted study, run again, resumes
  through the harness and answers nothing twice), and scores every file with the
  dataset's own rule (:func:`visiondrop.eval.harness.score`): the headline metric of
  :data:`visiondrop.eval.scorers.HEADLINE` and the full metrics. A budget a method's
  schedule cannot reach on the model (:class:`visiondrop.BudgetInfeasible`, or a
  budget ``apply`` refuses) is recorded as infeasible with the reason, not run.
- :func:`to_markdown`, :func:`plot` (bars per budget, as the paper's figure, and the
  unpruned model's line) and :func:`save` (``study.json``, ``study.md``, ``study.png``).
- ``visiondrop study`` (:func:`add_parser`, :func:`main`).

The result is a plain JSON-able dict (``json.load`` of ``study.json`` gives it back)::

    {"study": "text-guided vs visual-only scoring (VisionDrop paper, Figure 2)",
     "dataset": "shapes", "scorer": "exact", "metric": "accuracy", "questions": 96, "limit": None,
     "model": "shapes-llava", "template": "plain", "batch_size": 16,
     "methods": {"text_guided": "pdrop", "visual_only": "pdrop-visual"},
     "budgets": [192, 128, 64],                       # largest first
     "unpruned": RUN,                                 # method "full", budget None
     "runs": [RUN, ...],                              # every (budget, method), budgets largest first
     "gaps": [{"budget": 192, "text_guided": 82.3, "visual_only": 62.5, "gap": -19.8}, ...],
     "environment": {"device": ..., "dtype": ..., "date": ..., "versions": {...}},
     "out_dir": "..."}

    RUN = {"method": "pdrop", "role": "text_guided", "budget": 192,
           "path": "predictions/shapes.pdrop.192.jsonl",  # relative to out_dir; None if infeasible
           "score": 82.3,                  # the headline metric; None if infeasible
           "percent_of_unpruned": 83.1,    # None if infeasible or the unpruned score is 0
           "metrics": {...},               # everything the dataset's scorer returns
           "infeasible": None,             # or why the schedule cannot reach the budget
           "answered": 96,                 # questions answered by this call (0: all resumed)
           "seconds": 4.2}

``gap`` is visual-only minus text-guided in the headline metric's units (None where
either is infeasible): the paper finds it positive at 192 and widening at 128 and 64.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_BUDGETS = (192, 128, 64)
DEFAULT_METHODS = ("pdrop", "pdrop-visual")
ROLES = ("text_guided", "visual_only")
ROLE_LABELS = {"text_guided": "text-guided", "visual_only": "visual-only"}
TITLE = "text-guided vs visual-only scoring (VisionDrop paper, Figure 2)"
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "study.json", "study.md", "study.png"
PREDICTIONS = "predictions"


# ---------------------------------------------------------------- arguments
def check_budgets(budgets: Iterable[int]) -> list[int]:
    """Distinct ints >= 1, largest first; else a ``ValueError`` naming ``budgets``."""
    if isinstance(budgets, int | str):
        raise ValueError(f"budgets: expected a sequence of ints such as (192, 128, 64), got {budgets!r}")
    values = list(budgets)
    if not values:
        raise ValueError("budgets: at least one budget is needed")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"budgets: every budget must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"budgets: every budget must be >= 1, got {value}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"budgets: listed more than once: {duplicates}")
    return sorted(values, reverse=True)


def parse_budgets(text: str) -> list[int]:
    """``"192,128,64"`` -> ``[192, 128, 64]``; a ``ValueError`` naming ``--budgets``."""
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"--budgets: a comma list of visual-token budgets such as 192,128,64, got {text!r}")
    values = []
    for part in parts:
        if not part.isdigit():
            raise ValueError(f"--budgets: {part!r} is not a positive integer (in {text!r}; e.g. 192,128,64)")
        values.append(int(part))
    try:
        return check_budgets(values)
    except ValueError as error:
        raise ValueError(f"--{error}") from None


def check_methods(methods: Sequence[str]) -> list[tuple[str, dict]]:
    """``(text-guided, visual-only)`` method specs (``name`` or ``name[key=value;...]``)
    -> ``[(name, options), (name, options)]``; a ``ValueError`` naming ``methods``."""
    from visiondrop import available_methods

    from ..eval.fidelity import parse_method

    if isinstance(methods, str) or len(methods) != 2:
        raise ValueError(f"methods: two method specs, (text-guided, visual-only) such as {DEFAULT_METHODS}, "
                         f"got {methods!r}")
    if methods[0] == methods[1]:
        raise ValueError(f"methods: the two scorings must differ, got {methods[0]!r} twice")
    available = sorted(available_methods())
    parsed = []
    for spec in methods:
        if not isinstance(spec, str):
            raise ValueError(f"methods: method specs are strings, got {spec!r}")
        name, options = parse_method(spec)  # FidelityConfigError is a ValueError naming "methods"
        if name not in available:
            raise ValueError(f"methods: unknown method {spec!r}; available: {available}")
        parsed.append((name, options))
    return parsed


def _check_count(value, parameter: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{parameter}: must be an int >= 1{' or None' if allow_none else ''}, got {value!r}")


def _is_shipped(model) -> bool:
    from ..zoo.shapes_llava import SHAPES_LLAVA_DIR

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    try:
        return bool(name) and Path(name).resolve() == SHAPES_LLAVA_DIR.resolve()
    except OSError:
        return False


def _model_name(model) -> str:
    if _is_shipped(model):
        return "shapes-llava"
    return getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "method"


def _file_name(dataset: str, tag: str, limit: int | None) -> str:
    return f"{_slug(dataset)}.{tag}{'' if limit is None else f'.first{limit}'}.jsonl"


def _feasibility(model, parsed: list[tuple[str, dict]], budgets: list[int]) -> dict[tuple[int, int], str]:
    """``{(method index, budget): reason}`` for the pairs the model cannot run; a bad
    option or an unsupported model is a ``ValueError`` naming ``methods``."""
    import visiondrop

    infeasible = {}
    for index, (name, options) in enumerate(parsed):
        for budget in budgets:
            try:
                visiondrop.apply(model, name, budget=budget, **dict(options)).remove()
            except visiondrop.BudgetInfeasible as error:
                infeasible[index, budget] = str(error)
            except ValueError as error:
                if str(error).startswith("budget"):  # e.g. more than the model's visual tokens per image
                    infeasible[index, budget] = str(error)
                else:
                    raise ValueError(f"methods: {name!r} at budget {budget} on this model: {error}") from None
    return infeasible


# ---------------------------------------------------------------- running
def run_study(model, processor, dataset, budgets: Iterable[int] = DEFAULT_BUDGETS,
              methods: Sequence[str] = DEFAULT_METHODS, out_dir: str | Path = "study-results",
              limit: int | None = None, batch_size: int = 16, template: str | None = None,
              progress: bool = True, model_name: str | None = None) -> dict:
    """Run the study (see the module docstring for the result's structure).

    Args:
        model, processor: an unpruned supported model (no active handle) and its processor.
        dataset: a :class:`visiondrop.eval.base.Dataset`
            (``visiondrop.eval.datasets.load_dataset(name, **paths)``) scored here, i.e.
            not a server- or judge-scored split.
        budgets: visual tokens averaged over the LM's layers; shown largest first.
        methods: ``(text-guided, visual-only)`` method specs, ``name`` or
            ``name[key=value;...]``; the gap is the second minus the first.
        out_dir: predictions go to ``out_dir/predictions/`` (rerunning resumes them).
        limit: only the first N samples of the dataset.
        batch_size: questions per generate call.
        template: the conversation format (None: :func:`~visiondrop.eval.harness.default_template`).
        progress: tqdm bars of the harness.
        model_name: recorded in the predictions' sidecars and the result (None: the
            checkpoint's name, ``shapes-llava`` for the shipped one).

    Raises:
        ValueError: naming the bad argument (``budgets``, ``methods``, ``limit``,
            ``batch_size``, ``template``, ``dataset``), before any compute.
        RuntimeError: the model has an active pruning handle.
    """
    import visiondrop

    from ..api import _HANDLE_ATTR
    from ..eval import harness
    from ..eval.scorers import HEADLINE, SCORERS

    budget_list = check_budgets(budgets)
    methods = tuple(methods) if not isinstance(methods, str) else methods
    parsed = check_methods(methods)
    _check_count(limit, "limit", allow_none=True)
    _check_count(batch_size, "batch_size")
    template = harness.default_template(model) if template is None else template
    if template not in harness.TEMPLATES:
        raise ValueError(f"template: one of {sorted(harness.TEMPLATES)}, got {template!r}")
    scorer = getattr(dataset, "scorer", None)
    if scorer is None or scorer not in SCORERS:
        raise ValueError(f"dataset: {getattr(dataset, 'name', dataset)!r} is scored by its benchmark's server or "
                         "a judge, not here; the study needs a dataset the harness scores (e.g. a val split)")
    existing = getattr(model, _HANDLE_ATTR, None)
    if existing is not None and existing.active:
        raise RuntimeError("the model has an active visiondrop handle; remove it first (the study runs the "
                           "unpruned model and applies each method itself)")
    infeasible = _feasibility(model, parsed, budget_list)

    samples = list(dataset.samples())
    questions = len(samples) if limit is None else min(limit, len(samples))
    if questions == 0:
        raise ValueError(f"dataset: {dataset.name!r} has no samples")
    metric = HEADLINE.get(scorer, "accuracy")
    name = model_name or _model_name(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def answer(tag: str, info: dict) -> dict:
        relative = Path(PREDICTIONS) / _file_name(dataset.name, tag, limit)
        path = out / relative
        before = len(harness.read_records(path))
        start = time.perf_counter()
        harness.run(model, processor, dataset, path, (0, 1), batch_size, limit, template, progress, run_info=info)
        seconds = round(time.perf_counter() - start, 3)
        after = len(harness.read_records(path))
        metrics = harness.score(path)
        return {"path": relative.as_posix(), "score": float(metrics[metric]), "metrics": metrics,
                "infeasible": None, "answered": max(after - before, 0), "seconds": seconds}

    unpruned = {"method": "full", "role": "unpruned", "budget": None,
                **answer("full", {"model": name, "method": "full", "budget": None, "options": {}})}
    unpruned["percent_of_unpruned"] = 100.0 if unpruned["score"] else None
    runs = []
    for budget in budget_list:
        for index, ((method, options), spec) in enumerate(zip(parsed, methods)):
            row = {"method": spec, "role": ROLES[index], "budget": budget}
            if (index, budget) in infeasible:
                row.update(path=None, score=None, percent_of_unpruned=None, metrics={},
                           infeasible=infeasible[index, budget], answered=0, seconds=0.0)
                runs.append(row)
                continue
            handle = visiondrop.apply(model, method, budget=budget, **dict(options))
            try:
                row.update(answer(f"{_slug(spec)}.{budget}",
                                  {"model": name, "method": method, "budget": budget, "options": options}))
            finally:
                handle.remove()
            row["percent_of_unpruned"] = (100.0 * row["score"] / unpruned["score"]) if unpruned["score"] else None
            runs.append(row)

    return {
        "study": TITLE, "dataset": dataset.name, "scorer": scorer, "metric": metric, "questions": questions,
        "limit": limit, "model": name, "template": template, "batch_size": batch_size,
        "methods": dict(zip(ROLES, methods)), "budgets": budget_list, "unpruned": unpruned, "runs": runs,
        "gaps": _gaps(runs, budget_list), "environment": _environment(model), "out_dir": str(out),
    }


def _gaps(runs: list[dict], budgets: list[int]) -> list[dict]:
    gaps = []
    for budget in budgets:
        score = {r["role"]: r["score"] for r in runs if r["budget"] == budget}
        text, visual = score.get("text_guided"), score.get("visual_only")
        gap = None if text is None or visual is None else visual - text
        gaps.append({"budget": budget, "text_guided": text, "visual_only": visual, "gap": gap})
    return gaps


def _environment(model) -> dict:
    import torch
    import transformers

    import visiondrop

    parameter = next(model.parameters(), None)
    return {"device": str(parameter.device) if parameter is not None else None,
            "dtype": str(parameter.dtype).replace("torch.", "") if parameter is not None else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"visiondrop": visiondrop.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()}}


def find_run(result: dict, method_role: str, budget: int) -> dict:
    """The run of ``result`` for ``method_role`` (``"text_guided"``/``"visual_only"`` or
    the method spec) at ``budget``."""
    for row in result["runs"]:
        if row["budget"] == budget and method_role in (row["role"], row["method"]):
            return row
    raise KeyError(f"no run of {method_role!r} at budget {budget}")


# ---------------------------------------------------------------- output
def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def to_markdown(result: dict) -> str:
    """The study as Markdown: the headline metric per budget for both scorings (and
    as % of the unpruned model), the gap, the infeasible budgets' reasons, and every
    scalar metric of each run."""
    metric = result["metric"]
    roles = result["methods"]
    count = (f"{result['questions']:,} questions" if result["limit"] is None
             else f"the first {result['questions']:,} questions")
    unpruned = result["unpruned"]
    lines = [f"# {result['study'][0].upper()}{result['study'][1:]}", "",
             f"Dataset `{result['dataset']}` ({count}), scored by `{result['scorer']}`; headline metric "
             f"`{metric}`. Model `{result['model']}`, template `{result['template']}`. Both scorings run "
             f"PyramidDrop's schedule; only the score that ranks the visual tokens differs.", "",
             f"Unpruned: **{_num(unpruned['score'])}**", "",
             f"| budget | text-guided (`{roles['text_guided']}`) | % of unpruned | visual-only "
             f"(`{roles['visual_only']}`) | % of unpruned | gap (visual − text) |",
             "|---:|---:|---:|---:|---:|---:|"]
    marks: dict[str, str] = {}
    for gap in result["gaps"]:
        cells = [str(gap["budget"])]
        for role in ROLES:
            row = find_run(result, role, gap["budget"])
            if row["infeasible"]:
                mark = marks.setdefault(row["infeasible"], f"({chr(ord('a') + len(marks) % 26)})")
                cells += [f"infeasible {mark}", "—"]
            else:
                cells += [_num(row["score"]), _num(row["percent_of_unpruned"], 1)]
        cells.append(_signed(gap["gap"]))
        lines.append("| " + " | ".join(cells) + " |")
    if marks:
        lines += ["", "Infeasible: the schedule cannot average that few visual tokens over this model's LM "
                  "(not run):", ""]
        lines += [f"- {mark} {reason}" for reason, mark in marks.items()]
    scalars = [key for key, value in unpruned["metrics"].items() if isinstance(value, int | float)]
    if scalars:
        lines += ["", "## Every metric", "", "| run | budget | " + " | ".join(scalars) + " |",
                  "|---|---:|" + "---:|" * len(scalars)]
        for row in [unpruned] + [r for r in result["runs"] if not r["infeasible"]]:
            values = [row["metrics"].get(key) for key in scalars]
            cells = [f"`{row['method']}`", "—" if row["budget"] is None else str(row["budget"])]
            cells += [_num(v) if isinstance(v, float) else str(v) for v in values]
            lines.append("| " + " | ".join(cells) + " |")
    env = result.get("environment") or {}
    if env:
        versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
        lines += ["", f"Run {env.get('date')} on {env.get('device')} ({env.get('dtype')}); {versions}."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str | Path) -> Path:
    """Bars of the headline metric per budget, text-guided beside visual-only (as the
    paper's Figure 2), the unpruned model as a dashed line; infeasible budgets are
    labelled. Written as PNG to ``path`` with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    budgets = result["budgets"]
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot()
    width = 0.38
    colours = {"text_guided": "#4C72B0", "visual_only": "#DD8452"}
    values = [r["score"] for r in result["runs"] if r["score"] is not None] + [result["unpruned"]["score"]]
    top = max(values) if values else 1.0
    if result["metric"] in ("accuracy", "f1") and top <= 100:
        ceiling = 100.0
    else:
        ceiling = top * 1.15 if top > 0 else 1.0
    for k, role in enumerate(ROLES):
        offset = (k - 0.5) * width
        label = f"{ROLE_LABELS[role]} ({result['methods'][role]})"
        for i, budget in enumerate(budgets):
            row = find_run(result, role, budget)
            x = i + offset
            if row["infeasible"]:
                ax.text(x, ceiling * 0.02, "infeasible", rotation=90, ha="center", va="bottom", fontsize=8,
                        color=colours[role])
                continue
            ax.bar(x, row["score"], width, color=colours[role], label=label)
            ax.text(x, row["score"], _num(row["score"], 1), ha="center", va="bottom", fontsize=8)
            label = None  # one legend entry per scoring
    full = result["unpruned"]["score"]
    ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"unpruned: {full:.1f}")
    gaps = {g["budget"]: g["gap"] for g in result["gaps"]}
    ax.set_xticks(range(len(budgets)), labels=[f"{b}\n(gap {_signed(gaps.get(b))})" for b in budgets])
    ax.set_xlim(-0.6, len(budgets) - 0.4)
    ax.set_ylim(0, ceiling * 1.08)
    ax.set_xlabel("budget (visual tokens averaged over LLM layers); gap: visual-only minus text-guided")
    ax.set_ylabel(f"{result['dataset']}: {result['metric']}")
    count = (f"{result['questions']:,} questions" if result["limit"] is None
             else f"first {result['questions']:,} questions")
    ax.set_title(f"{Path(str(result['model'])).name or result['model']} on {result['dataset']} ({count})\n"
                 "PyramidDrop's schedule: text-guided vs visual-only scores", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def save(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``study.json``, ``study.md`` and ``study.png`` into ``out_dir`` (created);
    returns their paths by kind (``json``, ``markdown``, ``plot``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "plot": out / PLOT_NAME}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["markdown"].write_text(to_markdown(result))
    plot(result, paths["plot"])
    return paths


# ---------------------------------------------------------------- command line
def add_parser(commands) -> argparse.ArgumentParser:
    """``visiondrop study``: add its subparser to ``commands`` (an argparse subparsers
    object); returns it."""
    parser = commands.add_parser(
        "study", help="text-guided vs visual-only scoring on PyramidDrop's schedule (the paper's Figure 2)",
        description="Run the unpruned model, then PyramidDrop (text-guided scores) and PyramidDrop with "
                    "visual-only scores at each budget, on one dataset of the evaluation harness; write "
                    "study.json, study.md and study.png. Rerunning with the same --out resumes.")
    parser.add_argument("--model", default=None,
                        help="checkpoint folder or hub id (default: the shipped shapes-llava)")
    parser.add_argument("--dataset", default="shapes",
                        help="a dataset of the evaluation harness (default shapes: the synthetic ShapesVQA)")
    parser.add_argument("--data", action="append", metavar="KEY=PATH",
                        help="the dataset's files and options, as in `visiondrop eval run`")
    parser.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)),
                        help=f"comma list of visual-token budgets (default {','.join(map(str, DEFAULT_BUDGETS))})")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="text-guided,visual-only method specs (default pdrop,pdrop-visual)")
    parser.add_argument("--limit", default=None, help="only the first N samples (default: all)")
    parser.add_argument("--batch-size", default="16", help="questions per generate call (default 16)")
    parser.add_argument("--template", choices=("llava_v1", "plain", "chat"), default=None,
                        help="conversation format (default: plain for shapes-llava, llava_v1 for LLaVA-1.5, "
                             "else the processor's chat template)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="model dtype (default auto; the shipped model: float32)")
    parser.add_argument("--out", default="study-results",
                        help="output folder: study.json, study.md, study.png and predictions/ "
                             "(default ./study-results)")
    return parser


_OPTIONS = {"budgets": "--budgets", "methods": "--methods", "dataset": "--dataset", "template": "--template",
            "limit": "--limit", "batch_size": "--batch-size"}


def _positive(text, option: str) -> int | None:
    if text is None:
        return None
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{option}: a positive integer, got {text!r}")
    return int(value)


def main(args: argparse.Namespace) -> int:
    """``visiondrop study``: 0 on success; 2 (with the message on stderr) for a bad
    argument, found before any compute."""
    try:
        return _main(args)
    except ValueError as error:
        print(f"visiondrop: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    import torch

    from ..eval import harness
    from ..eval.command import _pairs
    from ..eval.datasets import load_dataset
    from ..inputs import load_model

    budgets = parse_budgets(args.budgets)
    methods = tuple(part.strip() for part in str(args.methods).split(",") if part.strip())
    try:
        check_methods(methods)
    except ValueError as error:
        raise ValueError(f"--{error}") from None
    limit = _positive(args.limit, "--limit")
    batch_size = _positive(args.batch_size, "--batch-size")
    dataset = load_dataset(args.dataset, **_pairs(args.data, "--data"))  # unknown name / bad files: named here
    if dataset.scorer is None:
        raise ValueError(f"--dataset: {args.dataset!r} (with these files) is scored by a server or a judge, "
                         "not here; the study needs a dataset the harness scores")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        args.dtype]
    try:
        model, processor = load_model(args.model, device, dtype)
    except OSError as error:
        raise ValueError(f"--model: cannot load {args.model or 'the shipped shapes-llava'}: {error}") from None
    template = args.template or harness.default_template(model)
    start = time.perf_counter()
    try:
        result = run_study(model, processor, dataset, budgets, methods, args.out, limit, batch_size, template,
                           progress=True, model_name=args.model or "shapes-llava")
    except ValueError as error:  # name the command's option where run_study names its parameter
        text = str(error)
        for parameter, option in _OPTIONS.items():
            if text.startswith(f"{parameter}:"):
                raise ValueError(f"{option}{text[len(parameter):]}") from None
        raise
    paths = save(result, args.out)
    print(to_markdown(result))
    print(f"{time.perf_counter() - start:.1f} s; wrote {', '.join(str(p) for p in paths.values())}")
    return 0
