"""Official scoring rules of the LLaVA-1.5 benchmarks, as pure functions of prediction records.

Every scorer takes the records of one merged predictions file (:func:`visiondrop.eval.base.record`:
dicts with ``id``, ``prediction``, ``reference``, ``meta``, ``prompt``) and returns a dict of
metrics. Accuracies, precisions, recalls, F1s and ratios are percentages (0-100); MME's
scores are its own sums of percentages (perception out of 2000, cognition out of 800).

The rules are reimplemented from the scripts that produced the published numbers, each
cited in its function's docstring; where those scripts disagree with each other or leave
a case undefined (a division by zero, a missing answer) the choice is written down there.
Answers that cannot be parsed are always counted wrong, never guessed.

:data:`SCORERS` maps a dataset's ``scorer`` key to its function; :data:`HEADLINE` names the
metric each benchmark's column of the LLaVA-1.5 table reports, which :func:`relative_scores`
turns into the token-pruning papers' "Avg. %".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

# --------------------------------------------------------------------------- helpers


def _prediction(rec: dict) -> str:
    # A missing answer (None) scores as the empty string: wrong, never an error.
    value = rec.get("prediction")
    return "" if value is None else str(value)


def _meta(rec: dict, key: str) -> object:
    meta = rec.get("meta") or {}
    if key not in meta or meta[key] is None:
        raise ValueError(f"record {rec.get('id')!r}: meta has no {key!r}")
    return meta[key]


def _require(records: Sequence[dict], benchmark: str) -> None:
    if not records:
        raise ValueError(f"{benchmark}: no prediction records to score")


def _percent(part: float, whole: float) -> float:
    # An empty denominator (e.g. precision with no "yes" predicted) scores 0 instead of failing.
    return 100.0 * part / whole if whole else 0.0


# ------------------------------------------------------------------ VQA soft accuracy

# The normalisation tables of the VQA evaluation (vqaEval.py, Antol et al. 2015; the same
# tables are in EvalAI's answer processor that LLaVA's m4c_evaluator.py uses). Entries that
# look odd ("somebody'd" -> "somebodyd", capitalised keys that lower-cased text never hits)
# are kept as the official table has them: changing them would change scores.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
#: the official "manualMap": number words up to ten (and "none") become digits
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
#: removed (or turned into spaces) by the punctuation step; "." and "'" are handled apart
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# The official pattern is r"(?!<=\d)(\.)(?!\d)": its "(?!<=" is a typo for a lookbehind and
# asserts nothing, so in effect a period is dropped unless a digit follows ("2.5" survives,
# "two." and "5." lose it). This is the pattern's actual behaviour, written plainly.
_PERIOD = re.compile(r"\.(?!\d)")
_COMMA_IN_NUMBER = re.compile(r"\d,\d")


def _vqa_punctuation(text: str) -> str:
    """vqaEval.py's ``processPunctuation``: each punctuation mark is deleted where it touches
    a space (``"red, white"``) or anywhere when the text has a comma between digits
    (``"1,000"``), otherwise replaced by a space (``"red/white"`` -> ``"red white"``); then
    periods not followed by a digit are deleted."""
    glued = _COMMA_IN_NUMBER.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # the official test looks at the original text, not the partly processed one
        delete = glued or (mark + " " in text) or (" " + mark in text)
        out = out.replace(mark, "" if delete else " ")
    return _PERIOD.sub("", out)


def _vqa_digits_articles(text: str) -> str:
    """vqaEval.py's ``processDigitArticle``: lower-case, number words to digits, drop the
    articles a/an/the, restore the apostrophe of known contractions (``dont`` -> ``don't``)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """An answer as the VQA evaluation compares it.

    The steps of EvalAI's answer processor (the one LLaVA applies to its VQAv2 and VizWiz
    submissions and, via ``llava/eval/m4c_evaluator.py``, to TextVQA's predictions *and*
    human answers): lower-case; delete commas and question marks and split a possessive
    ``'s`` off its word; newlines and tabs to spaces; then the official VQA evaluation's
    ``processPunctuation`` and ``processDigitArticle`` (vqaEval.py, Antol et al.).
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digits_articles(_vqa_punctuation(text))


