"""CI regression guard for the committed fidelity table (docs/fidelity/fidelity.json).

Runs the shipped shapes-llava on CPU (float32) on the first ``N`` held-out questions,
for the full model and every (method, budget) the committed file holds, and checks
that each run gets the same questions right as the committed GPU run did.

Tolerance, measured (CPU: 2 threads, torch float32, batch 24-36; committed: H100,
float32, batch 64): on the first 36 questions no entry differed from the committed
per-question strings; on the first 240 questions 2 of the 3,840 (entry, question)
outcomes differed (visiondrop[positions=keep] @128 on question 57 and @64 on question
185, one each: near-ties that floating-point order tips), every other entry identical.
So this slice is expected to reproduce exactly; we allow one flipped question per
entry (and two over the whole slice) for another machine's BLAS. That is tight: on
the first 36 questions two budgets of one method differ by at least 2 questions, any
two entries by at least 2, and the pruned runs from the full model by 7 or more, so a
real change of behaviour shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from visiondrop.data import shapes
from visiondrop.eval import fidelity
from visiondrop.eval.fidelity import run_fidelity, slice_accuracy
from visiondrop.eval.vqa import items_of
from visiondrop.zoo.shapes_llava import load_shapes_llava

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "fidelity" / "fidelity.json"
RERUN = "visiondrop fidelity --device cuda --batch-size 64 --out docs/fidelity"
N = 36  # the first 6 scenes, 6 questions of each kind: about 40 s for this file on 2 idle CPU cores
MAX_FLIPS_PER_ENTRY = 1  # questions whose outcome may differ from the committed run (see above)
MAX_FLIPS_IN_ALL = 2
FULL_MODEL_FLOOR = 0.85
# VisPruner's de-duplication is order-dependent: on CPU up to 10 of these 36 questions
# flip against the H100 run while the slice accuracy stays within 1 question (measured
# 2026-11-24), so for it only the accuracy is compared, within 3 questions.
ORDER_DEPENDENT = {"vispruner"}
ORDER_DEPENDENT_TOLERANCE = 3 / N


def _labels() -> list[str]:
    """Entry labels of the committed file, for parametrisation (empty if it does not load:
    test_committed_file_loads then says why)."""
    try:
        return [e.label for e in fidelity.load(COMMITTED).entries]
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="module")
def committed() -> fidelity.FidelityResult:
    return fidelity.load(COMMITTED)


@pytest.fixture(scope="module")
def slice_result(committed) -> fidelity.FidelityResult:
    """The committed runs redone on CPU on the first N questions: the committed entries'
    own method specs and budgets, not the registry's, so registering a method does not
    break this guard before its results are committed."""
    model, processor = load_shapes_llava(device="cpu")
    items = items_of(shapes.heldout(-(-N // len(shapes.KINDS))), N)
    return run_fidelity(model, processor, items, methods=committed.methods, budgets=committed.budgets,
                        batch_size=N, progress=False, model_name="shapes-llava", command="pytest")


def _entry(result: fidelity.FidelityResult, label: str) -> fidelity.Entry:
    return next(e for e in result.entries if e.label == label)


def _flips(ours: fidelity.Entry, theirs: fidelity.Entry) -> list[int]:
    return [i for i in range(N) if ours.correct[i] != theirs.correct[i]]


def test_committed_file_loads_and_covers_the_heldout_set(committed):
    meta = committed.metadata
    assert meta.limit is None and meta.questions == fidelity.HELDOUT_QUESTIONS >= N
    assert meta.dtype == "float32"
    assert committed.full.method == fidelity.FULL
    # a grid: every committed method at every committed budget, so rerunning it redoes exactly these entries
    assert {(e.method, e.budget) for e in committed.entries[1:]} == {
        (m, b) for m in committed.methods for b in committed.budgets}


def test_every_registered_method_is_committed(committed):
    missing = [m for m in fidelity.normalize_methods(None) if m not in committed.methods]
    assert not missing, (
        f"{missing} registered (or a default variant) but absent from {COMMITTED.relative_to(ROOT)}; "
        f"re-run `{RERUN}` on a GPU and commit docs/fidelity")
    missing_budgets = [b for b in fidelity.DEFAULT_BUDGETS if b not in committed.budgets]
    assert not missing_budgets, f"default budgets {missing_budgets} not committed; re-run `{RERUN}`"


def test_slice_has_the_committed_questions(committed, slice_result):
    meta = slice_result.metadata
    assert (meta.device, meta.dtype, meta.questions) == ("cpu", "float32", N)
    assert meta.item_kinds == committed.metadata.item_kinds[:N]
    assert set(meta.item_kinds) == {str(i) for i in range(len(shapes.KINDS))}, "the slice must ask every kind"
    assert [e.label for e in slice_result.entries] == [e.label for e in committed.entries]


def test_full_model_accuracy(committed, slice_result):
    ours, theirs = slice_result.full, committed.full
    assert slice_accuracy(ours, N) >= FULL_MODEL_FLOOR, (
        f"the shipped model scores {slice_accuracy(ours, N):.3f} on the first {N} held-out questions")
    assert abs(slice_accuracy(ours, N) - slice_accuracy(theirs, N)) <= MAX_FLIPS_PER_ENTRY / N
    assert len(_flips(ours, theirs)) <= MAX_FLIPS_PER_ENTRY


@pytest.mark.parametrize("label", _labels())
def test_entry_matches_the_committed_table(committed, slice_result, label):
    ours, theirs = _entry(slice_result, label), _entry(committed, label)
    if theirs.infeasible or ours.infeasible:  # the method cannot reach this budget: nothing ran
        assert ours.infeasible == theirs.infeasible
        return
    if ours.method in ORDER_DEPENDENT:
        # Its rounds amplify CPU/GPU rounding, so single questions flip (docs/baselines.md);
        # the slice's accuracy must still agree.
        assert abs(slice_accuracy(ours, N) - slice_accuracy(theirs, N)) <= ORDER_DEPENDENT_TOLERANCE, label
        return
    flips = _flips(ours, theirs)
    assert len(flips) <= MAX_FLIPS_PER_ENTRY, (
        f"{label}: questions {flips} of the first {N} changed outcome against {COMMITTED.relative_to(ROOT)} "
        f"(CPU {ours.correct} vs committed {theirs.correct[:N]}); if the change is intended, re-run `{RERUN}`")
    assert abs(slice_accuracy(ours, N) - slice_accuracy(theirs, N)) <= MAX_FLIPS_PER_ENTRY / N
    expected = committed.slice_accuracy_by_kind(theirs, N)
    assert ours.accuracy.keys() == expected.keys()
    for kind, value in expected.items():
        asked = N if kind == "overall" else committed.metadata.item_kinds[:N].count(
            str(committed.metadata.kinds.index(kind)))
        assert abs(ours.accuracy[kind] - value) <= MAX_FLIPS_PER_ENTRY / asked, (
            f"{label}: {kind} {ours.accuracy[kind]:.3f} on CPU vs {value:.3f} committed (first {N} questions)")


def test_few_flips_over_the_whole_slice(committed, slice_result):
    flips = {e.label: _flips(e, _entry(committed, e.label)) for e in slice_result.entries
             if not e.infeasible and e.method not in ORDER_DEPENDENT}
    total = sum(len(v) for v in flips.values())
    assert total <= MAX_FLIPS_IN_ALL, f"{total} changed outcomes: { {k: v for k, v in flips.items() if v} }"
