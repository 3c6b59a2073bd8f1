"""lmms-eval plugin: lmms-eval's LLaVA model with visual-token pruning.

    pip install visiondrop[lmms]
    accelerate launch -m lmms_eval --model visiondrop_llava_hf \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=visiondrop,budget=64 --tasks pope

``visiondrop_llava_hf`` is lmms-eval's ``llava_hf`` model (its chat class by default, its
simple class with ``--force_simple``) with one addition: once the base class has loaded
the model, ``visiondrop.apply(model, method, budget=..., **options)`` hooks it. Prompts,
generation and scoring are lmms-eval's, unchanged. lmms-eval (>= 0.6) finds the model
through the entry-point group ``lmms_eval.models`` (:func:`manifests`, declared in
visiondrop's pyproject.toml); :func:`register` adds it to a running process by hand.

model_args on top of the base class's own (``pretrained``, ``device``, ``dtype``, ...):

- ``method``: a registered method (:func:`visiondrop.available_methods`), default
  ``visiondrop``; ``none`` evaluates the unpruned model through the same class.
- ``budget``: visual tokens per image, averaged over the LLM's decoder layers.
- ``schedule``: instead of ``budget``, an explicit schedule as JSON, e.g.
  ``schedule={"encoder":[42,6],"llm":[[30,5],[22,4],[16,3]],"layers":[8,16,24]}``.
- any option of the method or of the model's adapter by name (``positions=keep``,
  ``contextual_ratio=0.125``, ``layers=[2,8,16,24]`` or ``layers=2;8;16;24``,
  ``newline=end``), converted from lmms-eval's strings to the option's type.

Everything is validated before the weights load (unknown names, types, and the budget
against the model's architecture, planned on a weightless meta-device copy). The import
of lmms-eval happens here only: the rest of visiondrop never needs it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from ..api import apply, plan
from ..methods import available_methods, get_method
from ..methods.options import option_types, parse_option, parse_schedule, strip_text
from ..models import model_options
from ..schedule import Schedule

INSTALL_HINT = "pip install visiondrop[lmms]"

try:
    import lmms_eval  # noqa: F401  (an empty package __init__: imports nothing else)
except ImportError as exc:
    raise ImportError(f"visiondrop.integrations.lmms_eval needs lmms-eval (>= 0.6); install it with: "
                      f"{INSTALL_HINT}") from exc

#: the name to give ``lmms_eval --model``
MODEL_ID = "visiondrop_llava_hf"
#: ``method=none``: no pruning (a baseline through the same class)
NO_PRUNING = "none"

# class name here -> (module, class) of the lmms-eval base class; built on first access
# (module ``__getattr__``), so lmms-eval's start-up, which imports this module to read the
# entry point, never imports the LLaVA classes (nor transformers' models, nor decord).
_BASES = {
    "VisionDropLlavaHf": ("lmms_eval.models.chat.llava_hf", "LlavaHf"),
    "VisionDropLlavaHfSimple": ("lmms_eval.models.simple.llava_hf", "LlavaHf"),
}
_BUILT: dict[str, type] = {}


def manifests() -> list:
    """The ``lmms_eval.models`` entry point: lmms-eval's ``ModelManifest`` of each model
    this plugin registers (``visiondrop_llava_hf``: chat class, and simple class for
    ``--force_simple``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, chat_class_path=f"{__name__}.VisionDropLlavaHf",
                          simple_class_path=f"{__name__}.VisionDropLlavaHfSimple")]


def register() -> list[str]:
    """Register the models in this process's lmms-eval, as the entry point does when
    ``lmms_eval.models`` is imported: for a visiondrop on ``PYTHONPATH`` (no installed
    entry points), before ``lmms_eval.evaluator.simple_evaluate(model="visiondrop_llava_hf", ...)``.
    Returns the registered names."""
    import lmms_eval.models as models

    registry = getattr(models, "MODEL_REGISTRY_V2", None)
    if registry is None:
        raise ImportError(f"this lmms-eval has no model registry v2 (it is older than 0.6): {INSTALL_HINT}")
    names = []
    for manifest in manifests():
        registry.register_manifest(manifest, overwrite=True)
        models.AVAILABLE_MODELS[manifest.model_id] = manifest.chat_class_path.rsplit(".", 1)[-1]
        names.append(manifest.model_id)
    return names


