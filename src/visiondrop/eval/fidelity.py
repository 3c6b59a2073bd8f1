"""The fidelity benchmark: a proxy model's held-out accuracy under every pruning method at several budgets.

The proxy (:mod:`visiondrop.zoo.proxies`: shapes-llava on ShapesVQA by default, or
shapes-llava-2 on ShapesVQA-2) gives the questions, their kinds and how an answer is
read. :func:`run_fidelity` answers the same questions once with the full (unpruned) model
and once per (method, budget) pair, and returns a :class:`FidelityResult`: for each
run the accuracy per question kind, overall, the percent of the full model's overall
accuracy, wall seconds, and which questions it got right (``correct``, one
``'0'``/``'1'`` per question in item order). Because the per-question outcomes are
kept, the accuracy of any leading slice of a committed run can be recomputed
(:func:`slice_accuracy`, :meth:`FidelityResult.slice_accuracy_by_kind`), which is
what a regression test on a few questions compares against.

:func:`save` writes ``fidelity.json`` (read back by :func:`load`), ``fidelity.md``
(:func:`to_markdown`) and ``fidelity.png`` (:func:`plot`).

``fidelity.json`` (``format`` ``"visiondrop-fidelity"``, ``version`` 1)::

    {"format": "visiondrop-fidelity", "version": 1,
     "metadata": {"model", "command", "date" (UTC ISO 8601), "device" ("cpu"/"cuda"),
                  "device_name", "dtype", "batch_size", "versions" {"visiondrop",
                  "torch", "transformers", "python"}, "questions", "scenes",
                  "limit" (null: the whole held-out set; else the first ``limit``
                  questions), "fingerprint" (the proxy's fingerprint of the scenes used),
                  "kinds" (list), "item_kinds" (one digit per question: its index
                  in "kinds"), "seconds" (total), "proxy" (its registry name; absent in
                  files written before there were two: then "shapes-llava")},
     "entries": [{"method", "budget" (null for "full"), "accuracy" {kind: 0-1, ...,
                  "overall"}, "percent_of_full" (null when the full model scores 0),
                  "correct" ("0101..."), "seconds"}, ...]}

The first entry is always the full model (method ``"full"``, budget null). A method
spec with options (``visiondrop[positions=keep]``) is its entries' ``method``;
``positions="both"`` runs each method as ``name[positions=reindex]`` and
``name[positions=keep]`` (:func:`with_positions`).
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from ..schedule import BudgetInfeasible
from ..zoo.proxies import DEFAULT_PROXY, Proxy, get_proxy
from .vqa import Item

FORMAT = "visiondrop-fidelity"
VERSION = 1
FULL = "full"
DEFAULT_BUDGETS = (192, 128, 64, 32, 16)
# Named options worth a line of their own by default: VisionDrop with RoPE positions
# kept (the release renumbers them; see docs/faithfulness.md).
DEFAULT_VARIANTS = ("visiondrop[positions=keep]",)
#: ``positions=``: None runs each method with its own default position policy; a policy
#: runs every method with it, "both" with each (labelled ``name[positions=...]``).
POSITION_CHOICES = ("reindex", "keep", "both")
HELDOUT_QUESTIONS = get_proxy(DEFAULT_PROXY).heldout_questions  # shapes-llava's; others: their Proxy's
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "fidelity.json", "fidelity.md", "fidelity.png"
_TOLERANCE = 1e-9


class FidelityConfigError(ValueError):
    """A bad argument of the benchmark, found before any compute. ``parameter``
    names it (``methods``, ``budgets``, ``batch_size``, ``items``, ``positions``, ``proxy``)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class Entry:
    """One run: the full model (``method == "full"``, ``budget is None``) or one
    method at one budget.

    Attributes:
        accuracy: 0-1 per question kind present in the questions, plus ``overall``.
        percent_of_full: 100 x overall / the full model's overall (None when the full
            model scores 0).
        correct: ``'1'`` where the answer was right, ``'0'`` where wrong, one
            character per question in item order.
        seconds: wall time of the run.
        infeasible: why the method cannot reach this budget on this model (then
            ``accuracy`` is empty, ``correct`` is "" and nothing ran), else None.
    """

    method: str
    budget: int | None
    accuracy: dict[str, float]
    percent_of_full: float | None
    correct: str
    seconds: float
    infeasible: str | None = None

    @property
    def label(self) -> str:
        return FULL if self.budget is None else f"{self.method}@{self.budget}"


