"""LLaVA-1.5's evaluation prompts (the user turn's text, without the ``<image>`` marker)
and its square padding.

Each builder reproduces a line of LLaVA-1.5's released question files (``eval.zip``:
``llava_pope_test.jsonl``, ``llava_mme.jsonl``, ``llava_gqa_testdev_balanced.jsonl``,
``llava_textvqa_val_v051_ocr.jsonl``, ``vizwiz/llava_test.jsonl``,
``scienceqa/llava_test_CQM-A.json``) or what its scripts append at run time
(``model_vqa_science.py`` and ``model_vqa_mmbench.py`` with ``--single-pred-prompt``):

==========  =====================================================================
benchmark   user text
==========  =====================================================================
POPE, GQA,  ``{question}\\nAnswer the question using a single word or phrase.``
VQAv2
MME         the same, the question without MME's "Please answer yes or no."
TextVQA     ``{Question}\\nReference OCR token: {t1}, {t2}, ...\\n`` + short answer
            (question ``str.capitalize``-d; the OCR line is kept, empty, when the
            image has no OCR tokens)
VizWiz      ``{question}\\nWhen the provided information is insufficient, respond
            with 'Unanswerable'.\\nAnswer the question using a single word or phrase.``
ScienceQA   ``Context: {hint}\\n{question}\\nA. {c0}\\nB. {c1}...\\nAnswer with the
            option's letter from the given choices directly.`` (no Context line
            when the hint is empty)
MMBench     ``{hint}\\n{question}\\nA. {a}\\nB. {b}...\\nAnswer with the option's
            letter from the given choices directly.`` (no hint line when it is
            missing; MMBench-CN ends with ``请直接回答选项字母。``)
==========  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
OPTION_LETTER_CN = "请直接回答选项字母。"
VIZWIZ_UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
OCR_REFERENCE = "Reference OCR token: "
SCIENCEQA_CONTEXT = "Context: "
#: MME's own answer-format sentence; LLaVA-1.5 replaced it with :data:`SHORT_ANSWER`
MME_YES_NO = "Please answer yes or no."
LETTERS = "ABCDEFGHIJ"


def short_answer(question: str) -> str:
    """POPE, GQA, VQAv2: the question, then :data:`SHORT_ANSWER` on its own line."""
    return f"{question}\n{SHORT_ANSWER}"


def mme_prompt(question: str) -> str:
    """MME: the question without "Please answer yes or no." (LLaVA's ``llava_mme.jsonl``;
    its ``convert_answer_to_mme.py`` adds the sentence back to find the answer)."""
    return short_answer(question.replace(MME_YES_NO, "").strip())


def textvqa_prompt(question: str, ocr_tokens: Sequence[str] | None) -> str:
    """TextVQA with Rosetta OCR tokens (``llava_textvqa_val_v051_ocr.jsonl``); ``None``
    leaves the OCR line out (LLaVA's file always has it, empty where OCR found nothing)."""
    lines = [question.capitalize()]
    if ocr_tokens is not None:
        lines.append(OCR_REFERENCE + ", ".join(str(token) for token in ocr_tokens))
    lines.append(SHORT_ANSWER)
    return "\n".join(lines)


def vizwiz_prompt(question: str) -> str:
    """VizWiz (``vizwiz/llava_test.jsonl``): the question verbatim, the unanswerable
    instruction, then the short-answer instruction."""
    return f"{question}\n{VIZWIZ_UNANSWERABLE}\n{SHORT_ANSWER}"


def option_lines(options: Sequence[str] | Mapping[str, str]) -> str:
    """``"A. first\\nB. second"``; a mapping gives its letters, a sequence gets A, B, ..."""
    pairs = options.items() if isinstance(options, Mapping) else zip(LETTERS, options)
    return "\n".join(f"{letter}. {text}" for letter, text in pairs)


def scienceqa_prompt(question: str, choices: Sequence[str], hint: str | None = None) -> str:
    """ScienceQA as in ``llava_test_CQM-A.json`` plus ``--single-pred-prompt``'s suffix."""
    body = f"{SCIENCEQA_CONTEXT}{hint}\n" if hint and hint.strip() else ""
    body += f"{question}\n{option_lines(choices)}"
    return f"{body.strip()}\n{OPTION_LETTER}"


def mmbench_prompt(question: str, options: Sequence[str] | Mapping[str, str], hint: str | None = None,
                   chinese: bool = False) -> str:
    """MMBench as ``model_vqa_mmbench.py --single-pred-prompt`` builds it (``--lang cn``
    for MMBench-CN)."""
    body = f"{hint}\n{question}" if hint else question
    return f"{body}\n{option_lines(options)}\n{OPTION_LETTER_CN if chinese else OPTION_LETTER}"


def mean_background(image_mean: Sequence[float]) -> tuple[int, ...]:
    """LLaVA's padding colour from an image processor's ``image_mean`` (0-1 floats):
    ``int(x * 255)``, truncated as LLaVA does (CLIP's mean gives ``(122, 116, 104)``)."""
    return tuple(int(x * 255) for x in image_mean)


def pad_to_square(image, background: Sequence[int] = (0, 0, 0)):
    """LLaVA's ``expand2square``: the image (as RGB) centred on a square canvas of its
    longer side filled with ``background`` (RGB ints 0-255, see :func:`mean_background`);
    the offset is ``(long - short) // 2``. A square image is returned as RGB, unchanged."""
    from PIL import Image

    values = tuple(background)
    if any(isinstance(v, float) and not v.is_integer() for v in values):
        raise ValueError(f"background: RGB ints 0-255, got {values!r}; for an image_mean of 0-1 floats use "
                         "mean_background(image_mean)")
    fill = tuple(int(v) for v in values)
    if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
        raise ValueError(f"background: three ints 0-255 (RGB), got {tuple(background)!r}")
    image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
