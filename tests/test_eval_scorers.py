"""The benchmark scorers against hand-computed values: VQA's soft accuracy and answer
normalisation, POPE per split, MME's acc + acc+, GQA, ScienceQA and MMBench's letter
parsing and circular evaluation, and the Avg. % of a pruned model."""

import pytest

from visiondrop.eval.scorers import (
    HEADLINE,
    SCORERS,
    normalize_gqa_answer,
    normalize_vqa_answer,
    parse_mmbench_answer,
    parse_mme_answer,
    parse_pope_answer,
    parse_scienceqa_answer,
    relative_scores,
    score_exact,
    score_gqa,
    score_mmbench,
    score_mme,
    score_pope,
    score_scienceqa,
    score_vqa,
    vqa_soft_accuracy,
)


def rec(prediction, reference, id="q", **meta):
    return {"id": id, "prediction": prediction, "reference": reference, "meta": meta, "prompt": ""}


# ------------------------------------------------------------------------------ VQA


@pytest.mark.parametrize("humans, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_soft_accuracy_ladder(humans, expected):
    # k of 10 humans agree: leave-one-out mean of min(1, agreeing others / 3), e.g. k=2:
    # (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    refs = ["dog"] * humans + ["cat"] * (10 - humans)
    assert vqa_soft_accuracy("dog", refs) == pytest.approx(expected)


@pytest.mark.parametrize("raw, normal", [
    ("Two.", "2"),            # number word to digit, final period dropped
    ("the dog", "dog"),       # articles removed
    ("A Red-Car!", "red car"),  # lower-case; "-" and "!" not touching a space become spaces
    ("dont", "don't"),        # contraction table restores the apostrophe
    ("don't", "don't"),
    ("1,000", "1000"),        # comma inside a number removed, no space left
    ("red, white", "red white"),
    ("2.5", "2.5"),           # a period before a digit stays
    ("none", "0"),
    ("yes\n", "yes"),
])
def test_vqa_normalisation(raw, normal):
    assert normalize_vqa_answer(raw) == normal


def test_vqa_scores_after_normalising_both_sides():
    # "Two." matches the three "2"s and a "two" (4 humans -> 1.0); "The cat." matches 3 "cat"s -> 0.9
    first = rec("Two.", ["2", "2", "2", "two", "3", "3", "3", "3", "3", "3"], id="a")
    second = rec("The cat.", ["cat"] * 3 + ["dog"] * 7, id="b")
    assert score_vqa([first, second]) == {"accuracy": pytest.approx(95.0), "count": 2}
    assert score_vqa([rec("1,000", ["1000"] * 10)])["accuracy"] == pytest.approx(100.0)
    assert score_vqa([rec(None, ["yes"] * 10)])["accuracy"] == 0.0


def test_vqa_refuses_references_that_are_not_ten_answers():
    with pytest.raises(ValueError, match="10 human answers"):
        score_vqa([rec("yes", "yes")])
    with pytest.raises(ValueError, match="10 human answers"):
        score_vqa([rec("yes", ["yes"] * 3)])
    with pytest.raises(ValueError, match="no prediction records"):
        score_vqa([])


# ----------------------------------------------------------------------------- POPE


@pytest.mark.parametrize("text, parsed", [
    ("No, there is not.", "no"),
    ("Yes, there is a dog.", "yes"),
    ("There is no dog in the image.", "no"),
    ("Yes. No other animals are visible.", "yes"),  # only the first sentence counts
    ("no", "no"),
    ("Not at all", "yes"),  # LLaVA looks for the words "No", "no", "not": "Not" is none of them
    ("I cannot tell", "yes"),
])
def test_pope_answer_parsing_follows_llava(text, parsed):
    assert parse_pope_answer(text) == parsed


def test_pope_metrics_per_split_not_pooled():
    random = [rec("Yes", "yes"), rec("Yes", "no"), rec("No", "no"), rec("No", "yes"), rec("Yes, there is.", "yes")]
    adversarial = [rec("No", "yes"), rec("no.", "no")]
    for r in random:
        r["meta"]["split"] = "random"
    for r in adversarial:
        r["meta"]["split"] = "adversarial"
    out = score_pope(random + adversarial)
    # random: TP 2, FP 1, TN 1, FN 1
    assert out["splits"]["random"] == pytest.approx(
        {"accuracy": 60.0, "precision": 200 / 3, "recall": 200 / 3, "f1": 200 / 3, "yes_ratio": 60.0, "count": 5})
    # adversarial: TP 0, FP 0, TN 1, FN 1; no "yes" predicted -> precision 0 instead of a division by zero
    assert out["splits"]["adversarial"] == pytest.approx(
        {"accuracy": 50.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "count": 2})
    assert list(out["splits"]) == ["random", "adversarial"]
    # means over splits (one pooled matrix would give accuracy 4/7 = 57.1)
    assert out["accuracy"] == pytest.approx(55.0)
    assert out["f1"] == pytest.approx(100 / 3)
    assert out["count"] == 7


def test_pope_needs_a_split_and_a_yes_no_reference():
    with pytest.raises(ValueError, match="split"):
        score_pope([rec("yes", "yes")])
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        score_pope([rec("yes", "maybe", split="random")])


# ------------------------------------------------------------------------------ MME


@pytest.mark.parametrize("text, parsed", [
    ("Yes", "yes"), ("No", "no"), ("Yes, it is.", "yes"), ("no.", "no"), ("None", "no"), ("Not really", "no"),
    (" yes ", "yes"), ("I think yes", "other"), ("Maybe", "other"),
])
def test_mme_answer_parsing(text, parsed):
    assert parse_mme_answer(text) == parsed


def test_mme_scores_acc_plus_acc_plus_per_subtask():
    records = [
        # existence, one image, one of its two answers wrong: acc 50, acc+ 0
        rec("Yes", "Yes", subtask="existence", image_id="1.jpg"),
        rec("Yes", "No", subtask="existence", image_id="1.jpg"),
        # count: image a both right, image b one wrong: acc 75, acc+ 50
        rec("yes", "Yes", subtask="count", image_id="a.jpg"),
        rec("no", "No", subtask="count", image_id="a.jpg"),
        rec("No", "Yes", subtask="count", image_id="b.jpg"),
        rec("No", "No", subtask="count", image_id="b.jpg"),
        # code_reasoning: "I think yes" reads as "other" (wrong), "Not really" as no (right)
        rec("I think yes", "Yes", subtask="code_reasoning", image_id="c.png"),
        rec("Not really", "No", subtask="code_reasoning", image_id="c.png"),
        # OCR named in lower case; image "1.jpg" again, but another subtask: its own pair
        rec("Yes", "Yes", subtask="ocr", image_id="1.jpg"),
        rec("No", "No", subtask="ocr", image_id="1.jpg"),
    ]
    out = score_mme(records)
    assert out["subtasks"]["existence"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0, "count": 2, "images": 1}
    assert out["subtasks"]["count"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0, "count": 4, "images": 2}
    assert out["subtasks"]["code_reasoning"]["score"] == 50.0
    assert out["subtasks"]["OCR"]["score"] == 200.0
    assert out["perception"] == 375.0
    assert out["cognition"] == 50.0
    assert out["total"] == 425.0
    assert out["other"] == 1 and out["count"] == 10


def test_mme_refuses_unknown_subtasks():
    with pytest.raises(ValueError, match="unknown MME subtask"):
        score_mme([rec("Yes", "Yes", subtask="existance", image_id="1.jpg")])


# ------------------------------------------------------------------------------ GQA


def test_gqa_exact_match_after_llava_normalisation():
    assert normalize_gqa_answer(" Table.. ") == "table"
    records = [rec("Yes.", "yes"), rec("Left", "left"), rec("the left", "left"), rec("table..", "table")]
    assert score_gqa(records) == {"accuracy": 75.0, "count": 4}


# ------------------------------------------------------------------------ ScienceQA


@pytest.mark.parametrize("text, letter", [
    ("B", "B"),
    ("B. a magnet", "B"),
    ("The answer is C.", "C"),
    ("D", None),                # only three choices
    ("The answer is C", None),  # LLaVA's pattern needs a character after the letter
    ("(B)", None),
    ("b", None),
    ("AB", None),
    ("", None),
    ("The answer is A. The answer is B.", None),  # two matches: failed
])
def test_scienceqa_parsing_follows_llava(text, letter):
    assert parse_scienceqa_answer(text, 3) == letter


def test_scienceqa_unparsed_answers_count_wrong():
    options = ["iron", "wood", "glass"]
    records = [rec("A", "A", options=options), rec("B. wood", "B", options=options),
               rec("The answer is A.", "B", options=options), rec("(C)", "C", options=options),
               rec("C", 2, options=options)]  # problems.json-style index reference
    assert score_scienceqa(records) == {"accuracy": 60.0, "count": 5, "correct": 3, "unparsed": 1}


# -------------------------------------------------------------------------- MMBench

OPTIONS = {"A": "a dog", "B": "a cat", "C": "a bird", "D": "a fish"}


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("B.", "B"), ("(B)", "B"), ("The answer is B.", "B"), ("the correct answer is (B)", "B"),
    ("Answer: B", "B"), ("B. a cat", "B"), ("(B) a cat", "B"),
    ("A cat.", "B"),                 # equals option B's text
    ("E", None),                     # not an option
    ("The answer is A dog", None),   # "A" is an article here, not a letter
    ("B. a cat; the answer is C.", None),  # two letters
    ("I am not sure", None),
    ("a", None),
])
def test_mmbench_letter_parsing(text, letter):
    assert parse_mmbench_answer(text, OPTIONS) == letter


