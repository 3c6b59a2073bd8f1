"""Open-ended short-answer VQA: GQA, TextVQA, VQAv2, VizWiz."""

from __future__ import annotations

from ..prompts import short_answer, textvqa_prompt, vizwiz_prompt
from ._common import (
    DataFormatError,
    ImageFile,
    ListDataset,
    Sample,
    as_bool,
    as_int,
    need,
    read_json,
    require_dir,
    require_file,
    unique_id,
)


def _human_answers(item: dict, where: str) -> list[str]:
    """VQA-style ``answers``: a list of strings (TextVQA) or of ``{"answer": ...}`` (VQAv2, VizWiz)."""
    answers = item["answers"]
    if not isinstance(answers, list) or not answers:
        raise DataFormatError(f"{where}: 'answers' must be a non-empty list")
    out = []
    for answer in answers:
        if isinstance(answer, dict):
            if "answer" not in answer:
                raise DataFormatError(f"{where}: an entry of 'answers' has no 'answer' key")
            answer = answer["answer"]
        if not isinstance(answer, str):
            raise DataFormatError(f"{where}: answers must be strings, got {answer!r}")
        out.append(answer)
    return out


class GQADataset(ListDataset):
    """GQA testdev-balanced: ``testdev_balanced_questions.json`` (an object
    ``question id -> {"imageId", "question", "answer", "types", ...}``) and the images
    folder (``{imageId}.jpg``). Order: the file's. ``meta``: ``question_id``,
    ``image_id``, ``types`` (when given); the reference is the answer."""

    name = "gqa"
    scorer = "gqa"

    def __init__(self, questions, images, max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        path = require_file(questions, "questions")
        folder = require_dir(images, "images")
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataFormatError(f"{path}: expected a JSON object of question id -> question, "
                                  f"got {type(data).__name__}")
        self._samples = []
        answered = 0
        for qid, item in data.items():
            where = f"{path}: question {qid!r}"
            need(item, ("imageId", "question"), where)
            answer = item.get("answer")
            answered += answer is not None
            meta = {"question_id": str(qid), "image_id": item["imageId"]}
            if isinstance(item.get("types"), dict):
                meta["types"] = item["types"]
            self._samples.append(Sample(
                id=str(qid), prompt=short_answer(item["question"]), image=ImageFile(folder / f"{item['imageId']}.jpg"),
                reference=answer, meta=meta, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions")
        if answered == 0:
            self.scorer = None  # the submission split: no answers here


class TextVQADataset(ListDataset):
    """TextVQA 0.5.1 val: ``TextVQA_0.5.1_val.json`` (``{"data": [{"question_id",
    "question", "image_id", "answers" (10), ...}]}``), the image folder
    (``train_images/{image_id}.jpg``) and the OCR tokens of LLaVA-1.5's prompt.

    OCR tokens come from ``ocr`` (``TextVQA_Rosetta_OCR_v0.2_val.json``, ``{"data":
    [{"image_id", "ocr_tokens"}]}``: the cased Rosetta tokens LLaVA-1.5's
    ``llava_textvqa_val_v051_ocr.jsonl`` lists) when given, else from an ``ocr_tokens``
    field of each question; ``use_ocr=False`` leaves the OCR line out (a different
    setting from LLaVA-1.5's reported one). Sample ids are the question ids; ``meta``:
    ``question_id``, ``image_id``; the reference is the list of human answers (None
    without ``answers``: the test split).
    """

    name = "textvqa"
    scorer = "vqa"

    def __init__(self, questions, images, ocr=None, use_ocr: bool | str = True, max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        path = require_file(questions, "questions")
        folder = require_dir(images, "images")
        use_ocr = as_bool(use_ocr, "use_ocr")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise DataFormatError(f"{path}: expected a JSON object with a 'data' list of questions")
        tokens_of = self._read_ocr(require_file(ocr, "ocr")) if ocr is not None and use_ocr else None
        self._samples = []
        ids: set[str] = set()
        answered = found = 0
        for index, item in enumerate(data["data"]):
            where = f"{path}: data[{index}]"
            need(item, ("question_id", "question", "image_id"), where)
            tokens = None
            if use_ocr:
                if tokens_of is not None:
                    found += item["image_id"] in tokens_of
                    tokens = tokens_of.get(item["image_id"], [])
                elif "ocr_tokens" in item:
                    tokens = item["ocr_tokens"]
                else:
                    raise DataFormatError(f"{where}: no 'ocr_tokens'; pass ocr=TextVQA_Rosetta_OCR_v0.2_val.json "
                                          "(LLaVA-1.5's prompt lists the OCR tokens) or use_ocr=false")
                if not isinstance(tokens, list):
                    raise DataFormatError(f"{where}: 'ocr_tokens' must be a list")
            reference = _human_answers(item, where) if "answers" in item else None
            answered += reference is not None
            sample_id = unique_id(ids, str(item["question_id"]), where)
            self._samples.append(Sample(
                id=sample_id, prompt=textvqa_prompt(item["question"], tokens),
                image=ImageFile(folder / f"{item['image_id']}.jpg"), reference=reference,
                meta={"question_id": item["question_id"], "image_id": item["image_id"]},
                max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions in 'data'")
        if tokens_of is not None and found == 0:
            raise DataFormatError(f"{ocr}: none of the questions' image ids has OCR tokens here; "
                                  f"is it the OCR file of {path.name}'s split?")
        if answered == 0:
            self.scorer = None

    @staticmethod
    def _read_ocr(path) -> dict[str, list]:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise DataFormatError(f"{path}: expected a JSON object with a 'data' list of "
                                  "{'image_id', 'ocr_tokens'} (TextVQA_Rosetta_OCR_v0.2_*.json)")
        out = {}
        for index, item in enumerate(data["data"]):
            need(item, ("image_id", "ocr_tokens"), f"{path}: data[{index}]")
            out[item["image_id"]] = item["ocr_tokens"]
        return out


# VQA's data_subtype -> the COCO image file prefix (test-dev images live in test2015)
COCO_PREFIXES = {"val2014": "COCO_val2014_", "train2014": "COCO_train2014_", "test2015": "COCO_test2015_",
                 "test-dev2015": "COCO_test2015_"}


class VQAv2Dataset(ListDataset):
    """VQAv2: a questions file (``v2_OpenEnded_mscoco_{subtype}_questions.json``:
    ``{"data_subtype", "questions": [{"question_id", "image_id", "question"}]}``), the
    COCO image folder, and for val the annotations (``v2_mscoco_val2014_annotations.json``:
    ``{"annotations": [{"question_id", "answers": [{"answer"}...], ...}]}``).

    Images are ``{prefix}{image_id:012d}.jpg``; the prefix follows ``data_subtype``
    (``COCO_test2015_`` for test-dev2015, ``COCO_val2014_`` for val2014) or
    ``image_prefix``. Without annotations (test-dev) the reference is None and only the
    EvalAI server scores (``scorer`` None). ``meta``: ``question_id``, ``image_id``,
    ``answer_type`` and ``question_type`` where annotated.
    """

    name = "vqav2"
    scorer = "vqa"

    def __init__(self, questions, images, annotations=None, image_prefix: str | None = None,
                 max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        path = require_file(questions, "questions")
        folder = require_dir(images, "images")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise DataFormatError(f"{path}: expected a JSON object with a 'questions' list")
        if image_prefix is None:
            subtype = data.get("data_subtype")
            if subtype not in COCO_PREFIXES:
                raise DataFormatError(f"{path}: data_subtype {subtype!r} does not say how its images are named; "
                                      "pass image_prefix (e.g. COCO_val2014_)")
            image_prefix = COCO_PREFIXES[subtype]
        annotated = self._read_annotations(require_file(annotations, "annotations")) if annotations else None
        self._samples = []
        ids: set[str] = set()
        for index, item in enumerate(data["questions"]):
            where = f"{path}: questions[{index}]"
            need(item, ("question_id", "image_id", "question"), where)
            try:
                image = f"{image_prefix}{int(item['image_id']):012d}.jpg"
            except (TypeError, ValueError):
                raise DataFormatError(f"{where}: image_id must be an integer, got {item['image_id']!r}") from None
            meta = {"question_id": item["question_id"], "image_id": item["image_id"]}
            reference = None
            if annotated is not None:
                if item["question_id"] not in annotated:
                    raise DataFormatError(f"{annotations}: no annotation for question_id {item['question_id']!r} "
                                          f"of {path.name}")
                reference, extra = annotated[item["question_id"]]
                meta.update(extra)
            sample_id = unique_id(ids, str(item["question_id"]), where)
            self._samples.append(Sample(
                id=sample_id, prompt=short_answer(item["question"]), image=ImageFile(folder / image),
                reference=reference, meta=meta, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions")
        if annotated is None:
            self.scorer = None

    @staticmethod
    def _read_annotations(path) -> dict:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DataFormatError(f"{path}: expected a JSON object with an 'annotations' list")
        out = {}
        for index, item in enumerate(data["annotations"]):
            where = f"{path}: annotations[{index}]"
            need(item, ("question_id", "answers"), where)
            extra = {key: item[key] for key in ("answer_type", "question_type") if key in item}
            out[item["question_id"]] = (_human_answers(item, where), extra)
        return out


class VizWizDataset(ListDataset):
    """VizWiz-VQA: ``val.json`` or ``test.json`` (a list of ``{"image", "question",
    "answers"?, "answerable"?, "answer_type"?}``) and its image folder. Sample ids are
    the image names (one question per image, the key of the server's upload file);
    ``meta``: ``image``, ``answer_type``/``answerable`` where given; the reference is the
    10 human answers, None for test (EvalAI-scored: ``scorer`` None)."""

    name = "vizwiz"
    scorer = "vqa"

    def __init__(self, questions, images, max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        path = require_file(questions, "questions")
        folder = require_dir(images, "images")
        data = read_json(path)
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON list of {{'image', 'question', 'answers'}}, "
                                  f"got {type(data).__name__}")
        self._samples = []
        ids: set[str] = set()
        answered = 0
        for index, item in enumerate(data):
            where = f"{path}: [{index}]"
            need(item, ("image", "question"), where)
            reference = _human_answers(item, where) if "answers" in item else None
            answered += reference is not None
            meta = {"image": item["image"]}
            meta.update({key: item[key] for key in ("answer_type", "answerable") if key in item})
            sample_id = unique_id(ids, str(item["image"]), where)
            self._samples.append(Sample(
                id=sample_id, prompt=vizwiz_prompt(item["question"]), image=ImageFile(folder / item["image"]),
                reference=reference, meta=meta, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions")
        if answered == 0:
            self.scorer = None
