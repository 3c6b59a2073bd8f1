"""Answer ShapesVQA questions with a LLaVA model and score them.

One path for training-time evaluation, the demo and the fidelity benchmark: the
processor builds the batch (left padding), the model's own ``forward`` runs with
whatever pruning handle is active, and the answer is the arg-max next token (the
first token greedy ``generate`` would emit; every answer is one word).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.shapes import KINDS, Question, Scene
from ..zoo.shapes_llava import PROMPT


@dataclass(frozen=True)
class Item:
    """One question with the scene it is about."""

    scene: Scene
    question: Question


def items_of(scenes: Sequence[Scene], limit: int | None = None) -> list[Item]:
    items = [Item(scene, q) for scene in scenes for q in scene.questions]
    return items if limit is None else items[:limit]


@torch.inference_mode()
def answer(model, processor, items: Sequence[Item], batch_size: int = 32, progress: bool | str = False,
           generate: bool = False) -> list[str]:
    """The model's one-word answer to every item, in order. ``generate=True`` runs
    greedy ``model.generate`` for two tokens (prefill, then one cached decode step)
    and returns the first; the default, one forward pass, gives the same token."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if getattr(processor.tokenizer, "padding_side", "left") != "left":
        # The answer is read at the last column, which is every row's last token only with left padding.
        raise ValueError("processor: the tokenizer must pad on the left (processor.tokenizer.padding_side = 'left'), "
                         f"got {processor.tokenizer.padding_side!r}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    answers: list[str] = []
    batches = range(0, len(items), batch_size)
    desc = progress if isinstance(progress, str) else "answering"
    for start in tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch"):
        chunk = items[start:start + batch_size]
        inputs = processor(images=[it.scene.pil() for it in chunk],
                           text=[PROMPT.format(question=it.question.text) for it in chunk],
                           padding=True, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        if generate:
            new = model.generate(**inputs, max_new_tokens=2, do_sample=False)[:, inputs["input_ids"].shape[1]]
        else:
            new = model(**inputs, logits_to_keep=1).logits[:, -1].argmax(-1)
        answers += processor.tokenizer.convert_ids_to_tokens(new.tolist())
    return answers


def accuracy_by_kind(items: Sequence[Item], answers: Sequence[str], kinds: Sequence[str] = KINDS
                     ) -> dict[str, float]:
    """Accuracy (0-1) per question kind (in ``kinds``' order), plus ``overall`` over all
    items; an answer is right when its words are the expected answer's (exact match)."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    right: dict[str, list[bool]] = defaultdict(list)
    for item, given in zip(items, answers):
        right[item.question.kind].append(given.split() == item.question.answer.split())
    table = {kind: sum(v) / len(v) for kind in kinds if (v := right.get(kind))}
    table["overall"] = sum(sum(v) for v in right.values()) / max(1, len(items))
    return table
