"""Statistics for reports: pure functions over arrays of per-seed values (numpy + scipy.stats).

A study trains each variant on the same handful of seeds, so:

- `mean_ci`: Student-t interval on the mean of one variant's runs (few seeds: t, not normal).
- `paired_comparison`: variant vs baseline paired by seed (seed k saw the same init and data
  order on both sides), so the test is on the per-seed differences: paired Student-t interval
  and two-sided paired t-test, Wilcoxon signed-rank test alongside (no normality assumption),
  Cohen's d_z, and how many seeds a paired t-test would need for 80% power at that effect.
- `holm_adjust` (`holm`, `holm_levels`): Holm-Bonferroni step-down adjustment across one family of tests (a
  study's comparisons and claims together), and the level each test's interval is drawn at.
- `one_sided_p`, `t_interval`: a claim's one-sided t-test and an interval at any level.
- `bootstrap_ci`: percentile bootstrap interval of the mean, a distribution-free cross-check.
- `verdict`: a comparison's interval and adjusted p read as words (claims: `analysis.family`).

Values that are not finite (a diverged run's loss) are dropped, and `n` says how many remained.
Degenerate inputs (fewer than two values, identical differences) give NaN or limit values, never
a warning or an exception. tests/test_stats.py checks each function against scipy on hand-made inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

NAN = float("nan")
ALPHA = 0.05  # the family-wise error rate of a study's comparisons and claims together
ABOVE = (">", ">=")  # claim operators whose H1 is "above"; the others, < and <=, "below"


@dataclass(frozen=True)
class Interval:
    n: int  # finite values used
    mean: float
    std: float  # sample std (ddof=1), in the metric's units
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    n: int  # seeds with a finite value on both sides
    mean_diff: float  # mean of variant - baseline, in the metric's units
    std_diff: float  # sample std (ddof=1) of the differences
    low: float  # paired Student-t interval of mean_diff
    high: float
    t: float
    p: float  # two-sided paired t-test
    effect_size: float  # Cohen's d_z: mean_diff / std_diff (unitless)
    wilcoxon_p: float  # two-sided Wilcoxon signed-rank test
    seeds_needed: int | None  # pairs for 80% power at the observed d_z (two-sided, alpha 0.05)


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def mean_ci(values, confidence: float = 0.95) -> Interval:
    """Student-t interval on the mean of the finite values."""
    a = _finite(values)
    n = len(a)
    if n == 0:
        return Interval(0, NAN, NAN, NAN, NAN)
    mean = float(a.mean())
    if n == 1:
        return Interval(1, mean, NAN, NAN, NAN)
    if _all_equal(a, scale=float(np.abs(a).max())):  # every seed at one value (e.g. collapsed to one share): that value,
        return Interval(n, float(a[0]), 0.0, float(a[0]), float(a[0]))  # no spread, not a mean off by rounding noise
    std = float(a.std(ddof=1))
    return Interval(n, mean, std, *t_interval(mean, std, n, confidence))


def t_interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Student-t interval of a mean from its sample std and n; (nan, nan) below two values."""
    if n < 2 or math.isnan(std):
        return NAN, NAN
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n) if std else 0.0
    return mean - half, mean + half


def one_sided_p(mean: float, std: float, n: int, null: float, greater: bool) -> float:
    """One-sample t-test of H1 "the mean is above `null`" (greater) or "below it", from mean, sample std and n.

    Zero spread: the mean is exact, so p is 0 when it lies strictly on H1's side of `null`, else 1.
    """
    if n < 2 or math.isnan(std) or math.isnan(mean):
        return NAN
    gap = (mean - null) if greater else (null - mean)
    if std == 0:
        return 0.0 if gap > 0 else 1.0
    return float(sps.t.sf(gap / (std / math.sqrt(n)), n - 1))