def __getattr__(name: str):
    if name in _BASES:
        if name not in _BUILT:
            module, base = _BASES[name]
            base_class = getattr(importlib.import_module(module), base)
            _BUILT[name] = type(base_class)(name, (PrunedModelMixin, base_class), {
                "__module__": __name__, "__qualname__": name,
                "__doc__": f"lmms-eval's {module}.{base} with visiondrop pruning (see {__name__}).",
            })
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ model_args

@dataclass(frozen=True)
class PruningArgs:
    """The pruning part of ``--model_args``, typed and validated (:meth:`parse`)."""

    method: str = "visiondrop"
    budget: int | None = None
    schedule: Schedule | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def prunes(self) -> bool:
        return self.method != NO_PRUNING

    @classmethod
    def parse(cls, method: Any = "visiondrop", *, budget: Any = None, schedule: Any = None,
              base_args: tuple[str, ...] = (), **options: Any) -> PruningArgs:
        """Type and check lmms-eval's values (strings, or what its parser made of them:
        ints, floats, bools). ``base_args`` (the base class's arguments) only enrich the
        message for an unknown name. Raises ValueError naming the argument."""
        method = strip_text(method) if isinstance(method, str) else method
        methods = available_methods()
        if not isinstance(method, str) or (method != NO_PRUNING and method not in methods):
            raise ValueError(f"method: unknown pruning method {method!r}; available: "
                             f"{', '.join([NO_PRUNING, *methods])}")
        if method == NO_PRUNING:
            given = [name for name, value in (("budget", budget), ("schedule", schedule)) if value is not None]
            given += sorted(options)
            if given:
                raise ValueError(f"{given[0]}: method=none prunes nothing and takes no pruning arguments; "
                                 "drop it or name a method")
            return cls(method=NO_PRUNING)

        types = option_types(get_method(method).Config)
        adapter_options = model_options()
        typed = {}
        for name, value in options.items():
            if name in types and name not in ("budget", "schedule"):
                typed[name] = parse_option(name, value, types[name])
            elif name in adapter_options:
                typed[name] = strip_text(value) if isinstance(value, str) else value
            else:
                raise ValueError(_unknown_argument(name, method, types, adapter_options, base_args))

        budget = None if budget is None else parse_option("budget", budget, "int | None")
        schedule = None if schedule is None else parse_schedule(schedule)
        if budget is not None and budget < 1:
            raise ValueError(f"budget: must be a positive number of visual tokens per image, got {budget}")
        if budget is None and schedule is None:
            raise ValueError(f"budget: method={method} needs budget=<visual tokens per image> (e.g. budget=64) "
                             "or schedule=<JSON> in --model_args")
        if budget is not None and schedule is not None:
            raise ValueError("budget, schedule: give one of them, not both")
        method_options = {name: value for name, value in typed.items() if name in types}
        get_method(method).from_options(budget=budget, schedule=schedule, **method_options)  # names, once more
        return cls(method=method, budget=budget, schedule=schedule, options=typed)

    def plan(self, model) -> Schedule | None:
        """The schedule :meth:`apply` would run on ``model`` (a meta-device model will do)."""
        if not self.prunes:
            return None
        return plan(model, self.method, budget=self.budget, schedule=self.schedule, **self.options)

    def apply(self, model):
        """``visiondrop.apply`` with these arguments; None for ``method=none``."""
        if not self.prunes:
            return None
        return apply(model, self.method, budget=self.budget, schedule=self.schedule, **self.options)


def _unknown_argument(name, method, types, adapter_options, base_args) -> str:
    method_options = sorted(set(types) - {"budget", "schedule"})
    message = (f"{name}: unknown model_args argument for {MODEL_ID} with method={method}; "
               f"pruning arguments: method, budget, schedule; options of {method}: {method_options}; "
               f"model options: {sorted(adapter_options)}")
    if base_args:
        message += f"; arguments of lmms-eval's model class: {sorted(base_args)}"
    if name == "layers" and "layers" not in types:
        message += f" ({method} takes its stage layers from schedule=..., key \"layers\")"
    return message


