"""Pruning schedules: how many visual tokens each stage keeps, and where.

A *budget* B is the number of visual tokens averaged over the LLM's decoder layers
(the paper's "Retain B tokens" convention; see docs/design.md). VisionDrop turns a
budget into a schedule by the paper's rule (Implementation Details): ``1.5 x B``
tokens enter the LLM, later stages shrink them geometrically so that the layer
average is B. Each stage's count is split into dominant and contextual tokens with
``C = ceil(n * contextual_ratio)``; the default ratio 1/8 reproduces the released
preset for B = 32 on a 32-layer LM exactly: encoder (42, 6), then (30, 5), (22, 4),
(16, 3) after layers 8, 16, 24.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_STAGE_FRACTIONS = (0.25, 0.5, 0.75)


class BudgetInfeasible(ValueError):
    """A budget within the model's range that a method's schedule cannot reach (for
    example below what its unpruned first layers already average). Benchmarks record
    such pairs as infeasible instead of failing."""


@dataclass(frozen=True)
class StageSpec:
    """Tokens kept by one pruning stage: ``dominant`` selected + ``contextual`` merged
    (pooling keeps 0 dominant and only merged tokens)."""

    dominant: int
    contextual: int = 0

    @property
    def total(self) -> int:
        return self.dominant + self.contextual

    def __str__(self) -> str:
        return f"{self.dominant}+{self.contextual}"


def _count(value, name: str) -> int:
    """``value`` as an int; a float (even 20.0), a bool or text is refused, never truncated."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def _as_stage(value: StageSpec | Sequence[int] | int, name: str) -> StageSpec:
    if isinstance(value, StageSpec):
        spec = StageSpec(_count(value.dominant, f"{name}.dominant"), _count(value.contextual, f"{name}.contextual"))
    elif isinstance(value, numbers.Number):
        spec = StageSpec(_count(value, name), 0)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise ValueError(f"{name} must be (dominant, contextual), got {value!r}") from None
        if len(items) != 2:
            raise ValueError(f"{name} must be (dominant, contextual), got {value!r}")
        spec = StageSpec(_count(items[0], f"{name} dominant"), _count(items[1], f"{name} contextual"))
    if spec.dominant < 0:
        raise ValueError(f"{name}: dominant must be >= 0, got {spec.dominant}")
    if spec.contextual < 0:
        raise ValueError(f"{name}: contextual must be >= 0, got {spec.contextual}")
    if spec.total < 1:
        raise ValueError(f"{name}: a stage must keep at least one token, got {spec.dominant}+{spec.contextual}")
    return spec


