"""Open-ended video QA as Video-LLaVA evaluates it (MSVD-QA, MSRVTT-QA, TGIF-QA): the
question verbatim, the answer judged by a GPT model (:mod:`visiondrop.eval.judge`)."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    DataFormatError,
    Frames,
    ListDataset,
    Sample,
    as_int,
    need,
    read_json,
    require_dir,
    require_file,
    unique_id,
)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")


class VideoQADataset(ListDataset):
    """Video-ChatGPT's zero-shot QA files, which Video-LLaVA uses: ``test_q.json`` (a
    list of ``{"video_name" (or "video"), "question", "question_id"}``), ``test_a.json``
    (a list of ``{"answer", "question_id"}``; paired by ``question_id``, or by position
    when the answers carry no ids, as Video-LLaVA's script does) and the video folder.

    A video is read as frames (:func:`visiondrop.inputs.load_frames`): ``videos/{name}/``
    (a folder of frame images) or ``videos/{name}.npy`` (``(T, H, W, 3)`` uint8), sampled
    evenly to ``frames`` (Video-LLaVA: 8). The prompt is the question as written; the
    reference the answer. ``meta``: ``question_id``, ``video``. ``max_new_tokens`` is
    Video-LLaVA's 1024.
    """

    name = "videoqa"
    scorer = "videoqa"

    def __init__(self, questions, answers, videos, frames: int | str = 8, max_new_tokens: int = 1024) -> None:
        q_path = require_file(questions, "questions")
        a_path = require_file(answers, "answers")
        folder = require_dir(videos, "videos")
        frames = as_int(frames, "frames", 1)
        limit = as_int(max_new_tokens, "max_new_tokens", 1)
        asked = read_json(q_path)
        given = read_json(a_path)
        for path, data in ((q_path, asked), (a_path, given)):
            if not isinstance(data, list):
                raise DataFormatError(f"{path}: expected a JSON list, got {type(data).__name__}")
        for index, item in enumerate(given):
            need(item, ("answer",), f"{a_path}: [{index}]")
        by_id = None
        if given and all("question_id" in item for item in given):
            by_id = {str(item["question_id"]): item["answer"] for item in given}
        elif len(given) != len(asked):
            raise DataFormatError(f"{a_path}: {len(given)} answers without question ids for the {len(asked)} "
                                  f"questions of {q_path.name}; they can only be paired by position")
        self._samples = []
        ids: set[str] = set()
        for index, item in enumerate(asked):
            where = f"{q_path}: [{index}]"
            need(item, ("question", "question_id"), where)
            video = item.get("video_name", item.get("video"))
            if video is None:
                raise DataFormatError(f"{where}: missing key 'video_name' (or 'video')")
            qid = str(item["question_id"])
            if by_id is not None:
                if qid not in by_id:
                    raise DataFormatError(f"{a_path}: no answer for question_id {item['question_id']!r} "
                                          f"of {q_path.name}")
                answer = by_id[qid]
            else:
                answer = given[index]["answer"]
            name = str(video)
            candidates = [folder / name, folder / f"{name}.npy"]
            if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                stem = Path(name).stem
                candidates += [folder / stem, folder / f"{stem}.npy"]
            self._samples.append(Sample(
                id=unique_id(ids, qid, where), prompt=str(item["question"]), video=Frames(candidates, frames),
                reference=answer, meta={"question_id": item["question_id"], "video": name}, max_new_tokens=limit))
        if not self._samples:
            raise DataFormatError(f"{q_path}: no questions")


class MSVDQADataset(VideoQADataset):
    """MSVD-QA (``MSVD_Zero_Shot_QA``)."""

    name = "msvd"


class MSRVTTQADataset(VideoQADataset):
    """MSRVTT-QA (``MSRVTT_Zero_Shot_QA``)."""

    name = "msrvtt"


class TGIFQADataset(VideoQADataset):
    """TGIF-QA (``TGIF_Zero_Shot_QA``)."""

    name = "tgif"
