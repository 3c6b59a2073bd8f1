"""CUDA graphs on the user's own call: ``visiondrop.apply(model, ..., cuda_graphs=True)``.

At batch 1 a 7B prefill is bound by the host: each pruning stage adds a few hundred
kernel launches, and the model's own layers add thousands. A CUDA graph replays every
kernel of one prefill (vision tower, encoder stage, LLM stages, LM) in one launch.

With the option, this model instance's ``forward`` is wrapped (:class:`GraphedForward`).
A prefill with images (an empty or no cache, no gradient, rows without padding) has a
*layout*: the shapes and dtypes of its tensors, where the image placeholders sit, the
image sizes (LLaVA-NeXT), and its other arguments. The first prefill of a layout runs
eagerly; when the layout comes again, its prefill is captured (:class:`PrefillGraph`),
and from then on replayed with the new tokens and pixels. A bounded number of layouts
keep their graph (least recently used first out). Decode steps, prompts without images,
padded batches and calls with gradients run eagerly, so ``generate()`` works unchanged,
greedy or sampling.

Pruning's host-side work depends on the layout only, so it is made once, before
capture, under :func:`visiondrop.core.layout.frozen_plans`. After a replay the caller's
cache is filled with the graph's prefill cache, and the pruner's session and report
are restored, so decode steps continue as after an eager prefill.

Graph outputs live in the graph's memory: the next replay of the same layout
overwrites a prefill cache that no decode step has extended yet, and the report.
``generate()`` copies what it keeps (logits, tokens), so it is not affected.

Mode ``"frozen"`` takes the same path without a graph: the frozen plans, the cache
transplant and the state restore run eagerly on any device (the CPU tests).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import inspect
import warnings
import weakref

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from ..core.layout import frozen_plans
from .decoder import cache_argument, returned_cache_name
from .guards import InstanceAttribute

#: model classes whose prefill can be captured (their adapters plan on the host only)
GRAPH_MODELS = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration",
                "VideoLlavaForConditionalGeneration", "LlavaOnevisionForConditionalGeneration")
_CACHE_NAMES = ("past_key_values", "cache")
#: the media inputs a prefill with images or videos carries (Video-LLaVA before 5.23: ``pixel_values_images``)
_PIXELS = ("pixel_values", "pixel_values_images", "pixel_values_videos")
#: small tensors the model reads on the host (sizes, counts): part of the layout, kept on the CPU
_HOST_VALUES = ("image_sizes", "batch_num_images")
#: arguments that make a call run eagerly when set (they change what the call returns)
_EAGER_WHEN_SET = ("labels", "inputs_embeds", "mm_encoder_outputs", "output_attentions", "output_hidden_states")


def check_graph_options(model: nn.Module, method, cuda_graphs, max_graphs, schedule=None) -> None:
    """Validate ``apply``'s ``cuda_graphs`` and ``max_graphs`` for this model, method and
    schedule, naming the parameter, before anything is hooked."""
    if not (cuda_graphs is True or cuda_graphs is False or cuda_graphs == "frozen"):
        raise ValueError(f"cuda_graphs must be True, False or 'frozen', got {cuda_graphs!r}")
    if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
        raise ValueError(f"max_graphs must be an int >= 1, got {max_graphs!r}")
    if cuda_graphs is False:
        return
    name = type(model).__name__
    if name not in GRAPH_MODELS:
        raise ValueError(f"cuda_graphs: supported on {', '.join(GRAPH_MODELS)}, not {name} (its prefill runs "
                         "eagerly; drop cuda_graphs)")
    if not getattr(method, "fixed_shapes", True):
        raise ValueError(f"cuda_graphs: method {method.name!r} has stages whose shapes depend on the prompt's "
                         "text, so its prefill cannot be captured; drop cuda_graphs")
    if name == "LlavaOnevisionForConditionalGeneration" and schedule is not None and schedule.encoder is None:
        # measured on an H100 (docs/benchmarks/README.md): the capture fails there
        raise ValueError(f"cuda_graphs: on LLaVA-OneVision only methods with an encoder stage can be captured; "
                         f"without one ({method.name!r}) transformers packs the crops itself (downsizing large "
                         "grids by interpolation) and copies their lengths from host memory; drop cuda_graphs")
    if "forward" in vars(model) or getattr(model, "hf_device_map", None):
        raise ValueError("cuda_graphs: this model's forward is already wrapped (accelerate's device_map or "
                         "offloading); load it on one device to capture its prefill")
    if cuda_graphs is True:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs the model on a CUDA device, not {device} "
                             "(cuda_graphs='frozen' runs the same path without a graph)")


class PlaceholderMask:
    """``get_placeholder_mask`` of one LLaVA-family model without transformers' count
    check, which reads a device tensor on the host (not allowed while a graph is
    captured): the layout was checked on the host instead. Models with videos return
    the (image, video) pair, as transformers' does. Set on the instance only, while a
    frozen prefill runs."""

    def __init__(self, base: nn.Module) -> None:
        self.base = base
        config = base.config
        self.image_token_id = config.image_token_id
        self.video_token_id = getattr(config, "video_token_id", None)
        self.pair = "video_features" in inspect.signature(type(base).get_placeholder_mask).parameters

    def __call__(self, input_ids, inputs_embeds=None, image_features=None, video_features=None, **_):
        image = (input_ids == self.image_token_id).unsqueeze(-1).to(inputs_embeds.device)
        if not self.pair:
            return image
        return image, (input_ids == self.video_token_id).unsqueeze(-1).to(inputs_embeds.device)

    def __enter__(self):
        self.base.get_placeholder_mask = self
        return self

    def __exit__(self, *exc):
        if vars(self.base).get("get_placeholder_mask") is self:
            del self.base.get_placeholder_mask


def structural_copy(value):
    """A copy of a session's containers (dataclasses, dicts, lists, tuples) that shares
    every leaf (tensors, callables, weak references): decode steps reassign the
    containers' entries, so a replay restores them from this copy."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clone = copy.copy(value)
        for field in dataclasses.fields(value):
            object.__setattr__(clone, field.name, structural_copy(getattr(value, field.name)))
        return clone
    if isinstance(value, dict):
        return {key: structural_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(structural_copy(item) for item in value)
    return value


def _output_cache_name(output) -> str | None:
    name = returned_cache_name(output)
    return name if getattr(output, name, None) is not None else None


class PrefillGraph:
    """The prefill of one layout (see the module docstring): its static inputs, its
    graph (or, without one, the frozen plans run eagerly), and what a replay restores.

    Args:
        forward: the model class's own ``forward``, bound to the instance (the hooks on
            its submodules run; the wrapper does not).
        adapter: the handle's adapter (its pruner's session and report are restored).
        kwargs: the first call's arguments, already checked by :class:`GraphedForward`.
        graph: capture a CUDA graph; False runs the same frozen path eagerly.
        warmup: eager runs before capture (the first one plans the layout).
    """

    def __init__(self, forward, adapter, kwargs: dict, graph: bool, warmup: int = 2) -> None:
        self.forward, self.adapter, self.graph = forward, adapter, graph
        self.plans: dict = {}  # frozen host-side plans and device constants (kept alive for the graph)
        self.static = {name: _static_copy(name, value) for name, value in kwargs.items()}
        self.static["attention_mask"] = None  # rows are checked to be dense; None skips transformers' check
        for name in _CACHE_NAMES:
            self.static.pop(name, None)
        self._mask = PlaceholderMask(adapter.model.model)
        if graph:
            self._capture(warmup)
            self._snapshot(self.output)

    def _run(self):
        with frozen_plans(self.plans), self._mask:
            return self.forward(**self.static)

    def _capture(self, warmup: int) -> None:
        device = next(self.adapter.model.parameters()).device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream(device).wait_stream(side)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.cuda_graph):
            self.output = self._run()

    def _snapshot(self, output) -> None:
        """The state a replay restores: decode steps replace the cache layers' tensors
        and advance the pruner's session, but a replay reruns no Python."""
        name = _output_cache_name(output)
        self._cache = getattr(output, name) if name else None
        self._layers = [copy.copy(layer) for layer in self._cache.layers] if self._cache is not None else None
        pruner = getattr(self.adapter, "pruner", None)
        self._session = structural_copy(pruner.session) if pruner is not None and pruner.session else None
        self._report = self.adapter.report

    def __call__(self, kwargs: dict):
        for name, buffer in self.static.items():
            value = kwargs.get(name)
            if isinstance(buffer, torch.Tensor) and isinstance(value, torch.Tensor) and buffer is not value \
                    and name not in _HOST_VALUES:  # part of the layout: equal, kept on the host
                buffer.copy_(value)
        if self.graph:
            self.cuda_graph.replay()
            output = self.output
        else:
            output = self._run()
            self._snapshot(output)
        return self._restored(output, cache_argument(kwargs))

    def _restored(self, output, given):
        """``output`` for the caller: the cache it handed in (or a new one) filled with
        the prefill's layers, the pruner's session pointing at it, the report back."""
        result = type(output)(**{key: value for key, value in output.items()})
        name = _output_cache_name(output)
        if name is None:
            return result
        cache = given if isinstance(given, DynamicCache) else copy.copy(self._cache)
        cache.layers = [copy.copy(layer) for layer in self._layers]
        setattr(result, name, cache)
        result[name] = cache
        pruner = getattr(self.adapter, "pruner", None)
        if pruner is not None:
            pruner.session = structural_copy(self._session)
            if pruner.session is not None:
                pruner.session.cache = weakref.ref(cache)
                pruner._pruned_caches.add(cache)
        self.adapter.report = self._report
        return result


