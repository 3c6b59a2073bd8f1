"""Yes/no hallucination and perception benchmarks: POPE and MME."""

from __future__ import annotations

import re
from pathlib import Path

from ..prompts import mme_prompt, short_answer
from ._common import (
    DataFormatError,
    ImageFile,
    ListDataset,
    Sample,
    as_int,
    need,
    read_jsonl,
    require_dir,
    require_file,
    unique_id,
)

POPE_SPLITS = ("adversarial", "popular", "random")  # the order of LLaVA's llava_pope_test.jsonl
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _pope_split(path: Path) -> str:
    match = re.search(r"pope_(random|popular|adversarial)", path.name)
    return match.group(1) if match else path.stem


def _pope_files(questions, parameter: str) -> list[Path]:
    if isinstance(questions, (list, tuple)):
        return [require_file(q, parameter) for q in questions]
    text = str(questions)
    if "," in text and not Path(text).expanduser().exists():
        return [require_file(q.strip(), parameter) for q in text.split(",") if q.strip()]
    path = Path(text).expanduser()
    if path.is_dir():
        files = []
        for split in POPE_SPLITS:
            found = sorted(path.glob(f"*pope_{split}.json"))
            if len(found) > 1:  # POPE ships coco_, aokvqa_ and gqa_ variants: LLaVA-1.5 used COCO's
                coco = path / f"coco_pope_{split}.json"
                if not coco.is_file():
                    raise DataFormatError(f"{path}: several POPE {split} files ({', '.join(f.name for f in found)}); "
                                          "pass the files to read as questions=a.json,b.json")
                found = [coco]
            files += found
        if not files:
            raise DataFormatError(f"{path}: no POPE question files (coco_pope_adversarial.json, "
                                  "coco_pope_popular.json, coco_pope_random.json) in this folder")
        return files
    return [require_file(path, parameter)]


class PopeDataset(ListDataset):
    """POPE (COCO): one JSON-lines question file per split, ``coco_pope_random.json``,
    ``_popular``, ``_adversarial`` (each line ``{"question_id", "image", "text",
    "label"}``), and COCO val2014's image folder.

    ``questions`` is one file, a list of files (or comma-separated), or a folder holding
    the three (read adversarial, popular, random: LLaVA's order). The split is read from
    the file name. Sample ids are ``"{split}/{question_id}"``; ``meta``: ``split``,
    ``image``, ``question_id``; the reference is ``"yes"``/``"no"``.
    """

    name = "pope"
    scorer = "pope"

    def __init__(self, questions, images, splits: str | list[str] | None = None,
                 max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        folder = require_dir(images, "images")
        files = _pope_files(questions, "questions")
        wanted = None
        if splits is not None:
            wanted = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
        self._samples = []
        ids: set[str] = set()
        for path in files:
            split = _pope_split(path)
            if wanted is not None and split not in wanted:
                continue
            for number, item in read_jsonl(path):
                where = f"{path}:{number}"
                need(item, ("question_id", "image", "text", "label"), where)
                label = str(item["label"]).strip().lower()
                if label not in ("yes", "no"):
                    raise DataFormatError(f"{where}: label must be 'yes' or 'no', got {item['label']!r}")
                sample_id = unique_id(ids, f"{split}/{item['question_id']}", where)
                self._samples.append(Sample(
                    id=sample_id, prompt=short_answer(item["text"]), image=ImageFile(folder / item["image"]),
                    reference=label, meta={"split": split, "image": item["image"], "question_id": item["question_id"]},
                    max_new_tokens=limit))
        if wanted is not None and not self._samples:
            raise ValueError(f"splits: none of {wanted} among {[_pope_split(p) for p in files]}")


class MMEDataset(ListDataset):
    """MME: the ``MME_Benchmark_release_version`` folder, one folder per subtask. Five
    subtasks (artwork, celebrity, landmark, posters, scene) keep ``images/`` and
    ``questions_answers_YN/``; the others keep each image beside its ``.txt``. A ``.txt``
    is named after its image and has one ``question<TAB>Yes|No`` line per question (two
    per image).

    Order: subtasks, then files, sorted by name; a file's lines in order. Sample ids are
    ``"{subtask}/{image file}#{k}"`` (``k``: the question's line among the file's);
    ``meta``: ``subtask``, ``image_id`` (the image's file name), ``question_index``; the
    reference is ``"Yes"``/``"No"``. The prompt drops MME's "Please answer yes or no."
    and adds the short-answer line, as LLaVA-1.5's ``llava_mme.jsonl`` does.
    """

    name = "mme"
    scorer = "mme"

    def __init__(self, root, max_new_tokens: int = 128) -> None:
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        root = require_dir(root, "root")
        self._samples = []
        ids: set[str] = set()
        subtasks = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        for task in subtasks:
            if (task / "images").is_dir() or (task / "questions_answers_YN").is_dir():
                image_dir, qa_dir = task / "images", task / "questions_answers_YN"
                for folder in (image_dir, qa_dir):
                    if not folder.is_dir():
                        raise DataFormatError(f"{folder}: missing (subtask {task.name} has "
                                              f"{'images/' if folder is qa_dir else 'questions_answers_YN/'} "
                                              "and needs both)")
            else:
                image_dir = qa_dir = task
            texts = sorted(p for p in qa_dir.iterdir() if p.suffix == ".txt" and p.is_file())
            if not texts:
                continue  # not a subtask folder
            images = {p.stem: p.name for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
            for text in texts:
                if text.stem not in images:
                    raise DataFormatError(f"{text}: no image named {text.stem}.* in {image_dir}")
                image = images[text.stem]
                for k, (number, question, answer) in enumerate(self._read_pairs(text)):
                    where = f"{text}:{number}"
                    sample_id = unique_id(ids, f"{task.name}/{image}#{k}", where)
                    self._samples.append(Sample(
                        id=sample_id, prompt=mme_prompt(question), image=ImageFile(image_dir / image),
                        reference=answer, meta={"subtask": task.name, "image_id": image, "question_index": k},
                        max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{root}: no MME subtask folders (e.g. existence/ with image and .txt files, "
                                  "or artwork/images/ + artwork/questions_answers_YN/)")

    @staticmethod
    def _read_pairs(path: Path) -> list[tuple[int, str, str]]:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from None
        pairs = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2:
                raise DataFormatError(f"{path}:{number}: expected 'question<TAB>Yes|No', got {line!r}")
            question, answer = fields[0], fields[1].strip()
            if answer not in ("Yes", "No"):
                raise DataFormatError(f"{path}:{number}: the answer must be Yes or No, got {answer!r}")
            pairs.append((number, question, answer))
        if not pairs:
            raise DataFormatError(f"{path}: no 'question<TAB>Yes|No' lines")
        return pairs
