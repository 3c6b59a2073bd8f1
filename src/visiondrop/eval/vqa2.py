"""Answering ShapesVQA-2 (:mod:`visiondrop.data.shapes2`) with a LLaVA-1.5-shaped model:
multi-token answers by greedy ``model.generate`` (through the user's path, so a pruning
handle applies), scored by exact match of the whole answer, per question kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.shapes2 import KINDS
from . import vqa
from .vqa import Item, items_of  # the same items for both datasets

__all__ = ["MAX_ANSWER_TOKENS", "Item", "accuracy_by_kind", "answer", "items_of"]

#: longest answer (the caption: three objects of up to 3 words each, with separators)
MAX_ANSWER_TOKENS = 24


@torch.inference_mode()
def answer(model, tokenizer, prompt: str, items: Sequence[Item], batch_size: int = 32,
           progress: bool | str = False) -> list[str]:
    """The model's answer to every item (words up to ``</s>``), in order. ``prompt`` has a
    ``{question}`` field and one ``<image>`` (expanded here to the model's placeholders)."""
    from ..zoo.shapes_llava import pixel_values

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    placeholders = " ".join(["<image>"] * model.config.image_seq_length)
    eos = tokenizer.convert_tokens_to_ids("</s>")
    answers = []
    batches = range(0, len(items), batch_size)
    for start in tqdm(batches, desc=progress if isinstance(progress, str) else "answering", disable=not progress):
        chunk = items[start:start + batch_size]
        texts = [prompt.format(question=item.question.text).replace("<image>", placeholders) for item in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        pixels = pixel_values(torch.from_numpy(np.stack([item.scene.image for item in chunk])))
        out = model.generate(**batch, pixel_values=pixels.to(device, dtype), max_new_tokens=MAX_ANSWER_TOKENS,
                             do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            row = row[:row.index(eos)] if eos in row else row
            # an id of the padded vocabulary beyond the word list (an undertrained model's) has no token
            answers.append(" ".join(token or tokenizer.unk_token for token in tokenizer.convert_ids_to_tokens(row)))
    return answers


def accuracy_by_kind(items: Sequence[Item], answers: Sequence[str]) -> dict[str, float]:
    """Accuracy (0-1) per ShapesVQA-2 kind (whole answers, exact), plus ``overall``."""
    return vqa.accuracy_by_kind(items, answers, KINDS)
