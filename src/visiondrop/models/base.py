"""What a model adapter is. An adapter knows one architecture: where its visual
tokens are, which modules to hook, how its encoder is laid out. Adapters register
by model class name, so adding a model is one new module."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..methods.base import ModelGeometry, PruningMethod, check_budget
from ..report import PruningReport
from ..schedule import Schedule
from ..timing import machinery
from .decoder import cache_argument
from .guards import check_cache


@dataclass(frozen=True)
class ImageCounts:
    """One image's token counts in one prefill, for FLOPs (:mod:`visiondrop.bench.flops`)."""

    per_layer: list[int]  # visual tokens each LM decoder layer sees (with unprunable ones: newlines)
    encoder_passes: int  # vision-tower passes (crops, frames)
    projected: int  # visual tokens through the projector
    encoder_tokens: int | None = None  # tokens per tower pass (None: the config's image size)


class ModelAdapter(ABC):
    model_classes: ClassVar[tuple[str, ...]]
    #: options of the model rather than of the method (``apply(model, newline="end")``),
    #: with their allowed values; the first is the default.
    options: ClassVar[dict[str, tuple]] = {}

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.report: PruningReport | None = None

    @abstractmethod
    def geometry(self) -> ModelGeometry:
        """Validate the model's configuration and describe it for planning."""

    def configure(self, **options) -> None:
        """Validate and keep this adapter's options (see :attr:`options`)."""
        for name, allowed in self.options.items():
            value = options.get(name, allowed[0])
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed} for {type(self.model).__name__}, got {value!r}")
            setattr(self, name, value)

    def plan(self, method: PruningMethod) -> tuple[PruningMethod, Schedule]:
        """The method to run and its validated schedule (nothing runs). Adapters whose
        images are made of several encoder units override this (:func:`plan_per_unit`)."""
        return method, method.plan(self.geometry())

    @abstractmethod
    def install(self, method: PruningMethod, schedule: Schedule, positions: str) -> list:
        """Register this model's hooks; return their removable handles."""

    def image_counts(self, schedule: Schedule | None, image_size: tuple[int, int] | None = None) -> ImageCounts:
        """Token counts of one image under ``schedule`` (None: unpruned), without running."""
        raise NotImplementedError(f"model: token counts for FLOPs are not available for {type(self.model).__name__}")

    def reset(self) -> None:  # noqa: B027  (optional override)
        """Forget any in-flight state (called on remove)."""


class ForwardHooks:
    """The two pre-hooks an adapter puts on ``model.model`` (the class that scatters the
    visual features into the LM input): refuse ``labels``, and send each call to the
    adapter's ``_prefill`` or ``_decode_step`` (a non-empty cache is a decode step)."""

    _forward_params: list[str]  # model.model.forward's parameter names, to bind positional args

    def _reject_labels(self, module, args, kwargs):
        if kwargs.get("labels") is not None:
            raise ValueError("labels: a pruned forward returns fewer logits than input positions; compute the "
                             "loss yourself from handle.report, or remove the handle")
        return None

    @machinery
    def _model_pre_hook(self, module, args, kwargs):
        if args:  # bind positional arguments so they can be rewritten
            kwargs.update(zip(self._forward_params, args))
            args = ()
        cache = cache_argument(kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            return self._decode_step(kwargs, cache)
        check_cache(cache)
        if not kwargs.get("mm_encoder_outputs"):
            # Media encoded for this call runs after this hook; without any, nothing an
            # earlier call's encoder pass left may stand for this call's images.
            # (generate() may encode once and pass the outputs to every step.)
            self.reset()
        return self._prefill(kwargs, cache)

    def _decode_tail(self, kwargs, cache, media_token_ids, what: str):
        """The checks every decode step after a pruned prefill makes. Returns None when
        nothing was pruned, else ``(session, query, generated, tail)``: the new tokens'
        count, the tokens generated so far and the 2-D mask columns after the prompt."""
        pruner = self.pruner
        session = pruner.session
        if session is None and not pruner.was_pruned(cache):
            return None  # a prompt without images: nothing was pruned
        if not pruner.continues(cache):
            raise RuntimeError("past_key_values: this cache does not continue the last pruned prefill; "
                               "decode a pruned prompt right after its own prefill")
        input_ids = kwargs.get("input_ids")
        batch, query = (input_ids if input_ids is not None else kwargs.get("inputs_embeds")).shape[:2]
        if input_ids is not None and any(bool((input_ids == token).any()) for token in media_token_ids):
            raise ValueError(f"input_ids: {what} tokens after a pruned prefill are not supported")
        mask = kwargs.get("attention_mask")
        generated = session.cache_length - session.entry_mask.shape[1] + query
        if mask is None:
            tail = torch.ones(batch, generated, dtype=session.entry_mask.dtype, device=session.entry_mask.device)
        elif mask.shape[1] != session.original_length + generated:
            raise ValueError(f"attention_mask: expected {session.original_length + generated} columns "
                             f"(the prompt as given plus generated tokens), got {mask.shape[1]}")
        else:
            tail = mask[:, session.original_length:]
        return session, query, generated, tail


def plan_per_unit(method: PruningMethod, unit: ModelGeometry, units: int, what: str = "crops"
                  ) -> tuple[PruningMethod, Schedule]:
    """Plan an image made of ``units`` identical encoder units (LLaVA-NeXT's crops,
    Video-LLaVA's frames) as ``units`` times one unit: the method is planned for one
    unit with ``budget / units`` (its encoder stage then applies to every unit, as the
    VisionDrop and VisionZip releases do on LLaVA-NeXT) and the LLM stages keep
    ``units`` times the unit's counts of the whole image, so the layer average of the
    reference image is the budget. An explicit ``schedule`` is per unit."""
    budget = getattr(method.config, "budget", None)
    if budget is not None:
        check_budget(budget, units * unit.llm_tokens)
        if budget % units:
            lower = budget - budget % units
            raise ValueError(f"budget={budget}: this model plans per {what[:-1]} ({units} {what} per image), so the "
                             f"budget must be a multiple of {units}; try {lower or lower + units} or {lower + units}")
        method = type(method)(dataclasses.replace(method.config, budget=budget // units))
    return method, method.plan(unit).repeated(units)
