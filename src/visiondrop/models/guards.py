"""What ``apply`` adds around every adapter's hooks, on the one model instance:

- ``generate()`` refuses, before any compute, the modes a pruned prompt cannot serve;
- calls from several threads run one at a time (the hooks hold one call's state);
- ``copy.deepcopy(model)`` gives a plain, unpruned copy (the hooks and wrappers are
  closures over this model; a copy carrying them would run this one).

All of it is removed with the handle, like the adapter's hooks.
"""

from __future__ import annotations

import copy
import functools
import threading
from contextlib import contextmanager

from transformers.cache_utils import DynamicCache

from .decoder import cache_argument

#: generate()'s cache implementations that keep one growing tensor per layer, as a pruned
#: prefill needs (its layers hold different lengths); static caches preallocate one length
DYNAMIC_CACHES = (None, "dynamic")


class InstanceAttribute:
    """An attribute set on one model object, removed like a hook handle."""

    def __init__(self, obj, name: str, value) -> None:
        self.obj, self.name = obj, name
        setattr(obj, name, value)

    def remove(self) -> None:
        if self.name in vars(self.obj):
            delattr(self.obj, self.name)


class CallLock:
    """One call at a time through a pruned model: an adapter keeps the state of the call
    in flight (the encoder stage's reduction, the decoder session), so a second thread
    waits for the first. Re-entrant (``generate()`` calls ``forward``); ``release`` without
    a matching ``acquire`` in this thread does nothing, so a forward hook that always runs
    can release what a pre-hook that did not run never took."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._held = threading.local()

    def acquire(self) -> None:
        self._lock.acquire()
        self._held.depth = getattr(self._held, "depth", 0) + 1

    def release(self) -> None:
        if getattr(self._held, "depth", 0):
            self._held.depth -= 1
            self._lock.release()

    def __enter__(self) -> CallLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_generation(model, kwargs: dict) -> None:
    """Refuse what a pruned prefill cannot serve, naming the argument: beam search and
    several sequences per prompt (transformers splits pre-encoded image features by
    placeholder count, which pruned features cannot match), assisted decoding (it crops
    the cache to one length for every layer) and static caches (one preallocated length
    for every layer), whose failures would come deep inside transformers."""
    config = kwargs.get("generation_config") or model.generation_config

    def given(name):
        return kwargs.get(name, getattr(config, name, None))

    for name in ("num_beams", "num_return_sequences"):
        value = given(name) or 1
        if value > 1:
            raise ValueError(f"{name}={value}: beam search and several sequences per prompt are not "
                             "supported with pruning yet; use greedy or sampling with one sequence")
    for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
        if given(name) is not None:
            raise ValueError(f"{name}: assisted decoding is not supported with pruning (it crops every layer's "
                             "cache to one length, and a pruned prompt's layers hold different lengths)")
    cache = given("cache_implementation")
    if cache not in DYNAMIC_CACHES:
        raise ValueError(f"cache_implementation={cache!r}: a pruned prompt's layers hold caches of different "
                         "lengths; only the default dynamic cache is supported (drop cache_implementation)")
    check_cache(cache_argument(kwargs))


def check_cache(cache) -> None:
    """A cache handed to a pruned prefill must be a :class:`DynamicCache` (see :data:`DYNAMIC_CACHES`)."""
    if cache is not None and not isinstance(cache, DynamicCache):
        raise ValueError(f"past_key_values: a {type(cache).__name__} cannot hold a pruned prompt (its layers hold "
                         "different lengths); pass a DynamicCache or none")


def guard_generate(model, lock: CallLock) -> InstanceAttribute:
    """``generate`` on this instance: :func:`check_generation`, then the class's own
    ``generate`` under ``lock``. ``functools.wraps`` keeps the signature callers inspect."""
    original = type(model).generate.__get__(model)

    @functools.wraps(original)
    def generate(*args, **kwargs):
        check_generation(model, kwargs)
        with lock:
            return original(*args, **kwargs)

    return InstanceAttribute(model, "generate", generate)


def serialize_calls(model, lock: CallLock) -> list:
    """Forward hooks on ``model`` that hold ``lock`` for the whole call (released even
    when the call raises)."""
    return [model.register_forward_pre_hook(lambda module, args: lock.acquire()),
            model.register_forward_hook(lambda module, args, output: lock.release(), always_call=True)]


def plain_deepcopy(model, handles: list, lock: CallLock) -> InstanceAttribute:
    """``copy.deepcopy(model)`` on this instance: a copy of the model as it is without
    ``handles`` (hooks and instance attributes), which stay on the original."""

    def deepcopy(memo):
        with lock, detached(handles):
            return copy.deepcopy(model, memo)

    return InstanceAttribute(model, "__deepcopy__", deepcopy)


@contextmanager
def detached(handles: list):
    """The model as if ``handles`` were removed; afterwards their hooks are back where
    they were in each hook dictionary, order included (a user's hooks may sit around
    ours). Hooks others added or removed meanwhile stay so (transformers registers
    some on first use)."""
    saved: dict[int, tuple[dict, dict, set]] = {}
    attributes = []
    for handle in handles:
        if isinstance(handle, InstanceAttribute):
            if handle.name in vars(handle.obj):
                attributes.append((handle, vars(handle.obj).pop(handle.name)))
            continue
        for ref in (handle.hooks_dict_ref, *handle.extra_dict_ref):
            hooks = ref()
            if hooks is not None:
                saved.setdefault(id(hooks), (hooks, dict(hooks), set()))[2].add(handle.id)
                hooks.pop(handle.id, None)
    try:
        yield
    finally:
        for hooks, before, ours in saved.values():
            now = dict(hooks)
            merged = {key: value if key in ours else now[key] for key, value in before.items()
                      if key in ours or key in now}
            merged.update((key, value) for key, value in now.items() if key not in merged)
            hooks.clear()
            hooks.update(merged)
        for handle, value in attributes:
            vars(handle.obj)[handle.name] = value
