"""The evaluation harness's shared vocabulary: a sample, a prediction record, a dataset.

A *dataset* reads one benchmark's original files and yields :class:`Sample` s in a fixed
order, each with the user-turn text LLaVA-1.5's evaluation used (answer-format suffix,
OCR reference line, options); the harness wraps it in the model's chat format. A
*prediction record* is one JSON line: what the model answered plus everything a scorer
needs (the reference answers and the sample's metadata), so a merged predictions file
can be scored without the benchmark's files. *Scorers* are pure functions from records
to metrics (:mod:`visiondrop.eval.scorers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class DataFormatError(ValueError):
    """A benchmark file (or a predictions file or its sidecar) is missing, malformed or not
    the format it should be; the message names the file (and the line or key) and what was
    expected."""


@dataclass
class Sample:
    """One question of a benchmark.

    Attributes:
        id: unique within the dataset (the benchmark's question id, as a string).
        prompt: the user turn's text without media markers, as LLaVA-1.5 asked it
            (e.g. ``"Is there a dog?\\nAnswer the question using a single word or phrase."``).
        image: a callable returning a PIL image (loaded lazily), or None (text-only, video).
        video: a callable returning ``(frames, H, W, 3)`` uint8 frames, or None.
        reference: what the scorer compares with: a string, a list of human answers (VQA),
            an option letter...; None where only the benchmark's server knows it.
        meta: what scoring and export need besides: split, category, subtask, options,
            the benchmark's own ids (``question_id``, ``index``), ...
        max_new_tokens: the generation limit this benchmark uses.
    """

    id: str
    prompt: str
    image: Callable[[], Any] | None = None
    video: Callable[[], Any] | None = None
    reference: Any = None
    meta: dict = field(default_factory=dict)
    max_new_tokens: int = 128


def record(sample: Sample, prediction: str) -> dict:
    """The prediction record (one JSON line) of ``sample``."""
    return {"id": sample.id, "prediction": prediction, "reference": sample.reference, "meta": sample.meta,
            "prompt": sample.prompt}


class Dataset:
    """A benchmark split read from its original files. Subclasses set ``name`` (the
    ``--dataset`` key), ``scorer`` (a key of :data:`visiondrop.eval.scorers.SCORERS`, or
    None when only a server scores it) and implement :meth:`samples`. Readers check
    their files when constructed and raise :class:`DataFormatError` naming the file."""

    name: str = ""
    scorer: str | None = None
    #: LLaVA-1.5 pads images to a square with the image mean before its processor
    pad_to_square: bool = True

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def __len__(self) -> int:
        return sum(1 for _ in self.samples())