def _rotations(group, category, answers, gold, **extra):
    return [rec(a, g, id=f"{group}-{k}", group=group, category=category, options=OPTIONS, **extra)
            for k, (a, g) in enumerate(zip(answers, gold))]


def test_mmbench_question_right_only_when_every_rotation_is():
    records = (_rotations(1, "ocr", ["A", "B", "C", "D"], "ABCD", **{"l2-category": "perception"})
               # one rotation wrong: the question fails
               + _rotations(2, "ocr", ["B", "C", "D", "D"], "BCDA", **{"l2-category": "perception"})
               # one rotation unparsed: the question fails
               + _rotations(3, "logic", ["The answer is B.", "no idea"], "BA", **{"l2-category": "reasoning"}))
    out = score_mmbench(records)
    assert out["accuracy"] == pytest.approx(100 / 3)
    assert out["row_accuracy"] == pytest.approx(80.0)  # 8 of 10 rotations right on their own
    assert out["questions"] == 3 and out["count"] == 10 and out["unparsed"] == 1
    assert out["categories"] == {"logic": 0.0, "ocr": 50.0}
    assert out["l2_categories"] == {"perception": 50.0, "reasoning": 0.0}


def test_mmbench_groups_rotations_by_index_modulo_a_million_without_group():
    records = [rec("A", "A", id="r0", index=7, options=OPTIONS, category="x"),
               rec("A", "B", id="r1", index=1_000_007, options=OPTIONS, category="x"),
               rec("C", "C", id="r2", index=8, options=OPTIONS, category="x")]
    out = score_mmbench(records)
    assert out["questions"] == 2 and out["accuracy"] == 50.0
    assert "l2_categories" not in out


