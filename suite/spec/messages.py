"""Error lines about a study file: a validation error as `key.path: what is wrong (allowed: ...)`, values quoted short.

Every message `spec` raises is one line (`one_line` escapes what a file's names and values bring in).
"""

from __future__ import annotations

import reprlib

from pydantic import BaseModel, ValidationError

from .. import components
from .config import ByName


def one_line(text: str) -> str:
    """Line breaks and other control characters (from names, keys or values in the file) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 8, 4


def shown(value) -> str:
    """A value as an error message quotes it: repr, cut short."""
    return _REPR.repr(value)


def describe(err: ValidationError, model: type[BaseModel], data: dict, origin=None) -> str:
    """The first validation error as `key.path: what is wrong (allowed: ...)`."""
    e = err.errors()[0]
    loc = _clean_loc(e["loc"], data)
    where = origin(loc) if origin and loc else loc or "(top level)"
    if e["type"] == "extra_forbidden":
        parent, _, key = loc.rpartition(".")
        allowed = _allowed_keys(model, parent, data)
        return f"{where}: unknown key '{key}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        allowed = e.get("ctx", {}).get("expected_tags", "").replace("'", "")
        return f"{where}.name: unknown or missing name {e['ctx'].get('tag', '')!r} (allowed: {allowed})"
    got = e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    key, _, rest = msg.partition(": ")
    if e["type"] == "value_error" and isinstance(got, dict) and key in got and rest:  # a block's validator naming its key
        where, msg, got = f"{where}.{key}", rest, got[key]
    got_text = "" if isinstance(got, dict) or got is None and e["type"] == "missing" else \
        " (got nothing: the key is written without a value)" if got is None else f" (got {shown(got)})"
    return f"{where}: {msg}{got_text}"


def _clean_loc(loc: tuple, data: dict) -> str:
    """Drop the parts pydantic adds for unions (a tag like 'mlp', a type like 'int')."""
    parts, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(str(part))
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict) and part == node.get("name"):
            continue  # a discriminator's tag
        elif isinstance(node, dict):
            parts.append(str(part))  # a missing key
            node = None
    return ".".join(parts)


def _allowed_keys(model: type[BaseModel], parent: str, data: dict) -> list[str]:
    cls, node = model, data
    for part in [p for p in parent.split(".") if p]:
        if cls is None:
            return []
        info = cls.model_fields.get(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        cls = _model_class(info.annotation, node, info.metadata) if info else None
    return list(cls.model_fields) if cls else []


def _model_class(annotation, node, metadata=()):
    """The BaseModel class an annotation stands for (a component's by its name, a union member by its name tag)."""
    for meta in metadata:
        by_name = getattr(meta, "func", None)
        if isinstance(by_name, ByName):
            try:
                return components.get(by_name.kind, node.get("name", by_name.default) if isinstance(node, dict) else None).params
            except ValueError:
                return None
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    if hasattr(annotation, "__metadata__"):
        candidates = annotation.__origin__.__args__ if hasattr(annotation.__origin__, "__args__") else (annotation.__origin__,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    for cls in models:
        tag = cls.model_fields.get("name")
        if tag is not None and isinstance(node, dict) and node.get("name") in getattr(tag.annotation, "__args__", ()):
            return cls
    return models[0] if len(models) == 1 else None