def _is_set(value) -> bool:
    """Whether an argument was given (a tensor, True, a non-empty dict), without taking a
    tensor's truth value."""
    return value is not None and value is not False and not (isinstance(value, dict) and not value)


def _static_copy(name: str, value):
    if not isinstance(value, torch.Tensor):
        return value
    if name in _HOST_VALUES:  # read on the host by the adapters: constant within a layout
        return value.cpu()
    return value.clone()


class GraphedForward:
    """``forward`` of one model instance with pruned prefills replayed from CUDA graphs
    (see the module docstring). Installed by :func:`visiondrop.apply` after the adapter's
    hooks and removed with them."""

    def __init__(self, model: nn.Module, adapter, mode, max_graphs: int = 8, warmup: int = 2) -> None:
        self.model, self.adapter, self.mode, self.max_graphs, self.warmup = model, adapter, mode, max_graphs, warmup
        self.original = type(model).forward.__get__(model)
        self._params = list(inspect.signature(self.original).parameters)
        config = model.config
        self.media_tokens = [t for t in (config.image_token_id, getattr(config, "video_token_id", None))
                             if t is not None]
        self.graphs: collections.OrderedDict = collections.OrderedDict()  # layout -> PrefillGraph | None
        self.seen: collections.OrderedDict = collections.OrderedDict()  # layouts run once, eagerly
        self.captures = self.replays = 0

    def install(self) -> InstanceAttribute:
        forward = self.__call__
        # transformers >= 5.23 encodes images before the prefill when forward takes
        # ``mm_encoder_outputs``; the wrapper does not, so the prefill gets the pixels
        # and the graph holds the vision tower too
        signature = inspect.signature(self.original)
        params = [p for name, p in signature.parameters.items() if name != "mm_encoder_outputs"]

        def wrapped(*args, **kwargs):
            return forward(*args, **kwargs)

        wrapped.__signature__ = signature.replace(parameters=params)
        wrapped.__doc__ = self.original.__doc__
        wrapped.__name__ = "forward"
        return InstanceAttribute(self.model, "forward", wrapped)

    def layout(self, kwargs: dict):
        """The call's layout key, or None: this call runs eagerly."""
        if torch.is_grad_enabled() or any(_is_set(kwargs.get(name)) for name in _EAGER_WHEN_SET):
            return None
        ids = kwargs.get("input_ids")
        has_media = any(isinstance(kwargs.get(name), torch.Tensor) for name in _PIXELS)
        if not isinstance(ids, torch.Tensor) or not has_media or kwargs.get("use_cache") is False:
            return None
        cache = cache_argument(kwargs)
        if cache is not None and (not isinstance(cache, DynamicCache) or cache.get_seq_length() > 0):
            return None
        mask = kwargs.get("attention_mask")
        if mask is not None and (mask.shape != ids.shape or not bool(mask.all())):
            return None  # padded rows: their pruned layout depends on the padding
        tensors, others = [], []
        for name, value in sorted(kwargs.items()):
            if name in _CACHE_NAMES or name == "attention_mask" or value is None:
                continue
            if isinstance(value, torch.Tensor):
                entry = (name, tuple(value.shape), value.dtype, value.device)
                if name in _HOST_VALUES:
                    entry += (tuple(value.flatten().tolist()),)
                tensors.append(entry)
            else:
                try:
                    hash(value)
                except TypeError:
                    return None
                others.append((name, value))
        flags = torch.stack([ids == token for token in self.media_tokens]).cpu().numpy()
        return tuple(tensors), tuple(others), flags.tobytes()

    def __call__(self, *args, **kwargs):
        if args:
            kwargs.update(zip(self._params, args))
        key = self.layout(kwargs)
        if key is None:
            return self.original(**kwargs)
        if key in self.graphs:
            self.graphs.move_to_end(key)
            graph = self.graphs[key]
        elif key not in self.seen:  # first sight: eager (a one-off layout is never captured)
            self._remember(key)
            return self.original(**kwargs)
        else:
            graph = self._capture(key, kwargs)
        if graph is None:
            return self.original(**kwargs)
        self.replays += 1
        return graph(kwargs)

    def _capture(self, key, kwargs):
        del self.seen[key]
        try:
            graph = PrefillGraph(self.original, self.adapter, kwargs, graph=self.mode is True, warmup=self.warmup)
        except Exception as error:  # noqa: BLE001 (the call still runs, eagerly, and says why)
            warnings.warn(f"visiondrop: cuda_graphs could not capture this prompt layout ({error}); "
                          "it runs eagerly", RuntimeWarning, stacklevel=4)
            graph = None
        else:
            self.captures += 1
        self.graphs[key] = graph
        while len(self.graphs) > self.max_graphs:
            evicted, _ = self.graphs.popitem(last=False)
            self._remember(evicted)  # it came back once: its next call captures again
        return graph

    def _remember(self, key) -> None:
        self.seen[key] = None
        while len(self.seen) > 4 * self.max_graphs:
            self.seen.popitem(last=False)

    def __repr__(self) -> str:
        return (f"GraphedForward(mode={self.mode!r}, layouts={len(self.graphs)}/{self.max_graphs}, "
                f"captures={self.captures}, replays={self.replays})")