def paired_comparison(variant, baseline, confidence: float = 0.95) -> Paired:
    """variant vs baseline, element k of both from seed k; pairs with a non-finite side are dropped."""
    a, b = np.asarray(variant, dtype=float).ravel(), np.asarray(baseline, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_comparison: {len(a)} variant values but {len(b)} baseline values")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = len(d)
    if n < 2:  # one pair has a difference but no spread: nothing to test
        return Paired(n, float(d[0]) if n else NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, None)
    if _all_equal(d, scale=float(max(np.abs(a).max(), np.abs(b).max()))):
        return _identical_differences(n, float(d.mean()), _wilcoxon(d))
    ci = mean_ci(d, confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = sps.ttest_rel(a, b)
    dz = ci.mean / ci.std
    return Paired(n, ci.mean, ci.std, ci.low, ci.high, float(t), float(p), dz, _wilcoxon(d), seeds_for_power(dz))


def _all_equal(d: np.ndarray, scale: float) -> bool:
    # Differences that should be equal (0.9-0.8 and 0.8-0.7) differ by rounding of the operands,
    # which is relative to the operands, not to the difference: compare the spread to that scale.
    return float(np.ptp(d)) <= 64 * np.finfo(float).eps * max(scale, np.finfo(float).tiny)


def _identical_differences(n: int, mean: float, wilcoxon_p: float) -> Paired:
    """Zero spread: the interval is the point, and the t statistic is 0/0 (no change) or +-inf."""
    if mean == 0:
        return Paired(n, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, NAN, None)
    inf = math.copysign(math.inf, mean)
    return Paired(n, mean, 0.0, mean, mean, inf, 0.0, inf, wilcoxon_p, None)


def _wilcoxon(d: np.ndarray) -> float:
    if len(d) < 2 or not np.any(d):
        return NAN
    with warnings.catch_warnings():  # ties and zeros make scipy warn that it falls back to the normal approximation
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(d).pvalue)


def power(dz: float, n: int, alpha: float = 0.05, sides: int = 2) -> float:
    """Power of a paired (or one-sample) t-test with n values at standardised effect dz (noncentral t).

    sides=2: two-sided, either sign of dz; sides=1: one-sided, dz > 0 being the tested direction.
    """
    df = n - 1
    nc = (abs(dz) if sides == 2 else dz) * math.sqrt(n)
    if sides == 1:
        return float(sps.nct.sf(float(sps.t.ppf(1 - alpha, df)), df, nc))
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    # P(T < -crit) as P(-T > crit), -T being noncentral t at -nc: scipy's cdf there is NaN for a large nc (e.g. df 1,
    # nc 38.7), which made seeds_for_power stop at 2; its sf gives the same value wherever the cdf has one
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def seeds_for_power(dz: float, target: float = 0.8, alpha: float = 0.05, cap: int = 10_000, sides: int = 2) -> int | None:
    """Smallest n >= 2 whose power reaches `target`; None if dz is 0 or not finite (one-sided: not > 0), or n would pass `cap`."""
    if not math.isfinite(dz) or dz == 0 or (sides == 1 and dz < 0):
        return None
    lo, hi = 2, 2
    while not power(dz, hi, alpha, sides) >= target:  # double until reached: O(log n) power evaluations (NaN: not reached)
        if hi >= cap:
            return None
        lo, hi = hi, min(hi * 2, cap)
    while lo < hi:  # power grows with n: bisect for the first n that reaches the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not power(dz, mid, alpha, sides) >= target else (lo, mid)
    return lo


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in input order; NaN stays NaN and is not counted in m."""
    return holm_adjust(pvalues)[0]


def holm_levels(pvalues, alpha: float = ALPHA) -> list[float]:
    """Per test, the significance level its interval is drawn at (see `holm_adjust`)."""
    return holm_adjust(pvalues, alpha)[1]


def holm_adjust(pvalues, alpha: float = ALPHA) -> tuple[list[float], list[float]]:
    """(Holm-adjusted p-values, levels), in input order, from one step-down pass.

    Adjusted p: the running max over ranks <= r of (m - rank) * p_rank (monotone in the raw p), capped at 1.
    Level: the significance level a test's interval is drawn at so that it excludes the null exactly when its
    adjusted p is below `alpha`: alpha / (m - r) for the test of rank r (0-based, by raw p), the level Holm's
    step-down tests it at, or lower (a wider interval) where the running max raised its adjusted p: alpha * p / that
    max before the cap. A p of 0 gets alpha / (m - r). NaN stays NaN, is not counted in m, and gets level alpha
    (nothing was tested: its interval is NaN anyway)."""
    p = np.asarray(pvalues, dtype=float).ravel()
    adjusted, levels = [NAN] * len(p), [alpha] * len(p)
    idx = np.flatnonzero(~np.isnan(p))
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, (len(idx) - rank) * float(p[i]))
        adjusted[i] = min(1.0, running)
        levels[i] = alpha * float(p[i]) / running if p[i] > 0 else alpha / (len(idx) - rank)
    return adjusted, levels


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite values; (nan, nan) below two values."""
    a = _finite(values)
    if len(a) < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    # all resamples at once: resamples x n indices, small for the tens of seeds a study has
    means = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100  # percent in each tail
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """better / worse / inconclusive for a difference oriented so that positive is better."""
    if math.isnan(low) or math.isnan(high) or not p_adjusted < alpha:
        return "inconclusive"
    return "better" if low > 0 else "worse" if high < 0 else "inconclusive"