def vqa_soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy (0-1) of one answer against the human answers.

    The rule of the VQA evaluation (vqaEval.py, Antol et al.; the same in LLaVA's
    m4c_evaluator.py ``TextVQAAccuracyEvaluator``): for each human answer left out in turn,
    ``min(1, #other humans giving the prediction / 3)``, averaged over the humans. With ten
    answers a prediction given by 0, 1, 2, 3, >=4 humans scores 0, 0.3, 0.6, 0.9, 1.
    Prediction and human answers are both normalised by :func:`normalize_vqa_answer`.
    """
    predicted = normalize_vqa_answer(prediction)
    matches = [normalize_vqa_answer(r) == predicted for r in references]
    total = sum(matches)
    # leaving out a matching human removes one match from the others
    per_left_out = [min(1.0, (total - m) / 3.0) for m in matches]
    return sum(per_left_out) / len(per_left_out)


def score_vqa(records: Sequence[dict]) -> dict:
    """VQAv2 / VizWiz / TextVQA accuracy (vqaEval.py, Antol et al.; LLaVA's m4c_evaluator.py).

    ``reference`` is the list of the ten human answers (m4c_evaluator asserts ten; so do we,
    since a single string or a short list is a data bug, not a question).

    Returns ``{"accuracy": percent, "count": n}``.
    """
    _require(records, "vqa")
    total = 0.0
    for rec in records:
        refs = rec.get("reference")
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) != 10:
            raise ValueError(f"record {rec.get('id')!r}: VQA reference must be a list of the 10 human answers, "
                             f"got {refs!r}")
        total += vqa_soft_accuracy(_prediction(rec), [str(r) for r in refs])
    return {"accuracy": 100.0 * total / len(records), "count": len(records)}


# ------------------------------------------------------------------------------- POPE

POPE_SPLITS = ("random", "popular", "adversarial")


def parse_pope_answer(text: str) -> str:
    """``"yes"`` or ``"no"`` as LLaVA's ``llava/eval/eval_pope.py`` reads an answer.

    Keep what precedes the first period, delete commas, split on single spaces; the answer
    is "no" when one of the words is exactly ``No``, ``no`` or ``not``, otherwise "yes"
    (so anything that does not say no, even gibberish, counts as yes).
    """
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def _binary_metrics(pairs: Sequence[tuple[str, str]]) -> dict:
    """Accuracy, precision, recall, F1 ("yes" positive) and the share of "yes" answers."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = _percent(tp, tp + fp)
    recall = _percent(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": _percent(tp + tn, len(pairs)), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": _percent(tp + fp, len(pairs)), "count": len(pairs)}


def score_pope(records: Sequence[dict]) -> dict:
    """POPE as LLaVA-1.5 scored it (``llava/eval/eval_pope.py``).

    Answers are parsed by :func:`parse_pope_answer`; ``reference`` is "yes" or "no";
    ``meta["split"]`` names the sampling setting. Each split gets its own confusion matrix,
    as in LLaVA (which calls its ``eval_pope`` once per ``coco_pope_<split>.json``);
    lmms-eval pools the splits into one matrix instead, which gives other numbers.
    Where LLaVA divides by zero (no "yes" predicted) precision, and then F1, are 0.

    Returns, in percent: ``accuracy`` and ``f1``, means over the splits present (LLaVA-1.5's
    POPE column is the mean F1); ``count``; ``splits``: ``{split: {accuracy, precision,
    recall, f1, yes_ratio, count}}`` (``yes_ratio``: percent of answers read as yes).
    """
    _require(records, "pope")
    by_split: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rec in records:
        gold = str(rec.get("reference", "")).strip().lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"record {rec.get('id')!r}: POPE reference must be 'yes' or 'no', got "
                             f"{rec.get('reference')!r}")
        by_split[str(_meta(rec, "split"))].append((parse_pope_answer(_prediction(rec)), gold))
    order = [s for s in POPE_SPLITS if s in by_split] + sorted(set(by_split) - set(POPE_SPLITS))
    splits = {s: _binary_metrics(by_split[s]) for s in order}
    return {"accuracy": sum(m["accuracy"] for m in splits.values()) / len(splits),
            "f1": sum(m["f1"] for m in splits.values()) / len(splits),
            "count": len(records), "splits": splits}


# -------------------------------------------------------------------------------- MME

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_MME_CANONICAL = {name.lower(): name for name in MME_PERCEPTION + MME_COGNITION}


def parse_mme_answer(text: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"`` as MME's ``eval_tool/calculation.py`` reads an answer:
    lower-cased, exactly "yes"/"no", else "yes" if its first four characters contain "yes",
    else "no" if they contain "no" (so "Not" and "None" read as no), else "other" (wrong).
    Surrounding whitespace is stripped first, as LLaVA strips its generations."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def score_mme(records: Sequence[dict]) -> dict:
    """MME scores (Fu et al.; its ``eval_tool/calculation.py``, which LLaVA-1.5 runs).

    ``meta["subtask"]`` is one of the 14 subtask names (case-insensitive), ``meta["image_id"]``
    the image file name, ``reference`` "Yes" or "No". A subtask's score is ``acc + acc+``:
    ``acc`` the percent of its questions answered right ("other" counts wrong), ``acc+`` the
    percent of its images whose questions (two per image) are all right. The official script
    pairs consecutive lines of the answer file; we pair by (subtask, image_id), the same pairs
    in a correctly ordered file and order-independent. An image with a missing question (a
    partial run) counts right for ``acc+`` when all of its present questions are.

    Returns ``perception`` (sum over the perception subtasks present, of 2000), ``cognition``
    (of 800), ``total``, ``count``, ``other`` (answers read as neither yes nor no) and
    ``subtasks``: ``{name: {acc, acc_plus, score, count, images}}``.
    """
    _require(records, "mme")
    answers: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    other = 0
    for rec in records:
        raw = str(_meta(rec, "subtask"))
        subtask = _MME_CANONICAL.get(raw.lower())
        if subtask is None:
            raise ValueError(f"record {rec.get('id')!r}: unknown MME subtask {raw!r} "
                             f"(expected one of {', '.join(MME_PERCEPTION + MME_COGNITION)})")
        gold = str(rec.get("reference", "")).strip().lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"record {rec.get('id')!r}: MME reference must be 'Yes' or 'No', got "
                             f"{rec.get('reference')!r}")
        parsed = parse_mme_answer(_prediction(rec))
        other += parsed == "other"
        answers[subtask][str(_meta(rec, "image_id"))].append(parsed == gold)

    subtasks = {}
    for name in MME_PERCEPTION + MME_COGNITION:
        if name not in answers:
            continue
        images = answers[name]
        results = [ok for per_image in images.values() for ok in per_image]
        acc = _percent(sum(results), len(results))
        acc_plus = _percent(sum(all(per_image) for per_image in images.values()), len(images))
        subtasks[name] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "count": len(results),
                          "images": len(images)}
    perception = sum(subtasks[n]["score"] for n in MME_PERCEPTION if n in subtasks)
    cognition = sum(subtasks[n]["score"] for n in MME_COGNITION if n in subtasks)
    return {"perception": perception, "cognition": cognition, "total": perception + cognition,
            "count": len(records), "other": other, "subtasks": subtasks}


