"""Typed method options, read from each method's config dataclass.

Two entry points, one set of types:

- :func:`check_option`: a value given in Python (``apply(model, keep_cls=False)``) must
  already have its field's type; nothing is converted from text, so ``keep_cls="no"``
  is refused instead of being read as true.
- :func:`parse_option`: a value given as text (``--option keep_cls=false`` on a command
  line, lmms-eval's ``--model_args``) is converted to its field's type, then checked.

Config modules use ``from __future__ import annotations``, so a field's type is its
annotation string ("int | None", "tuple[int, ...] | None", ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ..schedule import Schedule

_INT = re.compile(r"[+-]?\d+")
_SCHEDULE_EXAMPLE = 'e.g. schedule={"encoder":[42,6],"llm":[[30,5],[22,4],[16,3]],"layers":[8,16,24]}'


def option_types(config_class: type) -> dict[str, str]:
    """Each option of a method's config and its annotation."""
    return {f.name: str(f.type) for f in dataclasses.fields(config_class)}


def _kind(annotation: str) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``: the type, and whether None is allowed."""
    parts = [part.strip() for part in annotation.split("|")]
    return " | ".join(p for p in parts if p != "None"), "None" in parts


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_option(name: str, value: Any, annotation: str) -> Any:
    """``value`` if it has the type ``annotation`` names (ints are taken for floats);
    else ValueError naming ``name``. Floats must be finite."""
    kind, optional = _kind(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: a value is required, got None")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    if kind == "int":
        if _is_int(value):
            return int(value)
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if kind == "float":
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if kind.startswith("tuple[int"):
        items = (value,) if _is_int(value) else value
        if not isinstance(items, (tuple, list)) or not items or not all(_is_int(v) for v in items):
            raise ValueError(f"{name} must be one or more ints, got {value!r}")
        return value if _is_int(value) else tuple(int(v) for v in items)
    if kind == "Schedule":
        if isinstance(value, Schedule):
            return value
        raise ValueError(f"{name} must be a visiondrop.Schedule, got {value!r} ({type(value).__name__})")
    raise TypeError(f"{name}: no check for options annotated {annotation!r}")  # a new config field's type


def strip_text(text: str) -> str:
    """A value as typed, without surrounding whitespace or one pair of quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def parse_option(name: str, value: Any, annotation: str) -> Any:
    """``value`` (text, or what a parser already made of text: an int, a float, a bool,
    a list) as the type ``annotation`` names, checked by :func:`check_option`."""
    kind, optional = _kind(annotation)
    if isinstance(value, str):
        value = _from_text(name, strip_text(value), kind, optional)
    elif kind == "bool" and _is_int(value) and value in (0, 1):
        value = bool(value)
    elif kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif kind.startswith("tuple[int") and isinstance(value, (list, tuple)):
        value = _int_tuple(name, ",".join(map(str, value)))
    elif kind == "Schedule" and isinstance(value, dict):
        value = parse_schedule(value)
    try:
        return check_option(name, value, annotation)
    except ValueError:
        expected = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(kind)
        if expected is None:
            raise
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None


def _from_text(name: str, text: str, kind: str, optional: bool) -> Any:
    if optional and text.lower() in ("none", "null"):
        return None
    if kind == "bool":
        if text.lower() not in ("true", "false", "yes", "no"):
            raise ValueError(f"{name}: expected true or false, got {text!r}")
        return text.lower() in ("true", "yes")
    if kind == "int":
        if not _INT.fullmatch(text):
            raise ValueError(f"{name}: expected an integer, got {text!r}")
        return int(text)
    if kind == "float":
        try:
            return float(Fraction(text))  # "0.125" or "1/8"
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name}: expected a number (e.g. 0.125 or 1/8), got {text!r}") from None
    if kind.startswith("tuple[int"):
        return _int_tuple(name, text)
    if kind == "Schedule":
        return parse_schedule(text)
    return text


def _int_tuple(name: str, text: str) -> tuple[int, ...]:
    """``[8,16,24]``, ``8;16;24``, ``8,16,24`` or ``8 16 24`` as ``(8, 16, 24)``."""
    if text[:1] in "[(" and text[-1:] in "])":
        text = text[1:-1]
    items = [item for item in re.split(r"[,;\s]+", text) if item]
    if not items or not all(_INT.fullmatch(item) for item in items):
        raise ValueError(f"{name}: expected integers, as {name}=[8,16,24] or {name}=8;16;24; got {text!r}")
    return tuple(int(item) for item in items)


def parse_schedule(value: Any) -> Schedule:
    """``schedule=`` as a :class:`Schedule`: one already, a dict, or JSON with keys
    ``encoder`` ([dominant, contextual] or null), ``llm`` (a list of those), ``layers``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(strip_text(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"schedule: not valid JSON ({exc.msg}); {_SCHEDULE_EXAMPLE}") from None
    if not isinstance(value, dict):
        raise ValueError(f"schedule: expected a JSON object, got {value!r}; {_SCHEDULE_EXAMPLE}")
    unknown = sorted(set(value) - {"encoder", "llm", "layers"})
    if unknown:
        raise ValueError(f"schedule: unknown key(s) {unknown}; the keys are encoder, llm, layers; {_SCHEDULE_EXAMPLE}")
    try:
        return Schedule(encoder=value.get("encoder"), llm=tuple(value.get("llm") or ()), layers=value.get("layers"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"schedule: {exc}; {_SCHEDULE_EXAMPLE}") from None


def parse_method_options(method: str, options: Mapping[str, Any], model_options: Mapping[str, tuple] = ()
                         ) -> dict[str, Any]:
    """Text options of ``method`` (``{"keep_cls": "false"}``) typed by its config;
    ``model_options`` (an adapter's, such as LLaVA-NeXT's ``newline``) pass as stripped
    text. An unknown name raises ValueError listing both kinds."""
    from . import get_method

    types = option_types(get_method(method).Config)
    typed = {}
    for name, value in options.items():
        if name in types:
            typed[name] = parse_option(name, value, types[name])
        elif name in model_options:
            typed[name] = strip_text(value) if isinstance(value, str) else value
        else:
            raise ValueError(f"{name}: unknown option for method {method!r}; its options: {sorted(types)}"
                             + (f"; model options: {sorted(model_options)}" if model_options else ""))
    return typed


def parse_method_spec(spec: str, model_options: Mapping[str, tuple] = ()) -> tuple[str, dict]:
    """``"name"`` or ``"name[key=value;key=value]"`` (the command lines' method syntax) ->
    ``(name, options)``, values typed by the method's config (``model_options`` as in
    :func:`parse_method_options`); a bad spec raises ValueError. An unknown name comes back
    as it is, for the caller to name with its own list."""
    from . import available_methods

    name, _, rest = spec.partition("[")
    name = name.strip()
    options: dict = {}
    if rest:
        if not rest.endswith("]"):
            raise ValueError(f"{spec!r}: options go in brackets, e.g. visiondrop[positions=keep]")
        for pair in filter(None, rest[:-1].split(";")):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"{spec!r}: option {pair!r} is not key=value")
            options[key.strip()] = value.strip()
    if name not in available_methods():
        return name, options
    try:
        return name, parse_method_options(name, options, model_options)
    except ValueError as error:
        raise ValueError(f"{spec!r}: {error}") from None
