"""``visiondrop.apply``: one line on an unchanged transformers model."""

from __future__ import annotations

from torch import nn

from .methods import get_method
from .models import adapter_for
from .models.graphs import GraphedForward, check_graph_options
from .models.guards import CallLock, InstanceAttribute, guard_generate, plain_deepcopy, serialize_calls
from .report import PruningReport
from .schedule import Schedule

_HANDLE_ATTR = "_visiondrop_handle"


class PruningHandle:
    """Hooks of one method on one model. ``remove()`` restores the model exactly;
    also a context manager. ``report`` describes the last prefill."""

    def __init__(self, model: nn.Module, adapter, method, schedule: Schedule) -> None:
        self.model = model
        self.adapter = adapter
        self.method = method
        self.schedule = schedule
        self.graphs: GraphedForward | None = None  # with cuda_graphs: the captured layouts
        self._hooks: list = []

    @property
    def report(self) -> PruningReport | None:
        return self.adapter.report

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove every hook; calling it again does nothing."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.adapter.reset()
        if self.graphs is not None:
            self.graphs.graphs.clear()  # frees the graphs' memory

    def __enter__(self) -> PruningHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        text = (f"PruningHandle({self.method.name}, {type(self.model).__name__}, {state})\n"
                f"  config:   {self.method.config}\n  schedule: {self.schedule}")
        return text + (f"\n  graphs:   {self.graphs}" if self.graphs is not None else "")


def plan(model: nn.Module, method: str = "visiondrop", *, budget: int | None = None,
         schedule: Schedule | None = None, **options) -> Schedule:
    """The schedule :func:`apply` would run on ``model`` (validated the same way), without
    hooking anything: for FLOPs counts and benchmarks. Works on a meta-device model."""
    return _planned(model, method, budget, schedule, options)[3]


def _planned(model, method, budget, schedule, options):
    """(adapter, method as configured, method to run, schedule), all validated."""
    adapter = adapter_for(model)
    adapter.configure(**{name: options.pop(name) for name in adapter.options if name in options})
    pruning = get_method(method).from_options(budget=budget, schedule=schedule, **options)
    return (adapter, pruning, *adapter.plan(pruning))


def apply(model: nn.Module, method: str = "visiondrop", *, budget: int | None = None,
          schedule: Schedule | None = None, cuda_graphs: bool | str = False, max_graphs: int = 8,
          **options) -> PruningHandle:
    """Prune ``model``'s visual tokens with ``method`` until the handle is removed.

    Args:
        model: a supported transformers model instance (see
            :func:`visiondrop.supported_models`); it is not modified, only hooked.
        method: a registered method name (:func:`visiondrop.available_methods`).
        budget: visual tokens per image averaged over the LLM's decoder layers.
        schedule: an explicit :class:`~visiondrop.Schedule` instead of ``budget``.
        cuda_graphs: replay each prompt layout's prefill from a CUDA graph, through the
            model's own ``forward`` and ``generate()`` (:mod:`visiondrop.models.graphs`):
            a layout's first prefill runs eagerly, the next one is captured, later ones
            replay. ``"frozen"``: the same path without a graph (any device; a check).
            LLaVA-1.5, LLaVA-NeXT, Video-LLaVA and LLaVA-OneVision (with an encoder
            stage), methods with fixed shapes.
        max_graphs: layouts that keep their graph (least recently used first out).
        **options: method options (e.g. ``positions="keep"``), validated here.

    Raises:
        ValueError: bad options, budget or schedule for this model, or an
            unsupported model, before any compute.
        RuntimeError: the model already has an active handle.

    While the handle is active, calls from several threads run one at a time, and
    ``copy.deepcopy(model)`` gives a plain, unpruned copy (apply again to prune it).
    """
    existing = getattr(model, _HANDLE_ATTR, None)
    if existing is not None and existing.active:
        raise RuntimeError("model already has an active visiondrop handle; call handle.remove() first")
    adapter, pruning, runtime, resolved = _planned(model, method, budget, schedule, options)
    check_graph_options(model, pruning, cuda_graphs, max_graphs, resolved)
    handle = PruningHandle(model, adapter, pruning, resolved)
    lock = CallLock()
    hooks = adapter.install(runtime, resolved, getattr(pruning.config, "positions", "reindex"))
    if cuda_graphs:
        handle.graphs = GraphedForward(model, adapter, cuda_graphs, max_graphs)
        hooks.append(handle.graphs.install())
    hooks += [guard_generate(model, lock), *serialize_calls(model, lock),
              InstanceAttribute(model, _HANDLE_ATTR, handle)]
    hooks.append(plain_deepcopy(model, hooks, lock))  # the copy is made without every entry of ``hooks``
    handle._hooks = hooks
    return handle