# --------------------------------------------------------------- registry and Avg. %


def test_registry_names_every_scorer_and_its_headline():
    assert SCORERS == {"vqa": score_vqa, "pope": score_pope, "mme": score_mme, "gqa": score_gqa,
                       "scienceqa": score_scienceqa, "mmbench": score_mmbench, "exact": score_exact}
    assert set(HEADLINE) == set(SCORERS)
    assert HEADLINE["pope"] == "f1" and HEADLINE["mme"] == "total"


def test_exact_match_for_shapesvqa():
    records = [rec("Red.", "red"), rec(" blue", "blue"), rec("green", "red"), rec("", "red")]
    assert score_exact(records) == {"accuracy": 50.0, "count": 4}


def test_relative_scores_are_percent_of_baseline_and_their_mean():
    out = relative_scores({"gqa": 60.0, "mme": 1500.0}, {"gqa": 62.0, "mme": 1510.0, "pope": 85.9})
    assert out == pytest.approx({"gqa": 6000 / 62, "mme": 150000 / 1510, "avg": (6000 / 62 + 150000 / 1510) / 2})
    with pytest.raises(ValueError, match="no baseline score for pope"):
        relative_scores({"pope": 80.0}, {"gqa": 62.0})
    with pytest.raises(ValueError, match="baseline score is 0"):
        relative_scores({"gqa": 1.0}, {"gqa": 0.0})
