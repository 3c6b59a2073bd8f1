"""Random: a control baseline. Keeps B uniformly random patch tokens per image at the
LLM input and drops the rest.

- Scores: none; the kept subset is uniform over the image's patches ([CLS] is never
  a candidate).
- Where: one stage, at the vision encoder's feature layer (the projector's input); no
  LLM stages, so every decoder layer sees exactly B visual tokens and the layer
  average is B trivially.
- No contextual merging: the unselected tokens are dropped.

The subset is a *fixed* random subset: it is drawn from a fresh CPU
``torch.Generator`` seeded with ``seed`` on every call, so every image gets the same
patch positions whatever the batch composition, the order of images, or the device
(CPU and GPU runs keep the same tokens). Results therefore never depend on batching,
and since the objects of the benchmark images sit at random places, a fixed random
subset is as fair a random baseline as a fresh draw per image; vary ``seed`` to
average over subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.layout import host_to_device
from ..core.merging import contextual_merge
from ..core.selection import select_dominant
from ..schedule import Schedule, StageSpec
from . import register_method
from .base import EncoderStage, ModelGeometry, PruningMethod, Reduction, check_budget, check_positions


@dataclass
class RandomConfig:
    """Options of :class:`RandomPruning`.

    Attributes:
        budget: visual tokens per image, kept at the LLM input (every decoder layer
            sees exactly this many).
        schedule: not supported (the field exists because ``visiondrop.apply`` always
            passes it); must stay None.
        seed: seed of the random patch subset (the same subset for every image).
        positions: "reindex" (positions renumbered 0..len-1 after pruning) or "keep"
            (each kept token keeps its original RoPE position).
    """

    budget: int | None = None
    schedule: Schedule | None = None
    seed: int = 0
    positions: str = "reindex"


@register_method
class RandomPruning(PruningMethod):
    name = "random"
    summary = "control: B uniformly random patch tokens at the LLM input, no merging"
    Config = RandomConfig

    def plan(self, geometry: ModelGeometry) -> Schedule:
        cfg = self.config
        check_positions(cfg.positions)
        if cfg.schedule is not None:
            raise ValueError("schedule: method 'random' takes only budget=... (one stage at the LLM input); "
                             "schedule=... is not supported")
        if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
            raise ValueError(f"seed must be an int, got {cfg.seed!r}")  # noqa: TRY004  (as budget)
        if not -(2**63) <= cfg.seed < 2**64:  # torch.Generator.manual_seed's range
            raise ValueError(f"seed must be in [-2**63, 2**64), got {cfg.seed}")
        if cfg.budget is None:
            raise ValueError("budget: method 'random' needs budget=... (visual tokens per image)")
        # Only patches are candidates (CLS is never kept), and no more than the image's placeholders.
        available = min(geometry.llm_tokens, geometry.encoder_tokens - int(geometry.has_cls))
        check_budget(cfg.budget, available)
        schedule = Schedule(encoder=StageSpec(cfg.budget, 0))
        return schedule.validated(geometry.num_layers, available, geometry.llm_tokens)

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        num_images, num_tokens = stage.hidden.shape[:2]
        offset = int(stage.has_cls)
        # A fresh CPU generator per call: the same subset for every image, batch and device.
        generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        scores = torch.rand(num_tokens - offset, generator=generator)
        patches = select_dominant(scores[None], spec.dominant)[0] + offset
        dominant = host_to_device(patches, stage.hidden.device).expand(num_images, -1).contiguous()
        return Reduction(dominant, contextual_merge(stage.hidden, stage.similarity_keys(), dominant, 0))
