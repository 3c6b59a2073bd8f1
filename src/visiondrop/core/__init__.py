"""Model-agnostic token-reduction core: pure functions on tensors.

Nothing in this package knows about transformers or any model class. Methods
(``visiondrop.methods``) compose these pieces; adapters (``visiondrop.models``) feed
them tensors taken from a model's own modules.
"""

from .layout import CompactionPlan, image_blocks, plan_compaction
from .merging import ContextualMerge, contextual_merge
from .scoring import (
    attention_probs,
    block_sums,
    cls_attention_scores,
    received_attention_scores,
    text_query_scores,
    visual_query_scores,
)
from .selection import select_dominant

__all__ = [
    "CompactionPlan",
    "ContextualMerge",
    "attention_probs",
    "block_sums",
    "cls_attention_scores",
    "contextual_merge",
    "image_blocks",
    "plan_compaction",
    "received_attention_scores",
    "select_dominant",
    "text_query_scores",
    "visual_query_scores",
]
