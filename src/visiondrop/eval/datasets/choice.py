"""Multiple choice: ScienceQA (the image split) and MMBench / MMBench-CN (circular)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..prompts import LETTERS, mmbench_prompt, scienceqa_prompt
from ._common import (
    Base64Image,
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


class ScienceQADataset(ListDataset):
    """ScienceQA: ``problems.json`` (``pid -> {"question", "choices", "answer" (index),
    "hint", "image" ("image.png" or null), "split", "subject", ...}``), ``pid_splits.json``
    (``{"test": [pid, ...], ...}``) and the image folder ``images/`` (holding
    ``{split}/{pid}/image.png``; the ``images/{split}`` folder itself works too).

    ``image_only=True`` (default) keeps the problems with an image: ScienceQA-IMG, the
    number LLaVA-1.5 reports (2017 test problems). Order: ``pid_splits[split]``. Sample
    ids are the pids; the reference is the answer's letter; ``meta``: ``pid``,
    ``options`` (the choices), ``subject``, ``grade``, ``topic``, ``category`` where given.
    """

    name = "scienceqa"
    scorer = "scienceqa"

    def __init__(self, problems, pid_splits, images=None, split: str = "test", image_only: bool | str = True,
                 max_new_tokens: int = 1024) -> None:
        problems_path = require_file(problems, "problems")
        splits_path = require_file(pid_splits, "pid_splits")
        image_only = as_bool(image_only, "image_only")
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        folder = None
        if images is not None or image_only:
            folder = require_dir(images, "images")
            if (folder / split).is_dir():
                folder = folder / split
        table = read_json(problems_path)
        if not isinstance(table, dict):
            raise DataFormatError(f"{problems_path}: expected a JSON object of pid -> problem")
        splits = read_json(splits_path)
        if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
            raise DataFormatError(f"{splits_path}: expected a JSON object with a {split!r} list of pids")
        self._samples = []
        ids: set[str] = set()
        for pid in splits[split]:
            pid = str(pid)
            if pid not in table:
                raise DataFormatError(f"{problems_path}: no problem {pid!r} (listed in {splits_path.name}'s {split!r})")
            problem = table[pid]
            where = f"{problems_path}: problem {pid!r}"
            need(problem, ("question", "choices", "answer", "hint", "image"), where)
            choices = problem["choices"]
            if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
                raise DataFormatError(f"{where}: 'choices' must be a list of 2-{len(LETTERS)} options")
            answer = problem["answer"]
            if not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise DataFormatError(f"{where}: 'answer' must be the index of a choice (0-{len(choices) - 1}), "
                                      f"got {answer!r}")
            has_image = bool(problem["image"])
            if image_only and not has_image:
                continue
            meta = {"pid": pid, "options": [str(c) for c in choices]}
            meta.update({key: problem[key] for key in ("subject", "grade", "topic", "category") if key in problem})
            image = None
            if has_image:
                if folder is None:
                    raise ValueError(f"images: problem {pid!r} has an image; pass the ScienceQA images folder")
                image = ImageFile(folder / pid / problem["image"])
            self._samples.append(Sample(
                id=unique_id(ids, pid, f"{splits_path}: {split!r}"),
                prompt=scienceqa_prompt(problem["question"], [str(c) for c in choices], problem["hint"]),
                image=image, reference=LETTERS[answer], meta=meta, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{splits_path}: no {'image ' if image_only else ''}problems in split {split!r}")


COPY_STRIDE = 1_000_000  # MMBench numbers circular copy k of question i as i + k * 1e6
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "image")
MMBENCH_OPTIONS = ("A", "B", "C", "D")


# pandas.read_table's default missing-value strings: LLaVA reads the TSV with pandas, so these cells are NaN
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


def _missing(value) -> bool:
    """Absent as LLaVA's ``model_vqa_mmbench.py`` sees a cell: pandas' missing values, and
    its ``is_none`` (the text "nan"/"none" in any case; blank)."""
    if value is None:
        return True
    text = str(value)
    return text in PANDAS_NA or text.strip() == "" or text.lower() in ("nan", "none")


def rotate(options: list[str], answer: int | None, k: int) -> tuple[list[str], int | None]:
    """Circular copy ``k``: options shifted ``k`` places to the right (MMBench's own
    copies: copy 1 of A,B,C,D reads D,A,B,C), the answer's index moved with its text."""
    n = len(options)
    shifted = [options[(j - k) % n] for j in range(n)]
    return shifted, None if answer is None else (answer + k) % n


