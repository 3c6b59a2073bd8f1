"""Readers of the benchmarks' original files, one :class:`~visiondrop.eval.base.Dataset`
per benchmark, yielding LLaVA-1.5's evaluation prompts (:mod:`visiondrop.eval.prompts`).

=================  ========================================  ==========  =========================
name               files (``load_dataset`` keywords)         scorer      reference
=================  ========================================  ==========  =========================
pope               questions, images                         pope        yes / no
mme                root                                      mme         Yes / No
gqa                questions, images                         gqa         the answer
scienceqa          problems, pid_splits, images              scienceqa   option letter
textvqa            questions, images, ocr                    vqa         10 answers
vqav2              questions, images, annotations?           vqa / None  10 answers / None
vizwiz             questions, images                         vqa / None  10 answers / None
mmbench            questions (TSV)                           mmbench     option letter / None
mmbench_cn         questions (TSV)                           mmbench     option letter / None
msvd, msrvtt,      questions, answers, videos                videoqa     the answer (GPT-judged)
tgif
llava_questions    questions, images, answers?               exact/None  from ``answers``
shapes             (none: scenes, seed)                      exact       the one-word answer
=================  ========================================  ==========  =========================

Every reader checks its files when constructed and raises :class:`DataFormatError`
naming the file (and line or key); images are opened when a sample's ``image()`` is
called, and a missing one raises :class:`DataFormatError` naming its path. Options that
are not paths (``splits``, ``frames``, ``circular``, ...) may be given as strings, as
``visiondrop eval run --data key=value`` passes them.
"""

from __future__ import annotations

import inspect

from ..base import DataFormatError, Dataset
from .choice import MMBenchCNDataset, MMBenchDataset, ScienceQADataset, rotate
from .generic import LlavaQuestionsDataset, ShapesDataset
from .openended import GQADataset, TextVQADataset, VizWizDataset, VQAv2Dataset
from .video import MSRVTTQADataset, MSVDQADataset, TGIFQADataset, VideoQADataset
from .yesno import MMEDataset, PopeDataset

DATASETS: dict[str, type[Dataset]] = {cls.name: cls for cls in (
    PopeDataset, MMEDataset, GQADataset, ScienceQADataset, TextVQADataset, VQAv2Dataset, VizWizDataset,
    MMBenchDataset, MMBenchCNDataset, MSVDQADataset, MSRVTTQADataset, TGIFQADataset, LlavaQuestionsDataset,
    ShapesDataset)}

__all__ = ["DATASETS", "DataFormatError", "GQADataset", "LlavaQuestionsDataset", "MMBenchCNDataset",
           "MMBenchDataset", "MMEDataset", "MSRVTTQADataset", "MSVDQADataset", "PopeDataset", "ScienceQADataset",
           "ShapesDataset", "TGIFQADataset", "TextVQADataset", "VQAv2Dataset", "VideoQADataset", "VizWizDataset",
           "describe", "load_dataset", "rotate"]


def load_dataset(name: str, **paths) -> Dataset:
    """The reader ``DATASETS[name]`` on ``paths`` (its constructor's keywords: the
    benchmark's files and options). A name not in :data:`DATASETS`, a needed path not
    given or a keyword the reader does not take is a ``ValueError`` naming it; a file
    that is missing or malformed a :class:`DataFormatError` naming the file."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown name {name!r}; one of {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    parameters = {key: p for key, p in inspect.signature(cls.__init__).parameters.items() if key != "self"}
    unknown = sorted(set(paths) - set(parameters))
    if unknown:
        raise ValueError(f"{unknown[0]}: dataset {name!r} takes no {unknown[0]!r}; it takes "
                         f"{', '.join(parameters) or 'nothing'}")
    required = [key for key, p in parameters.items() if p.default is inspect.Parameter.empty]
    missing = [key for key in required if paths.get(key) in (None, "")]
    if missing:
        raise ValueError(f"{missing[0]}: dataset {name!r} needs {', '.join(missing)} "
                         f"(e.g. {' '.join(f'--data {key}=PATH' for key in missing)})")
    return cls(**paths)


def describe(name: str) -> str:
    """One line for ``visiondrop eval run --dataset list``: the reader's first docstring
    sentence and the ``--data`` keys it takes (required ones first, optional in brackets)."""
    cls = DATASETS[name]
    doc = " ".join((cls.__doc__ or "").replace("``", "").split())
    summary = doc.split(". ")[0].rstrip(".") if doc else ""
    parameters = [p for key, p in inspect.signature(cls.__init__).parameters.items() if key != "self"]
    keys = [p.name if p.default is inspect.Parameter.empty else f"[{p.name}]" for p in parameters]
    return f"{name}: {summary}; --data {' '.join(f'{k}=...' for k in keys) or '(none)'}"
