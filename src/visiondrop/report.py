"""What a pruned prefill did, per stage and per batch row, for tests, plots and FLOPs.

Indices come in two spaces. *Local* indices point into the visual tokens that
entered the stage (for the encoder stage: the encoder's tokens, CLS at 0 when it
has one). *Patch* ids point into the image's patch grid (row-major, ``-1`` for the
encoder's [CLS]); a contextual token carries its target's patch id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegmentRecord:
    """One image in one row at one stage.

    Attributes:
        row: batch row.
        image: index of the image among the batch's images (placeholder order).
        dominant: local indices kept as dominant tokens, ascending.
        targets: local indices of the contextual targets, in slot order.
        merged_into: for every local input token, the contextual slot it went into
            (targets into their own), ``-1`` for dominant or dropped tokens.
        input_patches: patch id of every input token.
        output_patches: patch id of every output token (dominant, then contextual).
    """

    row: int
    image: int
    dominant: torch.Tensor
    targets: torch.Tensor
    merged_into: torch.Tensor
    input_patches: torch.Tensor
    output_patches: torch.Tensor

    @property
    def dominant_patches(self) -> torch.Tensor:
        return self.input_patches[self.dominant]

    @property
    def target_patches(self) -> torch.Tensor:
        return self.input_patches[self.targets]


@dataclass
class StageRecord:
    """One stage: ``name`` is "encoder" or "llm"; ``layer`` the decoder layer whose
    input was pruned (None for the encoder)."""

    name: str
    layer: int | None
    tokens_in: int
    dominant: int
    contextual: int
    segments: list[SegmentRecord] = field(default_factory=list)

    def rows(self, row: int) -> list[SegmentRecord]:
        return [s for s in self.segments if s.row == row]


@dataclass
class PruningReport:
    """Report of the last prefill.

    Attributes:
        stages: the stages that ran, in order.
        layer_visual_tokens: long ``(batch, num_layers)``: visual tokens each decoder
            layer saw in each row (0 for rows without an image).
        output_mask: ``(batch, L_out)`` padding mask of the positions the model's
            output (logits, last hidden state) has after pruning; a row's real
            positions, in order, are ``logits[row][output_mask[row].bool()]``.
    """

    batch_size: int
    num_layers: int
    stages: list[StageRecord] = field(default_factory=list)
    layer_visual_tokens: torch.Tensor | None = None
    output_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.layer_visual_tokens is None:
            self.layer_visual_tokens = torch.zeros(self.batch_size, self.num_layers, dtype=torch.long)

    def stage(self, name: str, layer: int | None = None) -> StageRecord:
        for s in self.stages:
            if s.name == name and (layer is None or s.layer == layer):
                return s
        raise KeyError(f"no stage {name!r} (layer {layer}) in this report")

    def average_visual_tokens(self, row: int = 0) -> float:
        """Per image: visual tokens averaged over decoder layers (the budget's measure)."""
        images = max(1, len({s.image for s in self.stages[0].rows(row)})) if self.stages else 1
        return self.layer_visual_tokens[row].float().mean().item() / images

    def summary(self) -> str:
        lines = []
        for s in self.stages:
            where = "vision encoder" if s.layer is None else f"before LLM layer {s.layer}"
            lines.append(f"{where:>22}: {s.tokens_in:4d} -> {s.dominant} dominant + {s.contextual} contextual")
        if self.layer_visual_tokens.numel():
            counts = self.layer_visual_tokens[0].tolist()
            lines.append(f"{'tokens per layer (row 0)':>22}: {counts}")
            lines.append(f"{'layer average (row 0)':>22}: {self.average_visual_tokens(0):.2f}")
        return "\n".join(lines)
