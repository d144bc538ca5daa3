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
    from .grid import value_at  # (grid imports this module)

    errors = err.errors()
    at = [_clean_loc(o["loc"], data, False) for o in errors]  # each error's key path
    e = errors[0]
    loc = _clean_loc(e["loc"], data, e["type"] == "missing")
    if e["msg"].startswith("Input should be ") and isinstance(e.get("input"), list):  # a list where a union takes one:
        inside = [o for o, where in zip(errors, at) if where.startswith(f"{loc}.")]  # its wrong item, named
        if inside:  # ("seeds: [1, a]": "seeds.1: ... integer (got 'a')", not "seeds: ... integer (got [1, 'a'])")
            e = inside[0]
            loc = _clean_loc(e["loc"], data, e["type"] == "missing")
    wanted = list(dict.fromkeys(o["msg"].removeprefix("Input should be ").split(",")[0] for o, where in zip(errors, at)  # a
                                if o["msg"].startswith("Input should be ") and where == loc))  # union's members
    if e["msg"].startswith("Input should be ") and len(wanted) > 1:  # (each member said alone: "seeds.int: ... integer")
        e = {**e, "msg": "Input should be " + ", ".join(wanted[:-1]) + " or " + wanted[-1]}

    def place(path: str) -> str:  # where in the file a config path's value came from
        return origin(path) if origin and path else path or "(top level)"

    if e["type"] == "extra_forbidden":
        parent, _, key = loc.rpartition(".")
        allowed = _allowed_keys(model, parent, data)
        return f"{place(loc)}: unknown key '{key}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # (the name's own origin: base, not a variant that set a lr)
        allowed = e.get("ctx", {}).get("expected_tags", "").replace("'", "")
        return f"{place(_join(loc, 'name'))}: unknown or missing name {e['ctx'].get('tag', '')!r} (allowed: {allowed})"
    got = e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    key, _, rest = msg.partition(": ")
    if e["type"] == "value_error" and rest and isinstance(got, dict) and key in got:  # a block's validator naming its key
        loc, msg, got = _join(loc, key), rest, got[key]
    elif e["type"] == "value_error" and rest and not loc and value_at(got, key, _MISSING) is not _MISSING:  # the whole config's
        return f"{place(key)}: {rest}"  # (its message says the value)
    got_text = "" if isinstance(got, dict) or got is None and e["type"] == "missing" else \
        " (got nothing: the key is written without a value)" if got is None else f" (got {shown(got)})"
    return f"{place(loc)}: {msg}{got_text}"


_MISSING = object()


def _join(loc: str, key: str) -> str:
    return f"{loc}.{key}" if loc else key


def _clean_loc(loc: tuple, data: dict, missing: bool) -> str:
    """Drop the parts pydantic adds for unions (a tag like 'mlp', a type like 'int'); `missing`: the last part is a key
    the file lacks."""
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
        elif isinstance(node, dict) and missing and part == loc[-1]:
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
