"""A pruned prefill captured as one CUDA graph, for fixed-shape serving at batch 1.

At batch 1 a 7B prefill on an H100 is bound by the host, not by arithmetic: eager
transformers takes about as long for 124 tokens as for 636, and every pruning stage
adds its own few hundred kernel launches. Fewer tokens only pay off once the launches
are gone. A CUDA graph replays every kernel of the vision tower, the encoder stage, the
LLM stages and the LM in one launch, so the pruned prefill runs at the speed of its
arithmetic (docs/benchmarks/README.md, "Captured prefill").

A graph is valid for one *layout*: batch size, prompt length, where the image
placeholders sit, the pixel shape, and the method, budget and options of the handle
active at capture (or none: the unpruned model). Text tokens and pixels may change
between calls. Pruning's host-side work (placeholder runs, compaction plans, index
constants) depends only on the layout, so it is done once, before capture, under
:func:`visiondrop.core.layout.frozen_plans`; the scores, selections and merges run on
the device and are replayed with the new pixels.

Use::

    handle = visiondrop.apply(model, "visiondrop", budget=64)
    captured = visiondrop.capture_prefill(model, input_ids, pixel_values)
    out = captured(input_ids, pixel_values)           # logits of the last position, cache
    tokens = captured.generate(input_ids, pixel_values, max_new_tokens=32)

Outputs live in the graph's memory and are overwritten by the next call; clone what
you keep. Supported: LLaVA-1.5 (``LlavaForConditionalGeneration``), rows without padding.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .core.layout import frozen_plans
from .models.decoder import cache_keyword, returned_cache
from .models.graphs import PlaceholderMask

_HANDLE_ATTR = "_visiondrop_handle"  # api.py's attribute: the handle active on a model
SUPPORTED = ("LlavaForConditionalGeneration",)


class CapturedPrefill:
    """The prefill of ``model`` (with its active visiondrop handle, if any) for the
    layout of ``input_ids`` / ``pixel_values``, captured as a CUDA graph.

    Args:
        model: a supported transformers model on a CUDA device (or the CPU with
            ``graph=False``).
        input_ids: ``(B, L)`` an example prompt; CPU tensors keep the layout check free.
        pixel_values: ``(B, 3, H, W)`` matching pixels.
        warmup: eager runs before capture (the first plans the layout; the rest let
            cuBLAS and the allocator settle, as ``torch.cuda.graph`` asks).
        graph: capture a CUDA graph (default: when the model is on a CUDA device). With
            False every call runs eagerly on the frozen plans: the same host-side
            shortcuts, checked on the CPU by the tests.

    Raises:
        ValueError: an unsupported model, padded rows, or a method whose shapes depend
            on the data, before anything runs.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor, *,
                 warmup: int = 2, graph: bool | None = None) -> None:
        name = type(model).__name__
        if name not in SUPPORTED:
            raise ValueError(f"model: capture_prefill supports {SUPPORTED}, not {name}")
        if input_ids.ndim != 2 or pixel_values.ndim != 4 or pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"input_ids (B, L) and pixel_values (B, 3, H, W) with one image per row expected, got "
                             f"{tuple(input_ids.shape)} and {tuple(pixel_values.shape)}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first run plans the layout), got {warmup}")
        self.model = model
        self.device = next(model.parameters()).device
        self.graph = self.device.type == "cuda" if graph is None else graph
        if self.graph and self.device.type != "cuda":
            raise ValueError(f"graph=True needs the model on a CUDA device, not {self.device}")
        self.handle = getattr(model, _HANDLE_ATTR, None)
        if self.handle is not None and not self.handle.active:
            self.handle = None
        if self.handle is not None and not getattr(self.handle.method, "fixed_shapes", True):
            raise ValueError(f"method {self.handle.method.name!r}: its stages' shapes depend on the data, so its "
                             "prefill has no fixed shapes to capture")
        self.image_token_id = model.config.image_token_id
        self.layout = (input_ids == self.image_token_id).cpu()
        if not self.layout.any(1).all():
            raise ValueError("input_ids: every row needs its image placeholders (one image per row)")
        self.pixel_shape = tuple(pixel_values.shape)
        self.plans: dict = {}  # frozen host-side plans and device constants (kept alive for the graph)

        self.static_ids = torch.empty(input_ids.shape, dtype=torch.long, device=self.device)
        self.static_pixels = torch.empty(pixel_values.shape, dtype=model.dtype, device=self.device)
        self._load(input_ids, pixel_values)
        with PlaceholderMask(model.model), torch.no_grad():
            if self.graph:
                self._capture(warmup)
            else:
                for _ in range(warmup):
                    self._run()
        self._snapshot()

    # ------------------------------------------------------------------ capture
    def _run(self):
        with frozen_plans(self.plans):
            return self.model(input_ids=self.static_ids, pixel_values=self.static_pixels,
                              use_cache=True, logits_to_keep=1)

    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.cuda_graph):
            self.output = self._run()

    def _snapshot(self) -> None:
        """What a replay must restore: decode steps replace the cache's tensors and
        advance the pruner's session, but a replay reruns no Python."""
        if not self.graph:
            return
        self._cache_state = [dict(vars(layer)) for layer in returned_cache(self.output).layers]
        pruner = getattr(self.handle.adapter, "pruner", None) if self.handle else None
        self._session = dataclasses.replace(pruner.session) if pruner and pruner.session else None
        # the capture's report: its tensors are graph memory, so each replay refills it
        self._report = self.handle.adapter.report if self.handle else None

    # --------------------------------------------------------------------- calls
    def _check(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask) -> None:
        if tuple(pixel_values.shape) != self.pixel_shape:
            raise ValueError(f"pixel_values: captured for shape {self.pixel_shape}, got {tuple(pixel_values.shape)}")
        if input_ids.shape != self.layout.shape:
            raise ValueError(f"input_ids: captured for shape {tuple(self.layout.shape)}, got {tuple(input_ids.shape)}")
        if not torch.equal((input_ids == self.image_token_id).cpu(), self.layout):
            raise ValueError("input_ids: the image placeholders are not where they were at capture; "
                             "capture a CapturedPrefill per prompt layout")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask: a captured prefill takes rows without padding")
        current = getattr(self.model, _HANDLE_ATTR, None)
        if current is not None and not current.active:
            current = None
        if current is not self.handle:
            raise RuntimeError("visiondrop: the model's pruning handle changed since capture; capture again")

    def _load(self, input_ids, pixel_values) -> None:
        self.static_ids.copy_(input_ids, non_blocking=True)
        self.static_pixels.copy_(pixel_values, non_blocking=True)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask=None):
        """The prefill of these inputs: a transformers output with ``logits``
        ``(B, 1, V)`` (the last position) and the cache, ready for decode
        steps through ``model(...)`` (the handle's decode path), until the next call."""
        self._check(input_ids, pixel_values, attention_mask)
        out = self.replay(input_ids, pixel_values)
        if self.graph:
            for layer, state in zip(returned_cache(out).layers, self._cache_state):
                vars(layer).update(state)
            if self._session is not None:
                self.handle.adapter.pruner.session = dataclasses.replace(self._session)
            if self._report is not None:
                self.handle.adapter.report = self._report
        return out

    @torch.no_grad()
    def replay(self, input_ids: torch.Tensor, pixel_values: torch.Tensor):
        """The prefill's device work only: no layout check, and the cache and decode
        state are not reset for decoding (the benchmark's time to first token; callers
        that checked the layout themselves). Use the call for anything else."""
        self._load(input_ids, pixel_values)
        if not self.graph:
            with PlaceholderMask(self.model.model):
                return self._run()
        self.cuda_graph.replay()
        return self.output

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, max_new_tokens: int = 32
                 ) -> torch.Tensor:
        """Greedy decoding after the captured prefill: ``(B, max_new_tokens)`` new token ids
        (the decode steps run eagerly, through the handle's decode path)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        out = self(input_ids, pixel_values)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [token]
        batch, length = self.static_ids.shape
        mask = torch.ones(batch, length, dtype=torch.long, device=self.device)
        cache = returned_cache(out)
        for _ in range(max_new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            out = self.model(input_ids=token, attention_mask=mask, **{cache_keyword(self.model): cache}, use_cache=True,
                             logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(token)
        return torch.cat(tokens, dim=1)


def capture_prefill(model: nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor, **options
                    ) -> CapturedPrefill:
    """Capture ``model``'s prefill (pruned by its active handle, if any) for this prompt
    layout; see :class:`CapturedPrefill`."""
    return CapturedPrefill(model, input_ids, pixel_values, **options)
