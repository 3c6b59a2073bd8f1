"""The proxy models this project trains, behind one interface: ``get_proxy(name)``.

shapes-llava (ShapesVQA, one-word answers read from one forward pass) and shapes-llava-2
(ShapesVQA-2, multi-token answers by greedy ``generate``) differ in their data, their
prompt and how an answer is read; a :class:`Proxy` hides that, so the fidelity benchmark,
the demo and ``scripts/proxy_gates.py`` take either by name.

    proxy = get_proxy("shapes-llava-2")
    model, processor = proxy.load(path)           # path None: the shipped checkpoint
    items = proxy.items(limit=24)                 # the first 24 held-out questions
    answers = proxy.answer(model, processor, items)
    proxy.accuracy_by_kind(items, answers)        # {kind: 0-1, ..., "overall"}

Importing this module imports torch (the loaders and prompts live beside the models);
the command line's parsers name the proxies without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data import shapes, shapes2
from ..eval import vqa, vqa2
from ..eval.vqa import Item
from . import shapes_llava, shapes_llava2

__all__ = ["DEFAULT_PROXY", "Proxy", "available_proxies", "get_proxy"]

DEFAULT_PROXY = "shapes-llava"


@dataclass(frozen=True)
class Proxy:
    """One proxy model: how to load it, its held-out questions, how it answers them.

    Attributes:
        name: the registry name (``--proxy``).
        purpose: one line: what the model is for.
        dataset: the name of its question set, as reports print it.
        caveat: what the model is not, said in every figure heading.
        load: ``(path=None, device="cpu", dtype=float32, attn_implementation="sdpa") ->
            (model, processor)``; ``path`` None loads the shipped checkpoint (FileNotFoundError
            naming the training recipe where there is none).
        heldout: ``num_scenes -> scenes``: the first scenes of the fixed held-out set.
        heldout_scenes: scenes in the whole held-out set.
        heldout_questions: questions in the whole held-out set.
        kinds: the question kinds, in report order.
        answer: ``(model, processor, items, batch_size=32, progress=False, generate=False) ->
            answers``; ``generate=True`` answers through ``model.generate`` (the cached path a
            user runs) also where one forward pass gives the same answer (shapes-llava's one
            word); shapes-llava-2's multi-token answers always come from ``generate``.
        accuracy_by_kind: ``(items, answers) -> {kind: 0-1, ..., "overall"}`` (exact match).
        fingerprint: ``scenes -> str``: SHA-256 of their pixels, questions and answers.
        prompt: the prompt, with ``{question}`` and one ``<image>``.
    """

    name: str
    purpose: str
    dataset: str
    caveat: str
    load: Callable[..., tuple]
    heldout: Callable[[int], list]
    heldout_scenes: int
    heldout_questions: int
    kinds: tuple[str, ...]
    answer: Callable[..., list[str]]
    accuracy_by_kind: Callable[[Sequence[Item], Sequence[str]], dict[str, float]]
    fingerprint: Callable[[Sequence], str]
    prompt: str

    def items(self, limit: int | None = None) -> list[Item]:
        """The first ``limit`` held-out questions (all when None), rendering only the
        scenes they need."""
        if limit is None:
            return vqa.items_of(self.heldout(self.heldout_scenes))
        # A scene asks each kind at most once; a few shapes-llava-2 scenes skip a kind,
        # so render more scenes until the questions suffice.
        scenes = -(-limit // len(self.kinds))
        while True:
            items = vqa.items_of(self.heldout(min(scenes, self.heldout_scenes)), limit)
            if len(items) == limit or scenes >= self.heldout_scenes:
                return items
            scenes += -(-(limit - len(items)) // len(self.kinds))

    def figure_heading(self, subject: str) -> str:
        """``"<name>, <subject> (<caveat>)"``: a figure's heading names the model and what it is not."""
        return f"{self.name}, {subject} ({self.caveat})"


def _answer_shapes(model, processor, items: Sequence[Item], batch_size: int = 32, progress: bool | str = False,
                   generate: bool = False) -> list[str]:
    return vqa.answer(model, processor, items, batch_size=batch_size, progress=progress, generate=generate)


def _answer_shapes2(model, processor, items: Sequence[Item], batch_size: int = 32, progress: bool | str = False,
                    generate: bool = True) -> list[str]:
    del generate  # always generated: answers have several tokens
    return vqa2.answer(model, processor.tokenizer, shapes_llava2.PROMPT, items, batch_size=batch_size,
                       progress=progress)


def _accuracy_shapes(items: Sequence[Item], answers: Sequence[str]) -> dict[str, float]:
    return vqa.accuracy_by_kind(items, answers, shapes.KINDS)


_PROXIES = {proxy.name: proxy for proxy in (
    Proxy(name="shapes-llava",
          purpose="a regression guard: LLaVA-1.5 in miniature (8-layer LM) on ShapesVQA, one-word answers",
          dataset="ShapesVQA", caveat="a regression guard, not real LLaVA",
          load=shapes_llava.load_shapes_llava, heldout=shapes.heldout, heldout_scenes=shapes.HELDOUT_SCENES,
          heldout_questions=shapes.HELDOUT_SCENES * len(shapes.KINDS), kinds=tuple(shapes.KINDS),
          answer=_answer_shapes, accuracy_by_kind=_accuracy_shapes, fingerprint=shapes.fingerprint,
          prompt=shapes_llava.PROMPT),
    Proxy(name="shapes-llava-2",
          purpose="a proxy meant to rank methods: 32-layer LM, CLIP-style tower, ShapesVQA-2 with multi-token "
                  "answers",
          dataset="ShapesVQA-2", caveat="a proxy model, not real LLaVA",
          load=shapes_llava2.load_shapes_llava2, heldout=shapes2.heldout, heldout_scenes=shapes2.HELDOUT_SCENES,
          # a few scenes allow no relation or choice question; tests/test_proxies.py counts them
          heldout_questions=2099, kinds=tuple(shapes2.KINDS),
          answer=_answer_shapes2, accuracy_by_kind=vqa2.accuracy_by_kind, fingerprint=shapes2.fingerprint,
          prompt=shapes_llava2.PROMPT),
)}


def available_proxies() -> dict[str, str]:
    """Every proxy's name and one-line purpose, the default first."""
    return {name: proxy.purpose for name, proxy in _PROXIES.items()}


def get_proxy(name: str) -> Proxy:
    """The proxy called ``name``; ValueError naming ``proxy`` and the valid names otherwise."""
    try:
        return _PROXIES[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise ValueError(f"proxy: unknown {name!r}; available: {', '.join(_PROXIES)}") from None
