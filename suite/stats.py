"""Statistics for reports: pure functions over arrays of per-seed values (numpy + scipy).

Intervals are Student-t (the mean of a handful of seeds); paired comparisons use the paired
t-test (two-sided), with the Wilcoxon signed-rank test alongside; multiple comparisons are
Holm-adjusted. tests/test_stats.py checks each against scipy on hand-made inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    n: int
    mean_diff: float
    std_diff: float
    low: float
    high: float
    t: float
    p: float
    effect_size: float  # Cohen's d_z: mean difference / std of the differences
    wilcoxon_p: float
    seeds_needed: int | None  # pairs for 80% power at the observed d_z (two-sided, alpha 0.05)


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def mean_ci(values, confidence: float = 0.95) -> Interval:
    a = _finite(values)
    n = len(a)
    if n == 0:
        return Interval(0, NAN, NAN, NAN, NAN)
    mean = float(a.mean())
    if n == 1:
        return Interval(1, mean, NAN, NAN, NAN)
    std = float(a.std(ddof=1))
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def paired_comparison(variant, baseline, confidence: float = 0.95) -> Paired:
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = len(d)
    if n < 2:
        mean = float(d.mean()) if n else NAN
        return Paired(n, mean, NAN, NAN, NAN, NAN, NAN, NAN, NAN, None)
    ci = mean_ci(d, confidence)
    if ci.std == 0:
        if ci.mean == 0:
            return Paired(n, 0.0, 0.0, 0.0, 0.0, NAN, 1.0, 0.0, NAN, None)
        return Paired(n, ci.mean, 0.0, ci.mean, ci.mean, math.copysign(math.inf, ci.mean), 0.0,
                      math.copysign(math.inf, ci.mean), _wilcoxon(d), None)
    t, p = sps.ttest_rel(a[keep], b[keep])
    dz = ci.mean / ci.std
    return Paired(n, ci.mean, ci.std, ci.low, ci.high, float(t), float(p), dz, _wilcoxon(d), seeds_for_power(dz))


def _wilcoxon(d: np.ndarray) -> float:
    if len(d) < 2 or not np.any(d):
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(d).pvalue)


def power(dz: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test with n pairs at standardised effect dz."""
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(dz) * math.sqrt(n)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_for_power(dz: float, target: float = 0.8, alpha: float = 0.05, cap: int = 10_000) -> int | None:
    """Smallest n >= 2 whose power reaches `target`; None if the effect is 0 or n would pass `cap`."""
    if not math.isfinite(dz) or dz == 0:
        return None
    lo, hi = 2, 2
    while power(dz, hi, alpha) < target:
        if hi >= cap:
            return None
        lo, hi = hi, min(hi * 2, cap)
    while lo < hi:  # power grows with n: bisect for the first n that reaches the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if power(dz, mid, alpha) < target else (lo, mid)
    return lo


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in input order; NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (deterministic for a given seed)."""
    a = _finite(values)
    if len(a) < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, p_adjusted: float, alpha: float = 0.05) -> str:
    """better / worse / inconclusive for a difference oriented so that positive is better."""
    if not (math.isfinite(low) and math.isfinite(high)) or not p_adjusted < alpha:
        return "inconclusive"
    return "better" if low > 0 else "worse" if high < 0 else "inconclusive"


def claim_verdict_paired(low: float, high: float, op: str, margin: float) -> str:
    """'A op B by at least margin', (low, high) the CI of A - B."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if op in (">", ">="):
        return "supported" if low > margin else "contradicted" if high < margin else "inconclusive"
    return "supported" if high < -margin else "contradicted" if low > -margin else "inconclusive"


def claim_verdict_threshold(low: float, high: float, op: str, value: float) -> str:
    """'A op value', (low, high) the CI of A's mean."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if op in (">", ">="):
        return "supported" if low >= value else "contradicted" if high < value else "inconclusive"
    return "supported" if high <= value else "contradicted" if low > value else "inconclusive"