@dataclass(frozen=True)
class Schedule:
    """An explicit schedule.

    Attributes:
        encoder: (dominant, contextual) kept by the vision-encoder stage, or None for
            no encoder stage. With a [CLS] encoder, ``dominant`` counts the CLS.
        llm: (dominant, contextual) kept by each LLM stage, in order.
        layers: the decoder layer indices *before* which each LLM stage prunes
            (pruning "after layer 8" of the paper means on the input of layer index 8,
            counting from 0). None: 1/4, 1/2, 3/4 of the LM's depth.
    """

    encoder: StageSpec | None = None
    llm: tuple[StageSpec, ...] = ()
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.encoder is not None:
            object.__setattr__(self, "encoder", _as_stage(self.encoder, "schedule.encoder"))
        llm = tuple(_as_stage(s, f"schedule.llm[{i}]") for i, s in enumerate(self.llm))
        object.__setattr__(self, "llm", llm)
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, numbers.Number) else self.layers
            object.__setattr__(self, "layers", tuple(_count(x, f"schedule.layers[{i}]") for i, x in enumerate(layers)))

    def resolved_layers(self, num_layers: int) -> tuple[int, ...]:
        """The stage layers for an LM of ``num_layers`` decoder layers, validated.
        Default: n stages at 1/(n+1), ..., n/(n+1) of the depth (1/4, 1/2, 3/4 for three)."""
        if self.layers is None:
            count = len(self.llm)
            layers = default_stage_layers(num_layers, [(i + 1) / (count + 1) for i in range(count)])
            if len(layers) != count:
                raise ValueError(f"schedule.llm has {count} stages but an LM with {num_layers} decoder layers "
                                 "has room for fewer; give schedule.layers explicitly")
        else:
            layers = self.layers
        if len(layers) != len(self.llm):
            raise ValueError(
                f"schedule.layers has {len(layers)} entries but schedule.llm has {len(self.llm)} stages"
            )
        for i, layer in enumerate(layers):
            if not 1 <= layer < num_layers:
                raise ValueError(
                    f"schedule.layers[{i}] = {layer} is out of range: must be in [1, {num_layers - 1}] "
                    f"for an LM with {num_layers} decoder layers (layer 0 is never pruned)"
                )
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"schedule.layers must be strictly increasing, got {list(layers)}")
        return tuple(layers)

    def validated(self, num_layers: int, encoder_available: int, llm_tokens: int) -> Schedule:
        """This schedule with its layers resolved, after checking that every stage keeps no
        more than enters it: ``encoder_available`` encoder tokens, or ``llm_tokens`` entering
        the LLM when there is no encoder stage."""
        layers = self.resolved_layers(num_layers)
        entering = llm_tokens
        if self.encoder is not None:
            _check_fits("schedule.encoder", self.encoder, encoder_available)
            entering = self.encoder.total
        for i, stage in enumerate(self.llm):
            _check_fits(f"schedule.llm[{i}]", stage, entering)
            entering = stage.total
        return Schedule(encoder=self.encoder, llm=self.llm, layers=layers)

    def tokens_per_layer(self, num_layers: int, entering: int) -> list[int]:
        """Visual tokens each decoder layer sees, given ``entering`` tokens at layer 0."""
        counts = [entering] * num_layers
        for layer, stage in zip(self.resolved_layers(num_layers), self.llm):
            counts[layer:] = [stage.total] * (num_layers - layer)
        return counts

    def repeated(self, units: int) -> Schedule:
        """The schedule of an image made of ``units`` encoder units (LLaVA-NeXT crops,
        video frames) each planned by this one: the encoder stage still applies per unit,
        every LLM stage keeps ``units`` times as many tokens of the whole image."""
        llm = tuple(StageSpec(s.dominant * units, s.contextual * units) for s in self.llm)
        return Schedule(encoder=self.encoder, llm=llm, layers=self.layers)

    def __str__(self) -> str:
        enc = str(self.encoder) if self.encoder else "off"
        stages = ", ".join(f"L{layer}:{s}" for layer, s in zip(self.layers or (), self.llm))
        if self.layers is None:
            stages = ", ".join(str(s) for s in self.llm)
        return f"encoder {enc}; llm [{stages}]"


def scale_stages(stages: Sequence[StageSpec], reference_entry: int, entry: int) -> tuple[StageSpec, ...]:
    """LLM stages planned for an image entering the LLM with ``reference_entry`` tokens,
    applied to one entering with ``entry`` (a smaller LLaVA-NeXT image, a packed
    anyres layout): every stage keeps the same share, rounded, at least one token, and
    the dominant:contextual split of the plan. Identity when the two are equal."""
    if entry == reference_entry:
        return tuple(stages)
    ratio = entry / reference_entry
    scaled = []
    for spec in stages:
        total = min(max(1, round(spec.total * ratio)), entry)
        contextual = min(round(spec.contextual * total / spec.total), total - (1 if spec.dominant else 0))
        scaled.append(StageSpec(total - contextual, contextual))
    return tuple(scaled)


def _check_fits(name: str, stage: StageSpec, available: int) -> None:
    if stage.dominant > available:
        raise ValueError(f"{name} dominant = {stage.dominant} exceeds the {available} tokens entering that stage")
    if stage.contextual > available - stage.dominant:
        raise ValueError(f"{name} contextual = {stage.contextual} exceeds the {available - stage.dominant} "
                         f"tokens left after {stage.dominant} dominant")


def default_stage_layers(num_layers: int, fractions: Sequence[float] = DEFAULT_STAGE_FRACTIONS) -> tuple[int, ...]:
    """1/4, 1/2, 3/4 of the depth (8, 16, 24 for 32 layers), without layer 0 or repeats."""
    layers = sorted({round(num_layers * f) for f in fractions} - {0})
    return tuple(layer for layer in layers if layer < num_layers)