# ------------------------------------------------------------------ the model class

class GenerateFailed(BaseException):
    """``generate`` raised inside lmms-eval's ``generate_until``. A BaseException, so that
    the base class's ``except Exception`` (which turns errors into empty answers) lets it
    through; the original exception is its ``__cause__``."""


class PrunedModelMixin:
    """Put before an lmms-eval model class: takes the pruning arguments out of the
    model_args, validates them, lets the base class load the model, then hooks it.
    ``visiondrop_handle`` is the :class:`~visiondrop.PruningHandle` (None for
    ``method=none``); its ``report`` describes the last prefill."""

    def __init__(self, method: str = "visiondrop", budget: Any = None, schedule: Any = None, **kwargs) -> None:
        base_init = _base_class(type(self)).__init__
        parameters = inspect.signature(base_init).parameters
        names = tuple(name for name, p in parameters.items()
                      if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        options = {name: kwargs.pop(name) for name in list(kwargs) if name not in names}
        self.visiondrop_args = PruningArgs.parse(method, budget=budget, schedule=schedule, base_args=names, **options)

        def given(name):
            return kwargs.get(name, parameters[name].default if name in parameters else None)

        _preflight(self.visiondrop_args, given("pretrained"), given("revision"), given("trust_remote_code"))
        if "device_map" in parameters and given("device_map") in ("", None) and _num_processes() == 1:
            # lmms-eval's LlavaHf passes device_map="" to from_pretrained on one process,
            # which transformers 5 refuses; the device is what it means.
            kwargs["device_map"] = given("device")
        super().__init__(**kwargs)
        self.visiondrop_handle = self.visiondrop_args.apply(self.model)
        if self.visiondrop_handle is not None:
            from loguru import logger

            logger.info(f"visiondrop: {self.visiondrop_handle!r}")

    def generate_until(self, requests):
        """The base class's, except that an exception inside ``generate`` stops the run
        (:class:`GenerateFailed`) instead of being scored as an empty answer, as
        lmms-eval's LlavaHf does (it logs and swallows it): a failing pruned forward
        must not pass for a wrong answer."""
        model = self.model
        generate = model.generate
        own = vars(model).get("generate")  # visiondrop's guard, an instance attribute while pruning

        def checked(*args, **kwargs):
            try:
                return generate(*args, **kwargs)
            except Exception as exc:
                base = _base_class(type(self)).__name__
                raise GenerateFailed(f"{MODEL_ID}: generate failed ({exc!r}); lmms-eval's {base} would have "
                                     "scored it as an empty answer") from exc

        model.generate = checked
        try:
            return super().generate_until(requests)
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own

    def loglikelihood(self, requests):
        if self.visiondrop_handle is not None and self.visiondrop_handle.active:
            raise NotImplementedError(
                f"{MODEL_ID}: loglikelihood tasks (output_type: loglikelihood) are not supported with pruning: a "
                "pruned forward returns fewer logits than input tokens and refuses labels; use generate_until "
                "tasks, or method=none")
        return super().loglikelihood(requests)


def _base_class(cls: type) -> type:
    mro = cls.__mro__
    return mro[mro.index(PrunedModelMixin) + 1]


def _num_processes() -> int:
    from accelerate import PartialState

    return PartialState().num_processes


def _preflight(args: PruningArgs, pretrained, revision=None, trust_remote_code=False) -> None:
    """Plan ``args`` on a weightless (meta-device) model of ``pretrained``'s config, so that
    a budget or option the architecture cannot take fails in seconds, not after the
    weights load. Where the config or the meta model cannot be had, the check is left to
    ``apply`` after loading (and loading problems to the base class)."""
    if not args.prunes or not pretrained:
        return
    try:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(pretrained, revision=revision or "main",
                                            trust_remote_code=bool(trust_remote_code))
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, trust_remote_code=bool(trust_remote_code))
    except Exception:
        return
    args.plan(model)


__all__ = ["GenerateFailed", "INSTALL_HINT", "MODEL_ID", "NO_PRUNING", "PrunedModelMixin", "PruningArgs", "manifests",
           "register"]
