"""What a pruning method is: a typed config, a schedule, and one reduction rule per
stage kind, composed from :mod:`visiondrop.core`.

Adapters hand a method the tensors of one stage (:class:`EncoderStage`,
:class:`DecoderStage`); the method returns a :class:`Reduction` and never touches
the model.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.merging import ContextualMerge
from ..core.scoring import received_attention_scores
from ..schedule import Schedule, StageSpec
from .options import check_option, option_types

MODALITIES = ("image", "video")


@dataclass(frozen=True)
class ModelGeometry:
    """What a method needs to know about a model to plan, filled in by the adapter.

    Attributes:
        num_layers: decoder layers of the LM.
        encoder_tokens: tokens per image in the vision encoder (577 for CLIP-L/336).
        llm_tokens: visual tokens per image the unpruned model feeds the LLM (576).
        has_cls: the encoder has a [CLS] token at index 0.
        modality: what one planned unit is: "image" (an image, or one LLaVA-NeXT crop)
            or "video" (one video frame, planned per frame by Video-LLaVA's adapter);
            methods whose rule differs by modality read it (VisionDrop's entry factor).
    """

    num_layers: int
    encoder_tokens: int
    llm_tokens: int
    has_cls: bool
    modality: str = "image"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")


@dataclass
class EncoderStage:
    """One vision-encoder stage for S images: ``hidden`` ``(S, N, H)`` are the features
    the projector would see (CLS included when the encoder has one); ``queries`` and
    ``keys`` ``(S, heads, N, d)`` come from the same encoder layer.

    Where the N tokens are not positions of one attention layer (Qwen2.5-VL's merged 2 x 2
    blocks), the adapter gives ``received`` ``(S, N)``, the attention each token receives
    from the image's tokens, and ``merge_keys`` ``(S, N, d)`` instead of queries and keys."""

    hidden: torch.Tensor
    queries: torch.Tensor | None
    keys: torch.Tensor | None
    scaling: float
    has_cls: bool
    received: torch.Tensor | None = None
    merge_keys: torch.Tensor | None = None

    def received_scores(self) -> torch.Tensor:
        """``(S, N)`` mean attention each token receives from all tokens (paper, Sec.
        "Visual Query Selection")."""
        if self.received is not None:
            return self.received
        return received_attention_scores(self.queries, self.keys, self.scaling)

    def similarity_keys(self) -> torch.Tensor:
        """``(S, N, d)`` keys for contextual merging: the layer's keys averaged over heads."""
        return self.merge_keys if self.merge_keys is not None else self.keys.mean(dim=1)


@dataclass
class DecoderStage:
    """One LLM stage for S segments (one image each) of N visual tokens.

    Attributes:
        hidden: ``(S, N, H)`` the visual tokens' hidden states (input of the layer).
        keys: ``(S, Hk, L, d)`` post-RoPE keys of each segment's whole row, from the
            scoring layer's own ``input_layernorm`` and ``k_proj`` (the pruning layer,
            or the one before it for methods with ``score_layer_offset = -1``).
            None in the view given to :meth:`PruningMethod.prepare_llm`.
        key_mask: bool ``(S, N, L)`` causal and padding mask for the visual queries.
        visual_columns: long ``(S, N)`` sequence index of each visual token.
        scaling: attention logit scale of the layer.
        project_queries: ``columns (S, M) -> (S, Hq, M, d)`` post-RoPE queries of any
            tokens of the row (text-guided methods ask for text positions).
        row_hidden: ``(S, L, H)`` the whole row's hidden states (input of the layer).
        row_mask: bool ``(S, L)`` the row's real (non-padding) tokens.
        row_visual: bool ``(S, L)`` the row's visual tokens (of every image in it).
        last_columns: long ``(S,)`` the row's last real token: in a prompt, the last
            instruction token text-guided methods query with.
        origins: long ``(S, L)`` each token's column in the sequence that entered the
            LM (-1 for merged tokens), to follow tokens across stages.
        memo: one dict per prefill that a method may keep state in across its stages.
        blocks: long ``(S, L)`` on models whose image tokens attend to each other both
            ways (Gemma 3): each column's image block (a run of visual tokens), -1 for
            text; None: causal attention only.
        window: the scoring layer's sliding window (keys more than ``window - 1``
            columns back are not attended), None for full attention.
    """

    hidden: torch.Tensor
    keys: torch.Tensor | None
    key_mask: torch.Tensor | None
    visual_columns: torch.Tensor
    scaling: float
    project_queries: Callable[[torch.Tensor], torch.Tensor] | None
    row_hidden: torch.Tensor | None = None
    row_mask: torch.Tensor | None = None
    row_visual: torch.Tensor | None = None
    last_columns: torch.Tensor | None = None
    origins: torch.Tensor | None = None
    memo: dict = dataclasses.field(default_factory=dict)
    blocks: torch.Tensor | None = None
    window: int | None = None

    def visual_keys(self) -> torch.Tensor:
        """``(S, N, d)`` the visual tokens' keys averaged over heads (merge metric)."""
        index = self.visual_columns[:, None, :, None].expand(-1, self.keys.shape[1], -1, self.keys.shape[-1])
        return self.keys.gather(2, index).mean(dim=1)

    def query_mask(self, columns: torch.Tensor) -> torch.Tensor:
        """bool ``(S, M, L)``: what queries at ``columns`` ``(S, M)`` attend to, as the
        model's own mask has it: causal, or within the query's image block (``blocks``),
        inside the sliding ``window``, never padding."""
        keys = torch.arange(self.row_mask.shape[1], device=columns.device)[None, None, :]
        visible = keys <= columns[..., None]
        if self.blocks is not None:
            query_blocks = self.blocks.gather(1, columns)[..., None]
            visible = visible | ((query_blocks >= 0) & (self.blocks[:, None, :] == query_blocks))
        if self.window is not None:
            visible = visible & (keys > columns[..., None] - self.window)
        return visible & self.row_mask[:, None, :]


@dataclass
class Reduction:
    """A stage's decision: ``dominant`` long ``(S, D)`` sorted local indices, and the
    contextual merge (``merge.tokens`` ``(S, C, H)``)."""

    dominant: torch.Tensor
    merge: ContextualMerge


POSITION_POLICIES = ("reindex", "keep")


def check_positions(positions: str) -> None:
    """The ``positions`` option every method shares (see :class:`~visiondrop.methods.visiondrop.VisionDropConfig`)."""
    if positions not in POSITION_POLICIES:
        raise ValueError(f"positions must be one of {POSITION_POLICIES}, got {positions!r}")


def check_budget(budget, maximum: int) -> None:
    """``budget`` must be an int in ``[1, maximum]`` (visual tokens per image)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ValueError(f"budget must be an int, got {budget!r}")
    if not 1 <= budget <= maximum:
        raise ValueError(f"budget must be in [1, {maximum}] (visual tokens per image of this model), got {budget}")


class PruningMethod(ABC):
    """Base class of registered methods. Subclasses set ``name``, ``summary`` and
    ``Config`` (a dataclass) and implement :meth:`plan` and the reductions."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    #: -1: LLM stages score with the attention of the layer *before* the pruning layer
    #: (FastV and SparseVLM prune a layer's output by that layer's own attention).
    score_layer_offset: ClassVar[int] = 0
    #: every reduction's output shape follows from the schedule alone, so a prefill can be
    #: captured as a CUDA graph (:mod:`visiondrop.capture`); False: it depends on the data
    fixed_shapes: ClassVar[bool] = True
    #: listed by ``available_methods()`` (False: a baseline reachable by name only)
    listed: ClassVar[bool] = True

    def __init__(self, config) -> None:
        self.config = config

    @classmethod
    def from_options(cls, **options) -> PruningMethod:
        """The method with ``options`` (names and types checked against ``Config``)."""
        types = option_types(cls.Config)
        unknown = sorted(set(options) - set(types))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {cls.name!r}; allowed: {sorted(types)}"
            )
        return cls(cls.Config(**{name: check_option(name, value, types[name]) for name, value in options.items()}))

    @abstractmethod
    def plan(self, geometry: ModelGeometry) -> Schedule:
        """Validate the config against the model and return the schedule to run."""

    def reduce_encoder(self, stage: EncoderStage, spec: StageSpec) -> Reduction:
        raise NotImplementedError(f"{self.name} has no encoder stage")

    def reduce_llm(self, stage: DecoderStage, spec: StageSpec) -> Reduction:
        raise NotImplementedError(f"{self.name} has no LLM stage")

    def prepare_llm(self, entry: DecoderStage) -> None:  # noqa: B027  (optional override)
        """Called once per prefill as the LM starts, with the sequence entering it
        (``keys`` None); state for later stages goes in ``entry.memo``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