def scale_layers(layers: Sequence[int], num_layers: int, reference_layers: int = 32, name: str = "layers"
                 ) -> tuple[int, ...]:
    """Map stage layers a method's release gives for a ``reference_layers``-deep LM
    (LLaVA-1.5-7B: 32) to an LM of ``num_layers``, in proportion to depth, keeping them
    in ``[1, num_layers - 1]`` and strictly increasing (8, 16, 24 of 32 are 2, 4, 6 of 8)."""
    scaled: list[int] = []
    for layer in layers:
        value = max(1, round(layer * num_layers / reference_layers), scaled[-1] + 1 if scaled else 1)
        if value >= num_layers:
            raise ValueError(f"{name}: {list(layers)} (for a {reference_layers}-layer LM) does not fit an LM with "
                             f"{num_layers} decoder layers; give {name}=... explicitly")
        scaled.append(value)
    return tuple(scaled)


def check_layers(layers, num_layers: int, name: str = "layers") -> tuple[int, ...]:
    """Validate explicit stage layers: ints in ``[1, num_layers - 1]``, strictly increasing."""
    if isinstance(layers, int):
        layers = (layers,)
    values = tuple(layers)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be one or more ints, got {layers!r}")
    for v in values:
        if not 1 <= v < num_layers:
            raise ValueError(f"{name}: layer {v} is out of range [1, {num_layers - 1}] for an LM with "
                             f"{num_layers} decoder layers (layer 0 is never pruned)")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {list(values)}")
    return values


def _layer_average(counts: Sequence[float], layers: Sequence[int], num_layers: int) -> float:
    bounds = [0, *layers, num_layers]
    return sum(c * (bounds[i + 1] - bounds[i]) for i, c in enumerate(counts)) / num_layers


def schedule_from_budget(
    budget: int,
    num_layers: int,
    available: int,
    *,
    encoder_stage: bool = True,
    entry_factor: float = 1.5,
    contextual_ratio: float = 1 / 8,
    layers: Sequence[int] | None = None,
) -> Schedule:
    """The paper's rule: ``entry_factor x budget`` tokens enter the LLM, then geometric
    decay over the LLM stages so that the average over all decoder layers is ``budget``.

    Args:
        budget: B, visual tokens averaged over decoder layers.
        num_layers: decoder layers in the LM.
        available: the most visual tokens per image that can enter the LLM (576 for
            LLaVA-1.5: its image placeholders).
        encoder_stage: whether the encoder stage prunes (False: all tokens enter the LLM).
        entry_factor: 1.5 for images, 3 for video (paper, Implementation Details).
        contextual_ratio: share of each stage's tokens that are contextual, rounded up.
        layers: LLM stage layers; default 1/4, 1/2, 3/4 of the depth.
    """
    if entry_factor < 1:
        raise ValueError(f"entry_factor must be >= 1 (tokens entering the LLM >= budget), got {entry_factor}")
    stage_layers = tuple(layers) if layers is not None else default_stage_layers(num_layers)
    entering = min(round(entry_factor * budget), available) if encoder_stage else available
    if not stage_layers:
        if entering != budget:
            raise BudgetInfeasible(f"budget={budget}: an LM with {num_layers} layers has no room for LLM stages; "
                                   f"use budget={entering}")
        ratios = []
    else:
        first_share = stage_layers[0] / num_layers
        if entering * first_share > budget + 1e-9:
            raise BudgetInfeasible(
                f"budget={budget} is too small: {entering} tokens enter the LLM and stay until layer "
                f"{stage_layers[0]}, which alone averages {entering * first_share:.1f}"
            )

        def average(rate: float) -> float:
            return _layer_average([entering * rate**k for k in range(len(stage_layers) + 1)], stage_layers, num_layers)

        low, high = 0.0, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if average(mid) < budget else (low, mid)
        rate = (low + high) / 2
        ratios = [max(1, round(entering * rate**k)) for k in range(1, len(stage_layers) + 1)]

    counts = [entering, *ratios]
    achieved = _layer_average(counts, stage_layers, num_layers)
    if abs(achieved - budget) > 1:
        raise BudgetInfeasible(f"budget={budget} cannot be met: the schedule averages {achieved:.1f} tokens per layer")

    def split(total: int) -> StageSpec:
        contextual = min(math.ceil(total * contextual_ratio), total - 1)
        return StageSpec(total - contextual, contextual)

    return Schedule(
        encoder=split(entering) if encoder_stage else None,
        llm=tuple(split(n) for n in ratios),
        layers=stage_layers,
    )