# -------------------------------------------------------------------------------- GQA


def normalize_gqa_answer(text: str) -> str:
    """A GQA answer as LLaVA compares it: ``scripts/convert_gqa_for_eval.py`` strips trailing
    periods and lower-cases (we also strip surrounding whitespace, as LLaVA's generations
    already are); GQA's official ``eval.py`` then requires an exact string match."""
    return text.strip().rstrip(".").lower()


def score_gqa(records: Sequence[dict]) -> dict:
    """GQA accuracy: exact match after :func:`normalize_gqa_answer` (LLaVA's
    ``convert_gqa_for_eval.py`` + GQA's ``eval.py``). ``reference`` is the answer string,
    normalised the same way (GQA's answers already are).

    Returns ``{"accuracy": percent, "count": n}``.
    """
    _require(records, "gqa")
    right = sum(normalize_gqa_answer(_prediction(r)) == normalize_gqa_answer(str(r.get("reference", "")))
                for r in records)
    return {"accuracy": _percent(right, len(records)), "count": len(records)}


# -------------------------------------------------------------------------- ScienceQA

_LETTERS = "ABCDE"  # LLaVA's --options default
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_scienceqa_answer(prediction: str, n_choices: int) -> str | None:
    """The option letter LLaVA's ``llava/eval/eval_science_qa.py`` reads, or None.

    Three rules, in order: the whole answer is one of A-E; or it starts with a letter of
    A-E followed by ``". "`` ("B. a magnet"); or the pattern ``The answer is ([A-Z]).``
    occurs exactly once (its final ``.`` is any character, so "The answer is B" at the very
    end does not match: kept as LLaVA has it). A letter beyond the question's choices is
    None too. LLaVA counts None wrong (its random guess is dead code): so do we.
    The answer is stripped of surrounding whitespace first, as LLaVA's generations are.
    """
    text = prediction.strip()
    if len(text) == 1 and text in _LETTERS:
        letter = text
    elif len(text) >= 3 and text[0] in _LETTERS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _THE_ANSWER_IS.findall(text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter is not None and letter in _LETTERS[:n_choices] else None


def score_scienceqa(records: Sequence[dict]) -> dict:
    """ScienceQA-IMG accuracy (LLaVA's ``llava/eval/eval_science_qa.py``).

    ``meta["options"]`` is the list of choice texts; ``reference`` the correct letter (an
    integer index is accepted too, as ScienceQA's ``problems.json`` stores it). Unparsed
    answers (:func:`parse_scienceqa_answer` gives None) count wrong.

    Returns ``accuracy`` (percent), ``count``, ``correct``, ``unparsed``.
    """
    _require(records, "scienceqa")
    correct = unparsed = 0
    for rec in records:
        options = _meta(rec, "options")
        gold = rec.get("reference")
        if isinstance(gold, int) and not isinstance(gold, bool):
            gold = _LETTERS[gold]
        letter = parse_scienceqa_answer(_prediction(rec), len(options))
        unparsed += letter is None
        correct += letter is not None and letter == str(gold).strip()
    return {"accuracy": _percent(correct, len(records)), "count": len(records), "correct": correct,
            "unparsed": unparsed}


# ---------------------------------------------------------------------------- MMBench

_BARE_LETTER = re.compile(r"\(?([A-Z])\)?[.:]?")
# the phrase is case-insensitive, the letter is not: "the answer is a dog" names no option
_ANSWER_IS = re.compile(r"(?i:\b(?:the\s+)?(?:correct\s+)?answer\s+is\b|\banswer\s*:)\s*\(?([A-Z])\)?(?=$|[.,;:!)])")
_LETTER_THEN_TEXT = re.compile(r"\(?([A-Z])(?:\)|\.|:|\)\.|\):)\s+\S")


def _option_text(text: str) -> str:
    return " ".join(text.strip().rstrip(".").split()).casefold()


def parse_mmbench_answer(prediction: str, options: Mapping[str, str]) -> str | None:
    """The option letter an MMBench answer names, or None (counted wrong, never guessed).

    MMBench's evaluator (Liu et al.; VLMEvalKit's ``can_infer_option`` / ``can_infer_text``)
    first tries to read a letter from the answer, then to find an option's text in it, and
    only then asks ChatGPT. We keep the unambiguous heuristic part, offline:

    - a bare letter: ``B``, ``B.``, ``(B)``, ``B)``, ``B:``;
    - a letter after "the answer is" / "answer:": ``The answer is B.``, ``The answer is (B)``,
      ``Answer: B`` (upper-case, and ending the answer or followed by punctuation, so neither
      "the answer is a dog" nor "the answer is A dog" names a letter);
    - a letter opening the answer, followed by punctuation and text: ``B. a dog``,
      ``(B) a dog``, ``B: a dog``;
    - failing any letter, the answer equal to exactly one option's text (case, surrounding
      space and a final period ignored).

    The letter rules must agree on one letter, and it must be one of ``options``.
    """
    text = prediction.strip()
    if bare := _BARE_LETTER.fullmatch(text):
        letters = {bare.group(1)}
    else:
        letters = set(_ANSWER_IS.findall(text))
        if lead := _LETTER_THEN_TEXT.match(text):
            letters.add(lead.group(1))
        if not letters:
            letters = {key for key, value in options.items() if _option_text(str(value)) == _option_text(text)}
    # two different letters ("B. ... the answer is C") or two options with that text: no answer
    if len(letters) != 1:
        return None
    letter = letters.pop()
    return letter if letter in options else None


def _mmbench_group(rec: dict) -> object:
    meta = rec.get("meta") or {}
    if meta.get("group") is not None:
        return meta["group"]
    # MMBench's circular files number the k-th rotation of question i as i + k * 10**6
    # (VLMEvalKit groups by index % 1e6); without an index a record is its own question.
    index = meta.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        return index % 1_000_000
    return ("record", rec.get("id"))


def score_mmbench(records: Sequence[dict]) -> dict:
    """MMBench accuracy under circular evaluation (Liu et al., "MMBench", CircularEval).

    Each question is asked once per rotation of its options; records of one question share
    ``meta["group"]`` (else ``meta["index"] % 10**6``, the benchmark's numbering of its
    rotations). ``meta["options"]`` maps letters to option texts for that rotation,
    ``reference`` is that rotation's correct letter. A question is right only when every
    one of its rotations is; an unparsed answer (:func:`parse_mmbench_answer`) is wrong.
    ``meta["category"]`` and optional ``meta["l2-category"]`` (or ``"l2_category"``) are
    taken from a question's first record.

    Returns ``accuracy`` (percent of questions), ``row_accuracy`` (percent of records, each
    rotation on its own: the non-circular number), ``questions``, ``count`` (records),
    ``unparsed`` (records), ``categories``: ``{category: percent}``, and ``l2_categories``
    likewise when the records have them.
    """
    _require(records, "mmbench")
    questions: dict[object, list[bool]] = defaultdict(list)
    first: dict[object, dict] = {}
    unparsed = 0
    for rec in records:
        options = _meta(rec, "options")
        if not isinstance(options, Mapping):
            raise ValueError(f"record {rec.get('id')!r}: MMBench meta['options'] must map letters to texts")
        letter = parse_mmbench_answer(_prediction(rec), options)
        unparsed += letter is None
        group = _mmbench_group(rec)
        first.setdefault(group, rec.get("meta") or {})
        questions[group].append(letter is not None and letter == str(rec.get("reference", "")).strip())

    right = {group: all(results) for group, results in questions.items()}
    out = {"accuracy": _percent(sum(right.values()), len(right)),
           "row_accuracy": _percent(sum(ok for results in questions.values() for ok in results), len(records)),
           "questions": len(right), "count": len(records), "unparsed": unparsed,
           "categories": _accuracy_by(right, {g: m.get("category") for g, m in first.items()})}
    l2 = {g: m.get("l2-category", m.get("l2_category")) for g, m in first.items()}
    if any(v is not None for v in l2.values()):
        out["l2_categories"] = _accuracy_by(right, l2)
    return out


def _accuracy_by(right: Mapping[object, bool], label: Mapping[object, object]) -> dict[str, float]:
    """Percent of questions right per label (questions without a label left out)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for question, ok in right.items():
        if label.get(question) is not None:
            groups[str(label[question])].append(ok)
    return {name: _percent(sum(oks), len(oks)) for name, oks in sorted(groups.items())}


# ------------------------------------------------------------------ registry, Avg. %

def score_exact(records: Sequence[dict]) -> dict:
    """ShapesVQA (our synthetic benchmark): the answer word must equal the reference
    (case and surrounding punctuation ignored), as ``eval/vqa.py`` scores it."""
    if not records:
        raise ValueError("no records to score")
    right = sum(str(r["prediction"]).strip().strip(".").lower() == str(r["reference"]).lower() for r in records)
    return {"accuracy": 100.0 * right / len(records), "count": len(records)}


SCORERS: dict[str, Callable[[Sequence[dict]], dict]] = {
    "vqa": score_vqa,
    "pope": score_pope,
    "mme": score_mme,
    "gqa": score_gqa,
    "scienceqa": score_scienceqa,
    "mmbench": score_mmbench,
    "exact": score_exact,
}

#: the headline metric of each scorer in a results table (POPE: mean F1 over the three
#: splits, LLaVA-1.5's figure; MME: perception + cognition, the paper's Table 1 column)
HEADLINE: dict[str, str] = {
    "vqa": "accuracy",
    "pope": "f1",
    "mme": "total",  # perception + cognition: the paper's Table 1 MME column (1863 for LLaVA-1.5-7B)
    "gqa": "accuracy",
    "scienceqa": "accuracy",
    "mmbench": "accuracy",
    "exact": "accuracy",
}


def relative_scores(scores: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """The token-pruning papers' "Avg. %": each benchmark's score as a percent of the
    unpruned model's (``100 * score / baseline``), and ``"avg"``, their unweighted mean.

    Every benchmark of ``scores`` needs a non-zero baseline; baseline entries without a
    score are ignored (the mean is over the benchmarks scored).
    """
    if not scores:
        raise ValueError("relative_scores: no scores")
    if "avg" in scores:
        raise ValueError("relative_scores: 'avg' is the name of the mean, not a benchmark")
    missing = [name for name in scores if name not in baseline]
    if missing:
        raise ValueError(f"relative_scores: no baseline score for {', '.join(missing)}")
    zero = [name for name in scores if not baseline[name]]
    if zero:
        raise ValueError(f"relative_scores: baseline score is 0 for {', '.join(zero)}")
    out = {name: 100.0 * float(value) / float(baseline[name]) for name, value in scores.items()}
    out["avg"] = sum(out.values()) / len(out)
    return out


__all__ = [
    "ARTICLES", "CONTRACTIONS", "HEADLINE", "MME_COGNITION", "MME_PERCEPTION", "NUMBER_WORDS", "POPE_SPLITS",
    "PUNCTUATION", "SCORERS", "normalize_gqa_answer", "normalize_vqa_answer", "parse_mmbench_answer",
    "parse_mme_answer", "parse_pope_answer", "parse_scienceqa_answer", "relative_scores", "score_gqa",
    "score_mmbench", "score_mme", "score_pope", "score_scienceqa", "score_vqa", "vqa_soft_accuracy",
]