@dataclass(frozen=True)
class Metadata:
    """How a result was made; see the module docstring for each field."""

    model: str
    command: str
    date: str
    device: str
    device_name: str
    dtype: str
    batch_size: int
    versions: dict[str, str]
    questions: int
    scenes: int
    limit: int | None
    fingerprint: str
    kinds: tuple[str, ...]
    item_kinds: str
    seconds: float
    proxy: str = DEFAULT_PROXY


@dataclass(frozen=True)
class FidelityResult:
    metadata: Metadata
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    @property
    def full(self) -> Entry:
        return self.entries[0]

    @property
    def methods(self) -> list[str]:
        """Pruning methods in run order (without ``full``)."""
        return list(dict.fromkeys(e.method for e in self.entries[1:]))

    @property
    def budgets(self) -> list[int]:
        """Every budget run, largest first."""
        return sorted({e.budget for e in self.entries[1:]}, reverse=True)

    def entry(self, method: str, budget: int | None = None) -> Entry:
        for e in self.entries:
            if e.method == method and e.budget == budget:
                return e
        raise KeyError(f"no entry for method {method!r} at budget {budget!r}")

    def slice_accuracy_by_kind(self, entry: Entry, n: int) -> dict[str, float]:
        """Like :func:`~visiondrop.eval.vqa.accuracy_by_kind` over the first ``n`` questions."""
        _check_slice(entry, n)
        return _by_kind(entry.correct[:n], self.metadata.item_kinds[:n], self.metadata.kinds)

    def to_dict(self) -> dict:
        meta = self.metadata
        return {
            "format": FORMAT,
            "version": VERSION,
            "metadata": {f.name: list(meta.kinds) if f.name == "kinds" else getattr(meta, f.name)
                         for f in fields(Metadata)},
            "entries": [{"method": e.method, "budget": e.budget, "accuracy": dict(e.accuracy),
                         "percent_of_full": e.percent_of_full, "correct": e.correct, "seconds": e.seconds,
                         **({"infeasible": e.infeasible} if e.infeasible else {})}
                        for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: object, source: str = "fidelity result") -> FidelityResult:
        """Check ``data`` (as :meth:`to_dict` writes it) and build the result; raises
        ValueError naming ``source`` and the problem."""
        try:
            return _parse(data)
        except _Malformed as error:
            raise ValueError(f"{source}: {error}") from None


def slice_accuracy(entry: Entry, n: int) -> float:
    """Overall accuracy (0-1) of ``entry`` over its first ``n`` questions."""
    _check_slice(entry, n)
    return entry.correct[:n].count("1") / n


# ---------------------------------------------------------------- running


def check_arguments(model, methods: Iterable[str] | str | None = None, budgets: Iterable[int] = DEFAULT_BUDGETS,
                    batch_size: int = 32, positions: str | None = None
                    ) -> tuple[list[str], list[int], dict[tuple[str, int], str]]:
    """Validate the benchmark's arguments for ``model`` without running it.

    Returns ``(methods, budgets, infeasible)``: the method specs
    (:func:`normalize_methods`), the budgets, largest first, and why each infeasible
    (method, budget) pair is. Every pair is applied to the model and removed again, so
    a budget the model cannot take (more than its visual tokens per image), or a
    position policy a method refuses, fails here.

    Raises:
        FidelityConfigError: (a ValueError) naming ``methods``, ``budgets``,
            ``batch_size`` or ``positions``.
        RuntimeError: the model already has an active pruning handle (the full run
            must be unpruned).
    """
    import visiondrop
    from visiondrop.api import _HANDLE_ATTR
    from visiondrop.models import adapter_for

    method_list = normalize_methods(methods, positions)
    budget_list = normalize_budgets(budgets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FidelityConfigError("batch_size", f"must be an int >= 1, got {batch_size!r}")
    existing = getattr(model, _HANDLE_ATTR, None)
    if existing is not None and existing.active:
        raise RuntimeError("the model has an active visiondrop handle; remove it first "
                           "(the benchmark's full run must be unpruned)")
    adapter_for(model)  # an unsupported model fails here, not as a budget error
    infeasible: dict[tuple[str, int], str] = {}
    for method in method_list:
        for budget in budget_list:
            try:
                name, options = parse_method(method)
                visiondrop.apply(model, name, budget=budget, **options).remove()
            except FidelityConfigError:
                raise
            except BudgetInfeasible as error:
                infeasible[method, budget] = str(error)
            except ValueError as error:
                # The method's own checks say which it was: the budget, or an option.
                parameter = "budgets" if str(error).startswith("budget") else "methods"
                raise FidelityConfigError(
                    parameter, f"method {method!r} at budget {budget} on this model: {error}"
                ) from None
    for method in method_list:
        if all((method, budget) in infeasible for budget in budget_list):
            raise FidelityConfigError("budgets", f"method {method!r} can reach none of the budgets {budget_list} on "
                                      f"this model: {infeasible[method, budget_list[-1]]}")
    return method_list, budget_list, infeasible


def parse_method(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``"name[key=value;key=value]"`` -> ``(name, options)``; values
    are typed by the method's config (:func:`visiondrop.methods.options.parse_method_spec`)."""
    from visiondrop.methods.options import parse_method_spec
    from visiondrop.models import model_options

    try:
        return parse_method_spec(spec, model_options())
    except ValueError as error:
        raise FidelityConfigError("methods", str(error)) from None


def normalize_methods(methods: Iterable[str] | str | None, positions: str | None = None) -> list[str]:
    """Method specs (``name`` or ``name[key=value;...]``), checked, then run under
    ``positions`` (:func:`with_positions`). None means every registered method, plus
    :data:`DEFAULT_VARIANTS` when ``positions`` is None (a policy given replaces them)."""
    from visiondrop import available_methods

    available = list(available_methods())
    if methods is None:
        if positions is not None:
            return with_positions(available, positions)
        return available + [v for v in DEFAULT_VARIANTS if parse_method(v)[0] in available]
    names = [methods] if isinstance(methods, str) else list(methods)
    for name in names:
        if name == FULL:
            raise FidelityConfigError("methods", f"{FULL!r} (the unpruned model) always runs; list only "
                                      f"pruning methods, from {available}")
        if parse_method(name)[0] not in available:
            raise FidelityConfigError("methods", f"unknown method {name!r}; available: {available}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise FidelityConfigError("methods", f"listed more than once: {duplicates}")
    return with_positions(names, positions)


def with_positions(specs: Sequence[str], positions: str | None) -> list[str]:
    """Method specs run under a position policy: None leaves them as given; "reindex" or
    "keep" adds ``positions=`` to each; "both" makes two of each, ``name[positions=reindex]``
    then ``name[positions=keep]``.

    A spec that sets ``positions`` itself stays as given, and so does a method whose config
    has no ``positions`` option (nothing to vary: it runs once). A method with the option
    that refuses one of the policies fails in :func:`check_arguments`, before any compute.
    Specs that come out the same run once.
    """
    from visiondrop.methods import get_method
    from visiondrop.methods.options import option_types

    if positions is None:
        return list(specs)
    if positions not in POSITION_CHOICES:
        raise FidelityConfigError("positions", f"must be one of {POSITION_CHOICES} or None, got {positions!r}")
    policies = ("reindex", "keep") if positions == "both" else (positions,)
    expanded: list[str] = []
    for spec in specs:
        name, options = parse_method(spec)
        fixed = "positions" in options or "positions" not in option_types(get_method(name).Config)
        for variant in [spec] if fixed else [_with_option(spec, "positions", p) for p in policies]:
            if variant not in expanded:
                expanded.append(variant)
    return expanded


def _with_option(spec: str, key: str, value: str) -> str:
    """``name[a=1]`` -> ``name[a=1;key=value]``; ``name`` -> ``name[key=value]``."""
    name, _, rest = spec.partition("[")
    options = rest.removesuffix("]").strip("; ")
    return f"{name}[{options + ';' if options else ''}{key}={value}]"


def normalize_budgets(budgets: Iterable[int]) -> list[int]:
    """Budgets checked to be distinct ints >= 1, largest first."""
    if isinstance(budgets, int | str):
        raise FidelityConfigError("budgets", f"expected a sequence of ints, got {budgets!r}")
    values = list(budgets)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FidelityConfigError("budgets", f"every budget must be an int, got {value!r}")
        if value < 1:
            raise FidelityConfigError("budgets", f"every budget must be >= 1, got {value}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise FidelityConfigError("budgets", f"listed more than once: {duplicates}")
    return sorted(values, reverse=True)


def run_fidelity(model, processor, items: Sequence[Item], methods: Iterable[str] | str | None = None,
                 budgets: Iterable[int] = DEFAULT_BUDGETS, batch_size: int = 32, progress: bool = True, *,
                 model_name: str | None = None, command: str | None = None, positions: str | None = None,
                 proxy: str | Proxy = DEFAULT_PROXY) -> FidelityResult:
    """Accuracy of the full model and of every method at every budget on ``items``.

    Args:
        model, processor: the proxy's model (any device and dtype) and its processor.
        items: the questions, e.g. ``get_proxy(name).items(limit)``.
        methods: method specs; None runs every registered method (and, without
            ``positions``, :data:`DEFAULT_VARIANTS`).
        budgets: visual tokens per image; the full model always runs too.
        batch_size: questions per batch.
        progress: a progress bar over the runs.
        model_name: recorded in the metadata (default: the checkpoint's folder name).
        command: recorded in the metadata (default: this process's command line).
        positions: None (each method's own policy), "reindex", "keep" or "both"
            (:func:`with_positions`).
        proxy: the proxy model (a :mod:`visiondrop.zoo.proxies` name or
            :class:`~visiondrop.zoo.proxies.Proxy`): its question kinds, answering and
            fingerprint.

    Every argument is checked first (:func:`check_arguments`); nothing runs if one
    is bad.
    """
    import torch

    proxy = _resolve_proxy(proxy)
    items = list(items)
    _check_items(items, proxy)
    method_list, budget_list, infeasible = check_arguments(model, methods, budgets, batch_size, positions)

    param = next(model.parameters())
    sync = (lambda: torch.cuda.synchronize(param.device)) if param.device.type == "cuda" else (lambda: None)
    # float32 means float32: cuDNN's default TF32 convolutions (CLIP's patch embedding)
    # shift scores enough to change a few kept tokens, and then GPU and CPU tables differ.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if param.dtype == torch.float32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        outcomes = _run_all(proxy, model, processor, items, method_list, budget_list, infeasible, batch_size,
                            progress, sync)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    entries: list[Entry] = []
    full_overall = None
    for method, budget, answers, seconds in outcomes:
        if answers is None:
            entries.append(Entry(method, budget, {}, None, "", 0.0, infeasible[method, budget]))
            continue
        accuracy = proxy.accuracy_by_kind(items, answers)
        if full_overall is None:
            full_overall = accuracy["overall"]
        # the rule accuracy_by_kind scores by: the same words as the expected answer
        correct = "".join("1" if given.split() == item.question.answer.split() else "0"
                          for item, given in zip(items, answers))
        entries.append(Entry(method, budget, accuracy, _percent(accuracy["overall"], full_overall), correct,
                             seconds))

    scenes = list({id(item.scene): item.scene for item in items}.values())
    whole = len(scenes) == proxy.heldout_scenes and len(items) == sum(len(s.questions) for s in scenes)
    metadata = Metadata(
        model=model_name or Path(str(getattr(model, "name_or_path", "") or type(model).__name__)).name,
        command=command if command is not None else "python " + shlex.join(sys.argv),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        device=param.device.type,
        device_name=(torch.cuda.get_device_name(param.device) if param.device.type == "cuda"
                     else platform.processor() or platform.machine() or "cpu"),
        dtype=str(param.dtype).removeprefix("torch."),
        batch_size=batch_size,
        versions=_versions(),
        questions=len(items),
        scenes=len(scenes),
        limit=None if whole else len(items),
        fingerprint=proxy.fingerprint(scenes),
        kinds=proxy.kinds,
        item_kinds="".join(str(proxy.kinds.index(item.question.kind)) for item in items),
        seconds=round(sum(e.seconds for e in entries), 3),
        proxy=proxy.name,
    )
    return FidelityResult(metadata, tuple(entries))


def _resolve_proxy(proxy: str | Proxy) -> Proxy:
    if isinstance(proxy, Proxy):
        return proxy
    try:
        return get_proxy(proxy)
    except ValueError as error:
        raise FidelityConfigError("proxy", str(error).removeprefix("proxy: ")) from None


def _check_items(items: list[Item], proxy: Proxy) -> None:
    """The items are questions of ``proxy``'s kinds, few enough kinds for one digit each."""
    if not items:
        raise FidelityConfigError("items", "no questions to answer")
    foreign = sorted({item.question.kind for item in items} - set(proxy.kinds))
    if foreign:
        raise FidelityConfigError("items", f"question kinds {foreign} are not {proxy.name}'s {list(proxy.kinds)}; "
                                  f"take its questions from get_proxy({proxy.name!r}).items()")
    if len(proxy.kinds) > 10:  # item_kinds stores one digit per question
        raise RuntimeError("item_kinds needs one digit per kind; more than 10 kinds")


def _run_all(proxy, model, processor, items, method_list, budget_list, infeasible, batch_size, progress, sync):
    """Answer ``items`` unpruned, then once per feasible (method, budget):
    ``[(method, budget, answers or None when infeasible, seconds)]``."""
    from tqdm.auto import tqdm

    import visiondrop

    proxy.answer(model, processor, items[:1])  # warm-up (first-call costs), so that no run's seconds include it
    runs = [(FULL, None)] + [(method, budget) for method in method_list for budget in budget_list]
    outcomes: list[tuple[str, int | None, list[str], float]] = []
    bar = tqdm(runs, desc="fidelity", unit="run", disable=not progress)
    for method, budget in bar:
        bar.set_postfix_str(FULL if budget is None else f"{method} @ {budget}")
        if (method, budget) in infeasible:
            outcomes.append((method, budget, None, 0.0))
            continue
        sync()
        start = time.perf_counter()
        if budget is None:
            answers = proxy.answer(model, processor, items, batch_size=batch_size)
        else:
            name, options = parse_method(method)
            with visiondrop.apply(model, name, budget=budget, **options):
                answers = proxy.answer(model, processor, items, batch_size=batch_size)
        sync()
        outcomes.append((method, budget, answers, round(time.perf_counter() - start, 3)))

    return outcomes


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import visiondrop

    return {"visiondrop": visiondrop.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _percent(overall: float, full_overall: float) -> float | None:
    return None if full_overall == 0 else 100.0 * (overall / full_overall)


def _by_kind(correct: str, item_kinds: str, kinds: Sequence[str]) -> dict[str, float]:
    right: dict[str, list[bool]] = {}
    for bit, kind in zip(correct, item_kinds):
        right.setdefault(kinds[int(kind)], []).append(bit == "1")
    table = {kind: sum(v) / len(v) for kind in kinds if (v := right.get(kind))}
    table["overall"] = correct.count("1") / max(1, len(correct))
    return table


def _check_slice(entry: Entry, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(entry.correct):
        raise ValueError(f"n must be an int in [1, {len(entry.correct)}] (questions of the run), got {n!r}")


# ---------------------------------------------------------------- reports


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def to_markdown(result: FidelityResult) -> str:
    """A Markdown table (rows: full, then method x budget; columns: the kinds,
    overall, % of full) under a header saying how it was made."""
    meta = result.metadata
    proxy = get_proxy(meta.proxy)
    v = meta.versions
    if meta.limit is None:
        data = f"all {meta.questions:,} held-out questions ({meta.scenes} scenes)"
    else:
        data = (f"the first {meta.questions:,} of {proxy.heldout_questions:,} held-out questions "
                f"({meta.scenes} scenes)")
    lines = [
        f"## Fidelity: {meta.model} on {proxy.dataset}",
        "",
        (f"Accuracy (%) on {data}, fingerprint `{meta.fingerprint[:16]}`. Budget: visual tokens per image "
         "(averaged over the LLM's layers); % of full: overall accuracy relative to the unpruned model's."),
        "",
        f"- command: `{meta.command}`",
        (f"- device: {meta.device} ({meta.device_name}), {meta.dtype}, batch size {meta.batch_size}, "
         f"{meta.seconds:.1f} s in all"),
        "- versions: " + ", ".join(f"{name} {v.get(name, '?')}" for name in ("visiondrop", "torch", "transformers",
                                                                              "python")),
        f"- date: {meta.date}",
        "",
        "| method | budget | " + " | ".join(meta.kinds) + " | overall | % of full |",
        "|---|---:|" + "---:|" * (len(meta.kinds) + 2),
    ]
    reasons: dict[str, int] = {}
    for e in result.entries:
        cells = [e.method, FULL if e.budget is None else str(e.budget)]
        if e.infeasible:
            mark = reasons.setdefault(e.method, len(reasons) + 1)
            cells += ["—"] * (len(meta.kinds) + 1) + [f"infeasible ({mark})"]
        else:
            cells += [_pct(e.accuracy.get(kind)) for kind in meta.kinds]
            cells += [_pct(e.accuracy["overall"]),
                      "n/a" if e.percent_of_full is None else f"{e.percent_of_full:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if reasons:
        lines += ["", "Infeasible: the method's schedule cannot average that few visual tokens over this LM's "
                  "layers; the smallest budget each reaches is in the reason."]
        for method, mark in reasons.items():
            smallest = min(e.budget for e in result.entries if e.method == method and e.infeasible)
            lines.append(f"({mark}) {method} at {smallest}: {result.entry(method, smallest).infeasible}")
    return "\n".join(lines) + "\n"


def plot(result: FidelityResult, path: str | Path) -> Path:
    """Overall accuracy against budget (log scale), one line per method, the full
    model as a dashed horizontal line; written as PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    meta = result.metadata
    proxy = get_proxy(meta.proxy)
    fig = Figure(figsize=(9, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot()
    markers = "osD^vP*Xh<>"
    for k, method in enumerate(result.methods):
        points = sorted((e.budget, 100 * e.accuracy["overall"]) for e in result.entries
                        if e.method == method and not e.infeasible)
        ax.plot([b for b, _ in points], [a for _, a in points], marker=markers[k % len(markers)], label=method)
    full = 100 * result.full.accuracy["overall"]
    ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"full (unpruned): {full:.1f}%")
    budgets = result.budgets
    ax.set_xscale("log", base=2)
    if budgets:
        ax.set_xticks(budgets, labels=[str(b) for b in budgets])
        ax.set_xlim(min(budgets) / 1.2, max(budgets) * 1.2)
    ax.minorticks_off()
    ax.set_ylim(0, 105)  # the full model's line (often near 100) stays off the frame's edge
    ax.set_xlabel("budget (visual tokens per image)")
    ax.set_ylabel("overall accuracy (%)")
    count = (f"{meta.questions:,} questions" if meta.limit is None
             else f"first {meta.questions:,} of {proxy.heldout_questions:,} questions")
    ax.set_title(f"{Path(meta.model).name or meta.model}: {proxy.dataset} held-out\n{count}", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)  # beside the lines, never over them
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def save(result: FidelityResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``fidelity.json``, ``fidelity.md`` and ``fidelity.png`` into ``out_dir``
    (created); returns their paths by kind ("json", "markdown", "plot")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "plot": out / PLOT_NAME}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    paths["markdown"].write_text(to_markdown(result))
    plot(result, paths["plot"])
    return paths


def load(path: str | Path) -> FidelityResult:
    """Read a ``fidelity.json`` (or the folder holding one) back into the result.

    Raises:
        ValueError: not JSON, or not a valid fidelity result (missing keys, wrong
            types, a ``correct`` string with other characters than 0/1 or of the
            wrong length, accuracies that disagree with it ...); the message names
            the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    return FidelityResult.from_dict(data, source=str(path))


# ---------------------------------------------------------------- parsing


class _Malformed(Exception):
    pass


_META_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "command": (str,), "date": (str,), "device": (str,), "device_name": (str,), "dtype": (str,),
    "batch_size": (int,), "versions": (dict,), "questions": (int,), "scenes": (int,),
    "limit": (int, type(None)), "fingerprint": (str,), "item_kinds": (str,), "seconds": (int, float),
}
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "budget": (int, type(None)), "accuracy": (dict,), "percent_of_full": (int, float, type(None)),
    "correct": (str,), "seconds": (int, float),
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list",
               type(None): "null"}


def _field(obj: dict, key: str, types: tuple[type, ...], where: str = ""):
    if key not in obj:
        raise _Malformed(f"{where}: missing key {key!r}" if where else f"missing key {key!r}")
    value = obj[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
        raise _Malformed(f"{where + '.' if where else ''}{key} must be {names}, got {_short(value)}")
    return value


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} must be an object, got {_short(value)}")
    return value


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)


def _parse(data: object) -> FidelityResult:
    top = _object(data, "the JSON")
    if top.get("format") != FORMAT:
        raise _Malformed(f"'format' must be {FORMAT!r}, got {_short(top.get('format'))}")
    version = _field(top, "version", (int,))
    if version != VERSION:
        raise _Malformed(f"unsupported version {version} (this visiondrop reads version {VERSION})")
    meta_raw = _field(top, "metadata", (dict,))
    meta = {key: _field(meta_raw, key, types, "metadata") for key, types in _META_TYPES.items()}
    kinds = _field(meta_raw, "kinds", (list,), "metadata")
    if not kinds or len(kinds) > 10 or not all(isinstance(k, str) for k in kinds) or len(set(kinds)) != len(kinds):
        raise _Malformed(f"metadata.kinds must be a list of 1-10 distinct strings, got {_short(kinds)}")
    for key, value in meta["versions"].items():
        if not isinstance(value, str):
            raise _Malformed(f"metadata.versions.{key} must be a string, got {_short(value)}")
    for key in ("batch_size", "questions", "scenes"):
        if meta[key] < 1:
            raise _Malformed(f"metadata.{key} must be >= 1, got {meta[key]}")
    questions = meta["questions"]
    if meta["limit"] is not None and meta["limit"] != questions:
        raise _Malformed(f"metadata.limit ({meta['limit']}) must be null or equal metadata.questions ({questions})")
    item_kinds = meta["item_kinds"]
    if len(item_kinds) != questions:
        raise _Malformed(f"metadata.item_kinds has {len(item_kinds)} characters for {questions} questions")
    if set(item_kinds) - {str(i) for i in range(len(kinds))}:
        raise _Malformed(f"metadata.item_kinds must hold only the digits 0-{len(kinds) - 1} (indices into kinds)")
    proxy = meta_raw.get("proxy", DEFAULT_PROXY)  # files from before the registry: shapes-llava
    try:
        get_proxy(proxy)
    except ValueError as error:
        raise _Malformed(f"metadata.{error}") from None
    metadata = Metadata(**{**meta, "seconds": float(meta["seconds"])}, kinds=tuple(kinds), proxy=proxy)

    raw_entries = _field(top, "entries", (list,))
    if not raw_entries:
        raise _Malformed("entries is empty (the first entry must be the full model)")
    entries: list[Entry] = []
    seen: set[tuple[str, int | None]] = set()
    for i, raw in enumerate(raw_entries):
        where = f"entries[{i}]"
        fields = {key: _field(_object(raw, where), key, types, where) for key, types in _ENTRY_TYPES.items()}
        method, budget, correct = fields["method"], fields["budget"], fields["correct"]
        reason = raw.get("infeasible")
        if i == 0 and (method != FULL or budget is not None):
            raise _Malformed(f"{where} must be the full model (method 'full', budget null), "
                             f"got method {method!r}, budget {budget!r}")
        if i > 0 and (method == FULL or budget is None or budget < 1):
            raise _Malformed(f"{where} must be a pruning method at a budget >= 1, "
                             f"got method {method!r}, budget {budget!r}")
        if (method, budget) in seen:
            raise _Malformed(f"{where}: method {method!r} at budget {budget!r} appears twice")
        seen.add((method, budget))
        if reason is not None:
            if not isinstance(reason, str) or not reason or i == 0:
                raise _Malformed(f"{where}.infeasible must be a non-empty string (and never on the full model)")
            if correct or fields["accuracy"] or fields["percent_of_full"] is not None:
                raise _Malformed(f"{where} is infeasible: correct must be '', accuracy {{}} and percent_of_full null")
            entries.append(Entry(method, budget, {}, None, "", float(fields["seconds"]), reason))
            continue
        if len(correct) != questions:
            raise _Malformed(f"{where}.correct has {len(correct)} characters for {questions} questions")
        if set(correct) - {"0", "1"}:
            raise _Malformed(f"{where}.correct must hold only '0' and '1', found {sorted(set(correct) - {'0', '1'})}")
        accuracy = {}
        for kind, value in fields["accuracy"].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Malformed(f"{where}.accuracy.{kind} must be a number, got {_short(value)}")
            accuracy[kind] = float(value)
        expected = _by_kind(correct, item_kinds, kinds)
        if set(accuracy) != set(expected):
            raise _Malformed(f"{where}.accuracy must have the keys {sorted(expected)} "
                             f"(the kinds asked, and overall), got {sorted(accuracy)}")
        for kind, value in expected.items():
            if not _close(accuracy[kind], value):
                raise _Malformed(f"{where}.accuracy.{kind} = {accuracy[kind]} disagrees with {where}.correct "
                                 f"({value})")
        full_overall = accuracy["overall"] if i == 0 else entries[0].accuracy["overall"]
        percent, want = fields["percent_of_full"], _percent(accuracy["overall"], full_overall)
        if (percent is None) != (want is None) or (want is not None and not _close(percent, want)):
            raise _Malformed(f"{where}.percent_of_full = {percent} disagrees with the accuracies ({want})")
        if fields["seconds"] < 0:
            raise _Malformed(f"{where}.seconds must be >= 0, got {fields['seconds']}")
        entries.append(Entry(method, budget, accuracy, None if percent is None else float(percent), correct,
                             float(fields["seconds"])))
    return FidelityResult(metadata, tuple(entries))
