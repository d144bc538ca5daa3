"""Claims: the expected outcomes a study file states, read into `Claim`s (the report judges them, `analysis.family`).

    <variant> <op> <variant> [by at least <margin> [points|%]] [on <metric>] [in <dataset>]
    <variant> <op> <value>[%|points] [on <metric>] [in <dataset>]

`op` is one of > >= < <= (blanks around it optional: no variant name holds < or >); percentages and points, of an accuracy only, are read as fractions (97.5% = 0.975); an accuracy threshold
outside 0..1 or an accuracy margin over 1 is refused (it would decide the claim before anything trains). Imports no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .config import METRIC_DIRECTIONS


@dataclass(frozen=True)
class Claim:
    """An expected outcome: `a > b` (paired, by a margin) or `a >= value` (absolute)."""

    text: str
    left: str
    op: str  # '>', '<', '>=', '<='
    right: str | None  # the other variant, or None for a threshold
    value: float  # the margin (comparison) or the threshold, in metric units
    metric: str
    dataset: str | None



_CLAIM = re.compile(
    r"^(?P<left>[^\s<>]+)\s*(?P<op>>=|<=|>|<)\s*(?P<right>[^\s%<>]+)\s*(?P<runit>%|points)?"  # (names hold no < or >)
    r"(?:\s+by at least\s+(?P<margin>[0-9.eE+-]+)\s*(?P<munit>%|points)?)?"
    r"(?:\s+on\s+(?P<metric>\w+))?(?:\s+in\s+(?P<dataset>\w+))?\s*$"
)


def parse_claim(text: str, variants, top, fail) -> Claim:
    """`l2 > none`, `dropout=0.1 > dropout=0 by at least 0.5 points on test_acc`, `base >= 97.5% on test_acc in mnist`.

    `top` is the study file (its `metric` and `datasets`); `fail` raises the study's one-line error.
    """
    m = _CLAIM.match(" ".join(text.split()))  # runs of blanks as one: the pattern backtracks quadratically over long ones
    if not m:
        fail(f"claims: cannot read '{text}' (write e.g. 'l2 > none', 'a > b by at least 0.5 points on test_acc', 'base >= 97.5% on test_acc')")
    g = m.groupdict()
    glued = re.fullmatch(r"(.+)points", g["right"])  # `97.5points`, as `97.5%` and a margin's `0.5points` read (unless a variant)
    if glued and not g["runit"] and g["right"] not in variants and _number(glued[1]) is not None:
        g["right"], g["runit"] = glued[1], "points"
    metric = g["metric"] or top.metric
    if metric not in METRIC_DIRECTIONS:
        fail(f"claims: '{text}': unknown metric '{metric}' (allowed: {', '.join(METRIC_DIRECTIONS)})")
    if g["dataset"] and g["dataset"] not in top.datasets:
        fail(f"claims: '{text}': dataset '{g['dataset']}' is not in this study (datasets: {', '.join(top.datasets)})")
    threshold = None if g["right"] in variants and not g["runit"] else _number(g["right"])  # a variant named 0.5 is that variant
    names = [g["left"]] + ([] if threshold is not None else [g["right"]])
    for name in names:
        if name not in variants:
            fail(f"claims: '{text}': '{name}' is not a variant (variants: {', '.join(variants)})")
    unit = g["runit"] or g["munit"]
    if unit and not metric.endswith("_acc"):  # (0.01 of a loss, an epoch or a second is no percentage point)
        fail(f"claims: '{text}': {unit} reads an accuracy in percent, and {metric} is no accuracy; write the "
             f"{'threshold' if threshold is not None else 'margin'} in {metric}'s own units")
    if threshold is None and g["right"] == g["left"]:
        fail(f"claims: '{text}': compares {g['left']} with itself; name two variants")
    if threshold is not None:
        if g["margin"]:
            fail(f"claims: '{text}': 'by at least' goes with a comparison of two variants")
        value = threshold * (0.01 if g["runit"] else 1)
        if metric.endswith("_acc") and not 0 <= value <= 1:
            fail(f"claims: '{text}': {metric} lies between 0 and 1 (0-100%), so {value:g} decides this claim before anything "
                 f"trains; write the threshold as a fraction or a percentage (e.g. 0.975 or 97.5%)")
        return Claim(text, g["left"], g["op"], None, value, metric, g["dataset"])
    margin = _number(g["margin"]) if g["margin"] else 0.0
    if margin is None or margin < 0:
        fail(f"claims: '{text}': the margin must be a non-negative number")
    value = margin * (0.01 if g["munit"] else 1)
    if metric.endswith("_acc") and value > 1:
        fail(f"claims: '{text}': no two {metric}s differ by more than 1 (100 points); write the margin as a fraction, "
             f"in points or in % (e.g. 0.005, 0.5 points or 0.5%)")
    return Claim(text, g["left"], g["op"], g["right"], value, metric, g["dataset"])


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
