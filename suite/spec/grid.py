"""The one merge rule and the grid: variants and grid points deep-merged over a study's base.

`conditions_of` crosses a study's variants with its grid axes (each value written out, or a
`range` / `log_range`) into named conditions, each the overrides merged over the base.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import TYPE_CHECKING, Any

from .messages import shown

if TYPE_CHECKING:
    from .study import StudyFile


MAX_RANGE = 1000  # values one range may expand to


def grid_range(spec: dict) -> list:
    """A grid axis written as a range: {log_range: [a, b], num: n} (geometric) or {range: [a, b], num: n} (linear).

    Values keep 6 significant digits (they name variants); a linear range between integers whose
    steps are whole numbers gives integers.
    """
    kinds = [k for k in ("log_range", "range") if k in spec]
    form = "write a range as {log_range: [a, b], num: n} or {range: [a, b], num: n}"
    if len(kinds) != 1 or set(spec) != {kinds[0], "num"}:
        raise ValueError(f"{form}; got {shown(spec)}")
    kind, ends, num = kinds[0], spec[kinds[0]], spec["num"]
    numeric = (int, float)
    if isinstance(ends, list):  # YAML reads 1e-4 (no dot) as text
        ends = [_as_number(e) for e in ends]
    if not (isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, numeric) and not isinstance(e, bool)
                                                              and math.isfinite(e) for e in ends)):
        raise ValueError(f"{kind}: two finite numbers [a, b]; got {shown(ends)}")
    if not isinstance(num, int) or isinstance(num, bool) or not 2 <= num <= MAX_RANGE:
        raise ValueError(f"num: a whole number of values from 2 to {MAX_RANGE}; got {shown(num)}")
    a, b = ends
    if kind == "log_range":
        if a <= 0 or b <= 0:
            raise ValueError(f"log_range: both ends above 0; got {shown(ends)}")
        values = [a * (b / a) ** (i / (num - 1)) for i in range(num)]
    else:
        if all(isinstance(e, int) for e in ends) and (b - a) % (num - 1) == 0:
            return [a + (b - a) // (num - 1) * i for i in range(num)]
        values = [a + (b - a) * i / (num - 1) for i in range(num)]
    values = [float(f"{v:.6g}") for v in values]
    if len(set(values)) != num:
        raise ValueError(f"{kind} {shown(ends)} with num {num} repeats values at 6 significant digits")
    return values


def _as_number(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def conditions_of(top: StudyFile, fail) -> dict:
    """variant name -> (overrides to merge over base, grid point)."""
    variants = top.variants or {None: {}}
    axes = list(top.grid)
    for axis in axes:
        if axis.split(".")[0] == "execution":
            fail(f"grid.{axis}: how runs are computed is chosen when running (--threads, --device), not in the study file")
        if axis == "data.name":  # (the axis named its points while every run trained on the study's datasets)
            fail(f"grid.{axis}: set the datasets with the top-level key 'datasets'")
        if not top.grid[axis]:
            fail(f"grid.{axis}: an axis needs at least one value")
        if any(isinstance(value, dict) for value in top.grid[axis]):  # its points would be named by whole mappings
            fail(f"grid.{axis}: an axis lists values of one setting (e.g. grid: {{model.hidden: [[64], [128]]}}), not "
                 f"mappings; make each mapping a variant")
        written = [format_value(v) for v in top.grid[axis]]
        if len(set(written)) < len(written):  # 0.1 and 0.10: one condition twice
            twice = next(v for v in written if written.count(v) > 1)
            fail(f"grid.{axis}: the value {twice} appears twice; list each value once")
    labels = axis_labels(axes)
    out = {}
    for (vname, overrides), values in itertools.product(variants.items(), itertools.product(*top.grid.values())):
        point = tuple(zip(axes, values))
        merged = copy.deepcopy(overrides)
        for axis, value in point:
            merged = deep_merge(merged, nest(axis, value))
        parts = ([vname] if vname else []) + [f"{labels[a]}={format_value(v)}" for a, v in point]
        out[",".join(parts) or "base"] = (merged, point)
    return out


def axis_labels(axes: list[str]) -> dict:
    """Short labels for grid axes: the last path component, unless two axes share it."""
    last = [a.rsplit(".", 1)[-1] for a in axes]
    return {a: (short if last.count(short) == 1 else a) for a, short in zip(axes, last)}


def format_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "x".join(format_value(v) for v in value)
    return str(value)


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` merged into `base`, recursing into dicts; lists and values replace."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nest(dotted: str, value) -> dict:
    tree: Any = value
    for key in reversed(dotted.split(".")):
        tree = {key: tree}
    return tree


def value_at(tree, dotted: str, default=None):
    """The value at a dotted path of `tree`, or `default` where there is none."""
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def without(tree: dict, paths) -> dict:
    """`tree` (changed in place) less the values at the dotted `paths`."""
    for path in paths:
        *parents, last = path.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return tree
