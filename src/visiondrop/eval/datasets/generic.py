"""LLaVA's own question files, read as they are, and the synthetic ShapesVQA."""

from __future__ import annotations

from collections import defaultdict

from ._common import (
    DataFormatError,
    ImageFile,
    ListDataset,
    Sample,
    as_int,
    need,
    read_json,
    read_jsonl,
    require_dir,
    require_file,
)


class LlavaQuestionsDataset(ListDataset):
    """A LLaVA question file (``llava_pope_test.jsonl``, ``llava_mme.jsonl``, ...: lines
    ``{"question_id", "image", "text", "category"?}``) and its image folder. ``text`` is
    the prompt verbatim (it already has the benchmark's suffix).

    ``answers`` (optional): JSON lines ``{"question_id", "answer"}`` (or ``"text"``), or a
    JSON object ``question_id -> answer``; without it the reference is None. A question
    id that LLaVA's file repeats (MME, TextVQA key by image) takes its answers in order.
    ``scorer``: any scorer name (default ``"exact"`` with answers, None without). Sample
    ids are the question ids, ``"{id}#{n}"`` for the n-th repeat; ``meta``:
    ``question_id``, ``image``, ``category``, ``line``.
    """

    name = "llava_questions"
    scorer = None

    def __init__(self, questions, images=None, answers=None, scorer: str | None = None,
                 max_new_tokens: int = 128) -> None:
        path = require_file(questions, "questions")
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        folder = require_dir(images, "images") if images is not None else None
        known = self._read_answers(require_file(answers, "answers")) if answers is not None else None
        self.scorer = scorer if scorer is not None else ("exact" if known is not None else None)
        seen: dict[str, int] = defaultdict(int)
        self._samples = []
        for number, item in read_jsonl(path):
            where = f"{path}:{number}"
            need(item, ("question_id", "text"), where)
            qid = str(item["question_id"])
            repeat = seen[qid]
            seen[qid] += 1
            image = None
            if item.get("image"):
                if folder is None:
                    raise ValueError(f"images: {where} names an image ({item['image']!r}); pass the image folder")
                image = ImageFile(folder / item["image"])
            reference = None
            if known is not None:
                if qid not in known:
                    raise DataFormatError(f"{answers}: no answer for question_id {item['question_id']!r} "
                                          f"({where})")
                options = known[qid]
                reference = options[min(repeat, len(options) - 1)]
            self._samples.append(Sample(
                id=qid if repeat == 0 else f"{qid}#{repeat}", prompt=item["text"], image=image, reference=reference,
                meta={"question_id": item["question_id"], "image": item.get("image"),
                      "category": item.get("category"), "line": number},
                max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{path}: no questions")

    @staticmethod
    def _read_answers(path) -> dict[str, list]:
        out: dict[str, list] = defaultdict(list)
        if path.suffix == ".json":
            data = read_json(path)
            if isinstance(data, dict):
                for key, value in data.items():
                    out[str(key)].append(value)
                return out
            if not isinstance(data, list):
                raise DataFormatError(f"{path}: expected an object question_id -> answer, or a list of "
                                      "{'question_id', 'answer'}")
            rows = [(f"[{i}]", item) for i, item in enumerate(data)]
        else:
            rows = [(f":{number}", item) for number, item in read_jsonl(path)]
        for where, item in rows:
            need(item, ("question_id",), f"{path}{where}")
            key = "answer" if "answer" in item else "text" if "text" in item else None
            if key is None:
                raise DataFormatError(f"{path}{where}: missing key 'answer' (or 'text')")
            out[str(item["question_id"])].append(item[key])
        return out


class _SceneImage:
    """A ShapesVQA scene's pixels, as a lazy PIL image."""

    def __init__(self, pixels) -> None:
        self.pixels = pixels

    def __call__(self):
        from PIL import Image

        return Image.fromarray(self.pixels)


class ShapesDataset(ListDataset):
    """ShapesVQA (:mod:`visiondrop.data.shapes`): scenes ``start .. start + scenes - 1``
    of stream ``seed`` (default the held-out seed 2026), rendered in memory, six
    questions each, in :func:`visiondrop.eval.vqa.items_of`'s order. The prompt is the
    question text that :func:`visiondrop.eval.vqa.answer` puts in shapes-llava's
    ``USER: <image>\\n{question} ASSISTANT:``; the reference the one-word answer, scored
    by exact match. ``max_new_tokens=1``: vqa.py's answer is the first token. Sample ids
    are ``"{scene}/{kind}"``; ``meta``: ``scene``, ``kind``, ``subset``.
    """

    name = "shapes"
    scorer = "exact"

    def __init__(self, scenes: int | str = 16, seed: int | str | None = None, start: int | str = 0,
                 max_new_tokens: int | str = 1) -> None:
        from ...data.shapes import HELDOUT_SEED, render_scene

        count = as_int(scenes, "scenes", 1)
        seed = HELDOUT_SEED if seed is None else as_int(seed, "seed", 0)
        first = as_int(start, "start", 0)
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        self._samples = []
        for index in range(first, first + count):
            scene = render_scene(seed, index)
            image = _SceneImage(scene.image)
            for question in scene.questions:
                self._samples.append(Sample(
                    id=f"{scene.index}/{question.kind}", prompt=question.text, image=image, reference=question.answer,
                    meta={"scene": scene.index, "kind": question.kind, "subset": question.subset},
                    max_new_tokens=limit))
