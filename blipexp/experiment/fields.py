"""How spec fields work: typed dataclass fields with help text, `key=value` text parsed to a field's type,
type checks, and "parent + diff" subclasses whose plain assignments (`learning_rate = 1e-4`) become new field
defaults (a typo in a field name is an error, with the closest names suggested)."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import typing
from dataclasses import field, fields
from typing import Any, Literal


def arg(default: Any, help: str) -> Any:
    """A dataclass field with help text (shown by `blipexp show` and `--help`)."""
    return field(default=default, metadata={"help": help})


def arg_dict(help: str) -> Any:
    """A dict field, empty by default, with help text (each spec gets its own dict)."""
    return field(default_factory=dict, metadata={"help": help})


def redeclare_plain_overrides(cls: type) -> None:
    """Turn `learning_rate = 1e-4` in a subclass body into a field override, and reject typos."""
    inherited = {f.name: f for f in fields(cls)} if dataclasses.is_dataclass(cls) else {}
    resolved = field_types(cls) if inherited else {}  # type objects: a string would be evaluated in cls's module
    annotations = cls.__dict__.get("__annotations__", {})
    if "__annotations__" not in cls.__dict__:
        cls.__annotations__ = annotations
    for key, value in list(vars(cls).items()):
        if key.startswith("_") or key in annotations or key in ("name", "hypothesis"):
            continue
        if key in inherited:
            parent = inherited[key]
            annotations[key] = resolved[key]
            setattr(cls, key, _default(value, parent.metadata))
        elif not callable(value) and not isinstance(value, (property, classmethod, staticmethod)):
            close = difflib.get_close_matches(key, inherited, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "declare new fields with a type annotation"
            raise ValueError(f"{cls.__name__}.{key} is not a spec field: {hint}")


def _default(value: Any, metadata: Any) -> Any:
    """A field defaulting to `value`; a mutable one (a dict, a list) is copied for each instance, since dataclasses
    refuse a shared mutable default."""
    if type(value).__hash__ is None:
        return field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return field(default=value, metadata=metadata)


def first_paragraph(doc: str) -> str:
    import inspect

    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def matches(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)  # dict[str, Any]: a dict


def parse(key: str, raw: str, hint: Any) -> Any:
    try:
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            if raw not in choices:
                raise ValueError("not a valid choice")
            return raw
        if hint is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if typing.get_origin(hint) is dict:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object, e.g. {\"key\": 1}")
            return value
        return raw
    except ValueError as exc:
        raise ValueError(f"cannot set {key}={raw!r}: {exc} ({type_name(hint)})") from None


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """A ValueError naming the field, its value and the rule it breaks, e.g. "epochs=0 must be >= 1"."""
    if not ok:
        raise ValueError(f"{key}={value!r} {rule}")
