"""Pool: a control baseline. Average-pools the encoder's patch grid to B tokens at the
LLM input (no scores: every image region gets the same share of the budget).

- Where: one stage at the projector's input; every decoder layer sees B tokens.
- Budget: the side x side patch grid (24 x 24 for CLIP-L/336) is pooled to an h x w
  grid with h x w = B, h <= w <= side and w / h as small as possible (at most 4);
  other budgets are refused with the nearest ones that work.
- Cells follow ``torch.nn.functional.adaptive_avg_pool2d``: along a side of n patches
  cut into m cells, cell i averages patches floor(i n / m) .. ceil((i + 1) n / m) - 1,
  so when m does not divide n, neighbouring cells may share one patch and differ in
  size. The report assigns each patch to the one cell its centre falls in, and names
  the patch at each cell's centre as the cell's target (its position under
  ``positions="keep"``). [CLS] is never kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.merging import ContextualMerge
from ..schedule import Schedule, StageSpec
from . import register_method
from .base import EncoderStage, ModelGeometry, PruningMethod, Reduction, check_budget, check_positions

MAX_ASPECT = 4


@dataclass
class PoolConfig:
    """Options of :class:`Pool`.

    Attributes:
        budget: B, pooled tokens per image at the LLM input.
        schedule: not supported (must stay None).
        positions: "reindex" (positions renumbered 0..len-1) or "keep" (a pooled token
            takes the position of the patch at its cell's centre).
    """

    budget: int | None = None
    schedule: Schedule | None = None
    positions: str = "reindex"


def pool_grid(budget: int, side: int) -> tuple[int, int] | None:
    """``(h, w)`` with ``h * w == budget``, ``h <= w <= side``, ``w / h`` minimal and at
    most :data:`MAX_ASPECT`; None if there is none."""
    for h in range(math.isqrt(budget), 0, -1):
        w = budget // h
        if h * w == budget:
            return (h, w) if w <= side and w <= MAX_ASPECT * h else None
    return None


def _cells(n: int, m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Along a side of ``n`` patches in ``m`` cells: the cell holding each patch's centre,
    and the patch holding each cell's centre."""
    patches, cells = torch.arange(n, device=device), torch.arange(m, device=device)
    return (2 * patches + 1) * m // (2 * n), (2 * cells + 1) * n // (2 * m)


@register_method
class Pool(PruningMethod):
    name = "pool"
    summary = "control: average-pool the patch grid to B tokens before the projector"
    Config = PoolConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        if cfg.schedule is not None:
            raise ValueError("schedule: method 'pool' takes only budget=... (one stage in the encoder); "
                             "schedule=... is not supported")
        if cfg.budget is None:
            raise ValueError("budget: method 'pool' needs budget=... (visual tokens per image)")
        patches = geometry.encoder_tokens - int(geometry.has_cls)
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(f"model: pool needs a square patch grid, this encoder has {patches} patches")
        available = min(geometry.llm_tokens, patches)
        check_budget(cfg.budget, available)
        if pool_grid(cfg.budget, side) is None:
            feasible = [b for b in range(1, available + 1) if pool_grid(b, side)]
            nearest = sorted(sorted(feasible, key=lambda b: abs(b - cfg.budget))[:2])
            raise ValueError(f"budget={cfg.budget} cannot be an h x w grid with h <= w <= {side} and w / h <= "
                             f"{MAX_ASPECT} over the {side}x{side} patches; nearest that work: {nearest}")
        return Schedule(encoder=StageSpec(0, cfg.budget)).validated(geometry.num_layers, available,
                                                                    geometry.llm_tokens)

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        hidden = stage.hidden
        num_images, num_tokens, width = hidden.shape
        offset = int(stage.has_cls)
        side = math.isqrt(num_tokens - offset)
        h, w = pool_grid(spec.contextual, side)
        grid = hidden[:, offset:].transpose(1, 2).reshape(num_images, width, side, side)
        pooled = torch.nn.functional.adaptive_avg_pool2d(grid.float(), (h, w)).to(hidden.dtype)
        tokens = pooled.flatten(2).transpose(1, 2)  # (S, h * w, H), cells row-major

        row_cell, row_centre = _cells(side, h, hidden.device)
        col_cell, col_centre = _cells(side, w, hidden.device)
        cell = (row_cell[:, None] * w + col_cell[None, :]).flatten()
        targets = (row_centre[:, None] * side + col_centre[None, :]).flatten() + offset
        merged_into = torch.cat([cell.new_full((offset,), -1), cell])
        merge = ContextualMerge(tokens, targets.expand(num_images, -1).contiguous(),
                                merged_into.expand(num_images, -1).contiguous())
        dominant = torch.empty(num_images, 0, dtype=torch.long, device=hidden.device)
        return Reduction(dominant, merge)