class MMBenchDataset(ListDataset):
    """MMBench (dev/test TSV: ``index, question, hint, A, B, C, D, answer, category,
    l2-category, image`` (base64), ``answer`` absent in test) with circular evaluation.

    MMBench's own TSVs (``mmbench_dev_20230712.tsv``, ``MMBench_DEV_EN.tsv``, ...)
    already hold the circular copies as rows ``index + k * 1e6``; they are read as they
    are. A TSV with originals only gets its copies made here: for ``n`` options, ``n``
    copies, copy ``k`` with the options shifted ``k`` places (as MMBench's own) and the
    answer letter remapped. ``circular=False`` keeps the originals only.

    Options are read A, B, C, D up to the first empty one (LLaVA's ``get_options``; a
    cell pandas reads as missing, such as "nan" or "N/A", counts as empty). An
    image cell holding only a row's index (VLMEvalKit's short form) points at that
    row's image. Sample ids are the (copy's) index; ``meta``: ``index``, ``group`` (the
    original question's index), ``copy``, ``options`` (letter -> text), ``category``,
    ``l2-category``; the reference is the letter, None for test (server-scored).
    ``chinese`` (default: the file name has a ``cn`` part) selects MMBench-CN's suffix.
    """

    name = "mmbench"
    scorer = "mmbench"
    _chinese_default: bool | None = None

    def __init__(self, questions, chinese: bool | str | None = None, circular: bool | str = True,
                 max_new_tokens: int = 1024) -> None:
        path = require_file(questions, "questions")
        circular = as_bool(circular, "circular")
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        if chinese is None:
            chinese = self._chinese_default
        if chinese is None:
            chinese = re.search(r"(^|[^a-z])cn([^a-z]|$)", path.name.lower()) is not None
        chinese = as_bool(chinese, "chinese")
        self.name = "mmbench_cn" if chinese else "mmbench"
        rows, columns = self._read(path)
        has_answers = "answer" in columns
        if not has_answers:
            self.scorer = None
        images = {row["index"]: row["image"] for row in rows}
        has_copies = any(row["index"] >= COPY_STRIDE for row in rows)
        self._samples = []
        ids: set[str] = set()
        for row in rows:
            where = f"{path}: index {row['index']}"
            if has_copies and not circular and row["index"] >= COPY_STRIDE:
                continue
            options = []
            for letter in MMBENCH_OPTIONS:
                if letter not in columns or _missing(row.get(letter)):
                    break
                options.append(row[letter])
            if len(options) < 2:
                raise DataFormatError(f"{where}: fewer than two options in columns A, B, C, D")
            answer = None
            if has_answers and not _missing(row.get("answer")):
                letter = row["answer"].strip()
                if letter not in MMBENCH_OPTIONS[:len(options)]:
                    raise DataFormatError(f"{where}: answer {letter!r} is not one of the options "
                                          f"{''.join(MMBENCH_OPTIONS[:len(options)])}")
                answer = MMBENCH_OPTIONS.index(letter)
            image = row["image"]
            if len(image) <= 64 and image.strip().isdigit():
                if int(image) not in images:
                    raise DataFormatError(f"{where}: the image column refers to index {image.strip()}, "
                                          "which is not in the file")
                image = images[int(image)]
            hint = None if _missing(row.get("hint")) else row["hint"]
            copies = range(len(options)) if circular and not has_copies else range(1)
            for k in copies:
                shown, key = rotate(options, answer, k)
                index = row["index"] + k * COPY_STRIDE
                letters = dict(zip(MMBENCH_OPTIONS, shown))
                meta = {"index": index, "group": index % COPY_STRIDE, "copy": index // COPY_STRIDE,
                        "options": letters}
                meta.update({key_: row[key_] for key_ in ("category", "l2-category") if key_ in row})
                self._samples.append(Sample(
                    id=unique_id(ids, str(index), where),
                    prompt=mmbench_prompt(row["question"], letters, hint, chinese),
                    image=Base64Image(image, where),
                    reference=None if key is None else MMBENCH_OPTIONS[key], meta=meta, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions")

    @staticmethod
    def _read(path: Path) -> tuple[list[dict], list[str]]:
        previous = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)  # base64 images exceed the default 128 KiB field limit
        try:
            with open(path, encoding="utf-8-sig", newline="") as stream:
                reader = csv.DictReader(stream, delimiter="\t")
                columns = list(reader.fieldnames or [])
                missing = [c for c in MMBENCH_COLUMNS if c not in columns]
                if missing:
                    raise DataFormatError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                                          f"{', '.join(missing)} (an MMBench TSV has index, question, hint, "
                                          "A, B, C, D, answer, category, l2-category, image)")
                rows = []
                for row in reader:
                    number = reader.line_num
                    if None in row or any(row[c] is None for c in MMBENCH_COLUMNS):
                        raise DataFormatError(f"{path}:{number}: the row's fields do not match the header's "
                                              f"{len(columns)} columns")
                    try:
                        row["index"] = int(float(row["index"]))
                    except ValueError:
                        raise DataFormatError(f"{path}:{number}: index {row['index']!r} is not a number"
                                              ) from None
                    rows.append(row)
        except UnicodeDecodeError as error:
            raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from None
        except csv.Error as error:
            raise DataFormatError(f"{path}: not a readable TSV ({error})") from None
        finally:
            csv.field_size_limit(previous)
        return rows, columns


class MMBenchCNDataset(MMBenchDataset):
    """MMBench-CN: :class:`MMBenchDataset` with the Chinese suffix (``请直接回答选项字母。``)."""

    name = "mmbench_cn"
    _chinese_default = True
