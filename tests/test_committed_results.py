"""The committed result pages say what their JSON says.

docs/fidelity/README.md and docs/ablations/README.md quote summary tables by hand;
these tests parse those tables and compare every number with the committed
fidelity.json beside them, so a re-run that is committed without updating the prose (or
prose edited without a re-run) fails here. docs/ablations also claims that its default
`visiondrop` rows reproduce the main run question by question; that is checked too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from visiondrop.eval import fidelity

DOCS = Path(__file__).resolve().parents[1] / "docs"
BUDGET_HEADER = re.compile(r"^\| (?:method|variant) \|(?: [^|]* \|)*? 192 \|")


def _summary_rows(readme: Path) -> tuple[list[int], dict[str, list[str]]]:
    """The first table under '## Summary': its budget columns, and per row the method
    spec found in its first cell (a `code` span, else the first word) -> the cells."""
    lines = readme.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## Summary"))
    table = [line for line in lines[start:] if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    budgets = [int(c) for c in header if c.isdigit()]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[len(header) - len(budgets):]
    return budgets, rows


def _spec(first_cell: str, base: str) -> str:
    """The entry's method spec for a summary row: `visiondrop` rows name the method,
    option rows (`llm_scores="text"`) are options of `base`."""
    code = re.search(r"`([^`]+)`", first_cell)
    text = code.group(1) if code else first_cell.split()[0].strip(",")
    if "=" not in text:
        return text
    key, value = text.split("=", 1)
    return f"{base}[{key}={value.strip(chr(34))}]"


def _committed_cell(result: fidelity.FidelityResult, spec: str, budget: int) -> str:
    entry = next(e for e in result.entries
                 if e.method.lower() == spec.lower() and e.budget == budget)
    return "—" if entry.infeasible else f"{100 * entry.accuracy['overall']:.1f}"


@pytest.mark.parametrize("page", ["fidelity", "ablations"])
def test_summary_table_matches_the_committed_json(page):
    result = fidelity.load(DOCS / page / "fidelity.json")
    budgets, rows = _summary_rows(DOCS / page / "README.md")
    checked = 0
    for first_cell, cells in rows.items():
        spec = _spec(first_cell, base="visiondrop")
        if spec == fidelity.FULL.split()[0]:  # the unpruned model: one number, first column
            assert cells[0] == f"{100 * result.entries[0].accuracy['overall']:.1f}"
            assert result.entries[0].budget is None
            continue
        for budget, cell in zip(budgets, cells, strict=True):
            assert cell.strip("*") == _committed_cell(result, spec, budget), (page, spec, budget)
            checked += 1
    assert checked == len(result.entries) - 1  # every entry but the full model is quoted


def test_ablation_defaults_reproduce_the_main_run_question_by_question():
    main = fidelity.load(DOCS / "fidelity" / "fidelity.json")
    ablations = fidelity.load(DOCS / "ablations" / "fidelity.json")
    assert main.metadata.fingerprint == ablations.metadata.fingerprint
    pairs = [(a, m) for a in ablations.entries for m in main.entries
             if a.method == m.method and a.budget == m.budget and a.method in ("full", "visiondrop")]
    assert len(pairs) == 1 + len(ablations.budgets)
    for ours, theirs in pairs:
        assert ours.correct == theirs.correct, ours.label


def test_data_parallel_tables_match_the_committed_json():
    """docs/multi-gpu.md and the run's own table quote the committed runs' numbers."""
    from visiondrop.bench import parallel

    folder = DOCS / "benchmarks" / "h100-dp-shared"
    runs = parallel.load_runs(folder, "dp-llava-1.5-7b-b64")
    assert [run["world_size"] for run in runs] == [1, 2] and runs[1]["devices"] == 1
    table = parallel.to_markdown(runs)
    assert (folder / "dp-llava-1.5-7b-b64.md").read_text().strip() == table.strip()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    page = (DOCS / "multi-gpu.md").read_text()
    for row in rows:
        assert row in page, row


GENERATE = DOCS / "benchmarks" / "h100-generate"
RUNS = {"A before": "a-baseline", "A after": "a-stage-ops", "B before": "b-baseline", "B after": "b-decode-masks",
        "B check": "b-check"}
VARIANTS = ("full", "visiondrop", "visionzip", "fastv", "ideal")
GRAPHS = DOCS / "benchmarks" / "h100-graphs"


def test_generate_tables_quote_the_committed_runs():
    """docs/benchmarks' generate() table and the README's Speed table: every median is the
    committed JSON's (rounded as printed), and each run's own table is its JSON's."""
    import json

    from visiondrop.bench import generate

    for folder in GENERATE.iterdir():
        for path in folder.glob("*.json"):
            assert path.with_suffix(".md").read_text().strip() == generate.to_markdown(json.loads(path.read_text()))
    lines = (DOCS / "benchmarks" / "README.md").read_text().splitlines()
    start = lines.index("| case | run | full | VisionDrop | VisionZip | FastV | ideal |")
    checked, case = 0, None
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        case = cells[0] or case
        model = "llava-next-7b-b320" if "NeXT" in case else "llava-1.5-7b-b64"
        key = "generate_ms@" + re.search(r"b(\d+), (\d+) new", case).expand(r"b\1_t\2")
        figures = json.loads((GENERATE / RUNS[cells[1]] / f"generate-{model}.json").read_text())["figures"]
        for variant, cell in zip(VARIANTS, cells[2:]):
            if cell != "-":
                assert float(cell.split()[0].rstrip("*")) == round(figures[variant][key]["median"], 1), line
                checked += 1
    assert checked >= 80
    # the README's Speed table: eager and "+ graphs" rows, both from docs/benchmarks/h100-graphs
    readme = (DOCS.parent / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(readme) if line.startswith("| `generate()`, ms |"))
    sources = [("b1_t1", "llava-1.5-7b-b64"), ("b1_t64", "llava-1.5-7b-b64"), ("b16_t1", "llava-1.5-7b-b64"),
               ("b16_t64", "llava-1.5-7b-b64"), ("b1_t1", "llava-next-7b-b320"), ("b4_t1", "llava-next-7b-b320")]
    rows = readme[start + 2:start + 2 + 2 * len(sources)]
    quoted = 0
    for index, row in enumerate(rows):
        key, model = sources[index // 2]
        figures = json.loads((GRAPHS / f"generate-{model}.json").read_text())["figures"]
        graphed = index % 2 == 1
        full = figures["full"][f"generate_ms@{key}"]["median"]
        for variant, cell in zip(VARIANTS, [c.strip() for c in row.strip("|").split("|")][1:]):
            if not cell:
                assert graphed and variant == "ideal", row  # no ideal under graphs
                continue
            median = figures[variant + "+graphs" if graphed else variant][f"generate_ms@{key}"]["median"]
            printed = cell.split()[0]
            decimals = len(printed.partition(".")[2])
            assert abs(float(printed) - median) <= 0.5 * 10 ** -decimals, row
            if "(" in cell:  # the speed-up over the eager full model of the same run
                assert cell.split("(")[1].rstrip(")") == f"{full / median:.2f}x", row
            quoted += 1
    assert quoted == 6 * 4 + 6 * 5


def test_graph_run_tables_quote_the_committed_runs():
    """docs/benchmarks' tables of the cuda_graphs run are the committed runs' own tables,
    and every graph variant replayed."""
    import json

    from visiondrop.bench import generate

    text = (DOCS / "benchmarks" / "README.md").read_text()
    for path in sorted(GRAPHS.glob("*.json")):
        result = json.loads(path.read_text())
        table = generate.to_markdown(result)
        assert path.with_suffix(".md").read_text().strip() == table
        assert table.split("\n\n")[0] in text, path.name
        assert result["graphs"] and all(counts["replays"] > 0 for counts in result["graphs"].values())


@pytest.mark.parametrize(("folder", "name"), [("h100-internvl3", "internvl3-8b"), ("h100-qwen3-vl", "qwen3-vl-8b"),
                                             ("h100-gemma3", "gemma-3-4b")])
def test_issue_20_run_tables_are_the_committed_runs(folder, name):
    import json

    from visiondrop.bench import generate

    folder = DOCS / "benchmarks" / folder
    result = json.loads((folder / f"generate-{name}-b64.json").read_text())
    table = generate.to_markdown(result)
    assert (folder / f"generate-{name}-b64.md").read_text().strip() == table
    assert table.split("\n\n")[0] in (DOCS / "benchmarks" / "README.md").read_text()
    assert result["config"]["model"] == name and result["environment"]["gpu"].startswith("NVIDIA")
