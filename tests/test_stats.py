"""suite.analysis.stats against independent oracles: scipy's own tests and intervals, hand-computed values."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from suite.analysis import stats
from suite.analysis.stats import Interval, Paired

pytestmark = pytest.mark.filterwarnings("error")  # degenerate inputs must not leak warnings

ACC = [0.912, 0.905, 0.921, 0.899, 0.915, 0.908]  # accuracies of six seeds
VARIANT = [0.921, 0.917, 0.925, 0.903, 0.926, 0.914]
BASELINE = [0.912, 0.905, 0.921, 0.899, 0.915, 0.908]


def oracle_power(dz: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided paired t-test power straight from the noncentral t, written here, not imported."""
    crit = sps.t.isf(alpha / 2, n - 1)
    dist = sps.nct(n - 1, dz * math.sqrt(n))
    return dist.sf(crit) + dist.cdf(-crit)


# mean_ci


def test_mean_ci_matches_scipy_t_interval():
    ci = stats.mean_ci(ACC)
    low, high = sps.t.interval(0.95, len(ACC) - 1, loc=np.mean(ACC), scale=sps.sem(ACC))
    assert ci.n == 6
    assert ci.mean == pytest.approx(np.mean(ACC))
    assert ci.std == pytest.approx(np.std(ACC, ddof=1))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_other_confidence_is_narrower():
    ci90, ci95 = stats.mean_ci(ACC, 0.90), stats.mean_ci(ACC)
    low, high = sps.t.interval(0.90, len(ACC) - 1, loc=np.mean(ACC), scale=sps.sem(ACC))
    assert (ci90.low, ci90.high) == pytest.approx((low, high), rel=1e-12)
    assert ci95.low < ci90.low < ci90.high < ci95.high


def test_mean_ci_drops_nan_and_inf():
    ci = stats.mean_ci([*ACC, math.nan, math.inf])
    assert ci == stats.mean_ci(ACC)
    assert ci.n == 6


def test_mean_ci_one_and_zero_values():
    one = stats.mean_ci([0.5, math.nan])
    assert one.n == 1 and one.mean == 0.5
    assert math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.high)
    none = stats.mean_ci([math.nan])
    assert none.n == 0
    assert all(math.isnan(x) for x in (none.mean, none.std, none.low, none.high))
    assert stats.mean_ci([]).n == 0


def test_mean_ci_of_identical_values_is_the_point():
    assert stats.mean_ci([0.25, 0.25, 0.25]) == Interval(3, 0.25, 0.0, 0.25, 0.25)


def test_interval_is_frozen():
    with pytest.raises(AttributeError):
        stats.mean_ci(ACC).mean = 0.0


# paired_comparison


def test_paired_matches_ttest_rel_and_t_interval():
    r = stats.paired_comparison(VARIANT, BASELINE)
    d = np.subtract(VARIANT, BASELINE)
    ref = sps.ttest_rel(VARIANT, BASELINE)
    low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert r.n == 6
    assert r.mean_diff == pytest.approx(d.mean())
    assert r.std_diff == pytest.approx(d.std(ddof=1))
    assert r.t == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (r.low, r.high) == pytest.approx((low, high), rel=1e-10)
    assert r.effect_size == pytest.approx(d.mean() / d.std(ddof=1))


def test_paired_wilcoxon_matches_scipy():
    r = stats.paired_comparison(VARIANT, BASELINE)
    assert r.wilcoxon_p == pytest.approx(sps.wilcoxon(np.subtract(VARIANT, BASELINE)).pvalue)
    assert 0 < r.wilcoxon_p < 1


def test_paired_wilcoxon_with_zero_and_tied_differences():
    variant, baseline = [0.80, 0.82, 0.85, 0.81, 0.90], [0.80, 0.81, 0.84, 0.79, 0.88]  # d = 0, .01, .01, .02, .02
    r = stats.paired_comparison(variant, baseline)
    assert r.wilcoxon_p == pytest.approx(sps.wilcoxon(np.subtract(variant, baseline)).pvalue)
    assert r.p == pytest.approx(sps.ttest_rel(variant, baseline).pvalue)


def test_paired_sign_follows_the_direction():
    up, down = stats.paired_comparison(VARIANT, BASELINE), stats.paired_comparison(BASELINE, VARIANT)
    assert up.mean_diff > 0 and down.mean_diff == pytest.approx(-up.mean_diff)
    assert (down.low, down.high) == pytest.approx((-up.high, -up.low))
    assert down.p == pytest.approx(up.p) and down.effect_size == pytest.approx(-up.effect_size)
    assert down.seeds_needed == up.seeds_needed


def test_paired_drops_pairs_with_a_missing_side():
    # seed 1 diverged on the variant, seed 3 on the baseline: both pairs go, the others keep their order
    variant = [VARIANT[0], math.nan, *VARIANT[2:], 0.95]
    baseline = [BASELINE[0], BASELINE[1], *BASELINE[2:], math.inf]
    baseline[3] = math.nan
    keep = [0, 2, 4, 5]
    r = stats.paired_comparison(variant, baseline)
    ref = sps.ttest_rel([VARIANT[k] for k in keep], [BASELINE[k] for k in keep])
    assert r.n == 4
    assert r.p == pytest.approx(ref.pvalue) and r.t == pytest.approx(ref.statistic)


def test_paired_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="5 variant values but 6"):
        stats.paired_comparison(VARIANT[:5], BASELINE)
    with pytest.raises(ValueError):  # length 1 would otherwise broadcast silently
        stats.paired_comparison([0.9], BASELINE)


def test_paired_identical_nonzero_differences_collapse():
    # 0.9-0.8, 0.8-0.7, 0.7-0.6 differ in the last bits: still "identical", with no precision warning
    for variant, baseline, diff in [([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], 0.1), ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], -0.5)]:
        r = stats.paired_comparison(variant, baseline)
        assert r.std_diff == 0.0
        assert r.low == r.high == r.mean_diff == pytest.approx(diff)
        assert r.p == 0.0
        assert r.t == r.effect_size == math.copysign(math.inf, diff)
        assert r.seeds_needed is None
        assert r.wilcoxon_p == pytest.approx(sps.wilcoxon(np.subtract(variant, baseline)).pvalue)


def test_paired_all_zero_differences():
    r = stats.paired_comparison([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (r.n, r.mean_diff, r.std_diff, r.low, r.high, r.p, r.effect_size) == (3, 0, 0, 0, 0, 1.0, 0.0)
    assert math.isnan(r.wilcoxon_p)
    assert r.seeds_needed is None


def test_paired_fewer_than_two_pairs():
    one = stats.paired_comparison([0.9, math.nan], [0.8, 0.7])
    assert one.n == 1 and one.mean_diff == pytest.approx(0.1)
    assert all(math.isnan(x) for x in (one.std_diff, one.low, one.high, one.t, one.p, one.effect_size, one.wilcoxon_p))
    assert one.seeds_needed is None
    empty = stats.paired_comparison([], [])
    assert empty.n == 0 and math.isnan(empty.mean_diff) and math.isnan(empty.p)


def test_paired_two_pairs_works():
    r = stats.paired_comparison([0.3, 0.5], [0.1, 0.2])
    ref = sps.ttest_rel([0.3, 0.5], [0.1, 0.2])
    assert r.n == 2 and r.p == pytest.approx(ref.pvalue)
    assert not math.isnan(r.wilcoxon_p)


def test_paired_is_frozen():
    with pytest.raises(AttributeError):
        stats.paired_comparison(VARIANT, BASELINE).p = 0.0


# seeds_needed


def test_seeds_needed_is_the_first_n_with_80_percent_power():
    for dz in (0.3, 0.8, 1.0, 2.5):
        n = stats.seeds_for_power(dz)
        assert oracle_power(dz, n) >= 0.8
        assert n == 2 or oracle_power(dz, n - 1) < 0.8


def test_seeds_needed_for_dz_one_is_about_ten():
    # the standard tables (G*Power: d_z = 1, two-sided, alpha .05, power .8) give 10 pairs
    n = stats.seeds_for_power(1.0)
    assert n == 10
    assert oracle_power(1.0, 9) < 0.8 <= oracle_power(1.0, 10)


def test_seeds_needed_falls_as_the_effect_grows():
    needed = [stats.seeds_for_power(dz) for dz in (0.2, 0.5, 1.0, 2.0, 5.0)]
    assert needed == sorted(needed, reverse=True)
    assert len(set(needed)) == len(needed)
    assert stats.seeds_for_power(-0.5) == stats.seeds_for_power(0.5)
    assert stats.seeds_for_power(50.0) == 2


def test_power_of_a_large_effect_with_few_seeds_is_a_number_and_matches_simulation():
    """scipy's noncentral t cdf is NaN far in its tail (df 1, nc 38.7): power was NaN and an inconclusive smoke
    comparison (2 seeds, d_z -27, Holm level 0.0125) said '~2 seeds to resolve', the seeds it already had."""
    rng = np.random.default_rng(0)
    for dz, n, alpha in ((-27.3415, 2, 0.0125), (27.3415, 4, 0.0125), (40.0, 2, 0.001), (3.0, 3, 0.05)):
        got = stats.power(dz, n, alpha)
        diffs = rng.standard_normal((200_000, n)) + dz  # paired differences with unit spread: d_z = dz
        t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
        simulated = np.mean(np.abs(t) > sps.t.isf(alpha / 2, n - 1))
        assert math.isfinite(got) and got == pytest.approx(simulated, abs=0.01), (dz, n, alpha, got, simulated)
    needed = stats.seeds_for_power(-27.3415, alpha=0.0125)
    assert needed == 3 and stats.power(-27.3415, 2, 0.0125) < 0.8 <= stats.power(-27.3415, 3, 0.0125)


def test_seeds_needed_gives_up():
    assert stats.seeds_for_power(0.01) is None  # would need ~78,000 pairs
    assert stats.seeds_for_power(0.0) is None
    assert stats.seeds_for_power(math.nan) is None
    assert stats.seeds_for_power(math.inf) is None


def test_paired_reports_seeds_for_its_observed_effect():
    r = stats.paired_comparison(VARIANT, BASELINE)
    n = r.seeds_needed
    assert n is not None and oracle_power(r.effect_size, n) >= 0.8 > oracle_power(r.effect_size, n - 1)


# holm


def test_holm_hand_computed():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06 by monotonicity
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_nan_out_of_m():
    adjusted = stats.holm([0.4, math.nan, 0.02, 0.3])
    assert math.isnan(adjusted[1])
    assert [adjusted[i] for i in (0, 2, 3)] == pytest.approx([0.6, 0.06, 0.6])  # m = 3, not 4
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]


def test_holm_is_monotone_in_the_raw_p():
    p = [0.001, 0.2, 0.011, 0.049, 0.05, 0.012, 0.9]
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert all(np.diff(np.asarray(adjusted)[order]) >= 0)
    assert all(a >= r for a, r in zip(adjusted, p))


def test_holm_edge_sizes():
    assert stats.holm([]) == []
    assert stats.holm([0.03]) == [0.03]
    assert stats.holm([0.01, 0.01]) == [0.02, 0.02]


def test_holm_levels_below_the_cap_use_the_uncapped_running_max():
    # adjusted p would all be capped at 1 (1.2, 1.0, 0.6 -> running max 1.2): levels alpha * p / 1.2
    assert stats.holm_levels([0.4, 0.5, 0.6]) == pytest.approx([0.05 / 3, 0.05 * 0.5 / 1.2, 0.05 * 0.6 / 1.2])


def test_equal_values_have_no_spread_and_their_own_mean():
    ci = stats.mean_ci([0.1] * 20)  # the float mean of twenty 0.1 is not 0.1, nor is their std 0
    assert (ci.mean, ci.std, ci.low, ci.high) == (0.1, 0.0, 0.1, 0.1)
    assert stats.one_sided_p(ci.mean, ci.std, ci.n, 0.1, True) == 1.0  # "above 0.1" is not shown by 0.1 itself


def test_holm_levels_are_the_step_down_levels_unless_the_running_max_raised_p():
    # ranks: 0.005 (alpha/4), 0.01 (alpha/3), 0.03 (alpha/2), 0.04 -> adjusted 0.06 by the running max: alpha * 0.04 / 0.06
    levels = stats.holm_levels([0.01, 0.04, 0.03, 0.005])
    assert levels == pytest.approx([0.05 / 3, 0.05 * 0.04 / 0.06, 0.05 / 2, 0.05 / 4])
    assert stats.holm_levels([0.0, 0.2]) == pytest.approx([0.025, 0.05])  # p = 0 gets its step-down level
    level = stats.holm_levels([0.3, math.nan])
    assert level == pytest.approx([0.05, 0.05])


@pytest.mark.parametrize("seed", range(20))
def test_an_interval_at_its_holm_level_excludes_zero_exactly_when_p_holm_is_below_alpha(seed):
    rng = np.random.default_rng(seed)
    diffs = [rng.normal(rng.uniform(-0.02, 0.03), 0.01, size=5) for _ in range(6)]
    p = [sps.ttest_1samp(d, 0.0).pvalue for d in diffs]
    adjusted, levels = stats.holm(p), stats.holm_levels(p)
    for d, p_adj, level in zip(diffs, adjusted, levels):
        low, high = stats.t_interval(d.mean(), d.std(ddof=1), len(d), 1 - level)
        assert (low > 0 or high < 0) == (p_adj < 0.05)


def test_t_interval_matches_scipy_and_collapses_without_spread():
    low, high = stats.t_interval(0.9, 0.01, 6, 0.99)
    assert (low, high) == pytest.approx(sps.t.interval(0.99, 5, loc=0.9, scale=0.01 / math.sqrt(6)))
    assert stats.t_interval(0.9, 0.0, 6, 0.99) == (0.9, 0.9)
    assert all(math.isnan(x) for x in stats.t_interval(0.9, math.nan, 1, 0.95))


def test_one_sided_p_matches_scipy_ttest_1samp():
    for null, greater in ((0.9, True), (0.91, True), (0.92, False), (0.9, False)):
        expected = sps.ttest_1samp(ACC, null, alternative="greater" if greater else "less").pvalue
        assert stats.one_sided_p(np.mean(ACC), np.std(ACC, ddof=1), len(ACC), null, greater) == pytest.approx(expected)
    assert stats.one_sided_p(0.5, 0.0, 4, 0.4, True) == 0.0 and stats.one_sided_p(0.5, 0.0, 4, 0.5, True) == 1.0
    assert math.isnan(stats.one_sided_p(0.5, math.nan, 1, 0.4, True))


def test_one_sided_seeds_needed_reach_80_percent_power_of_the_one_sided_test():
    def oracle(dz, n, alpha):
        return sps.nct(n - 1, dz * math.sqrt(n)).sf(sps.t.isf(alpha, n - 1))
    for dz, alpha in ((0.5, 0.05), (1.0, 0.01), (2.0, 0.0125)):
        n = stats.seeds_for_power(dz, alpha=alpha, sides=1)
        assert oracle(dz, n, alpha) >= 0.8 and (n == 2 or oracle(dz, n - 1, alpha) < 0.8)
    assert stats.seeds_for_power(1.0, sides=1) < stats.seeds_for_power(1.0)  # one tail: fewer seeds than two
    assert stats.seeds_for_power(1.0, alpha=0.01) > stats.seeds_for_power(1.0)  # a stricter (adjusted) level: more
    assert stats.seeds_for_power(-1.0, sides=1) is None  # the wrong direction: no number of seeds supports it


# bootstrap_ci


def test_bootstrap_matches_scipy_percentile_bootstrap():
    values = [0.8137, 0.8421, 0.7915, 0.8803, 0.8268, 0.8011, 0.8574, 0.8232]  # off-grid: no ties among means
    low, high = stats.bootstrap_ci(values, resamples=100_000)
    ref = sps.bootstrap((values,), np.mean, method="percentile", n_resamples=100_000, rng=np.random.default_rng(1))
    # Monte Carlo noise of either estimate is below 0.01 sd here; a 2.5% -> 3.5% tail slip moves a bound ~0.04 sd
    sd = np.std(values, ddof=1)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.02 * sd)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.02 * sd)
    assert min(values) < low < np.mean(values) < high < max(values)


def test_bootstrap_is_deterministic_per_seed():
    assert stats.bootstrap_ci(ACC, seed=3) == stats.bootstrap_ci(ACC, seed=3)
    assert stats.bootstrap_ci(ACC, seed=3) != stats.bootstrap_ci(ACC, seed=4)


def test_bootstrap_drops_nan_and_needs_two_values():
    assert stats.bootstrap_ci([*ACC, math.nan]) == stats.bootstrap_ci(ACC)
    assert all(math.isnan(x) for x in stats.bootstrap_ci([0.5]))
    assert all(math.isnan(x) for x in stats.bootstrap_ci([]))


# verdicts


@pytest.mark.parametrize("low, high, p, expected", [
    (0.01, 0.03, 0.01, "better"),
    (-0.03, -0.01, 0.01, "worse"),
    (0.01, 0.03, 0.2, "inconclusive"),   # interval clear of 0 but not significant after Holm
    (-0.01, 0.03, 0.01, "inconclusive"),  # interval straddles 0
    (0.0, 0.03, 0.01, "inconclusive"),   # touching 0 is not above it
    (0.01, 0.03, 0.05, "inconclusive"),  # p == alpha is not below it
    (0.01, 0.03, math.nan, "inconclusive"),
    (math.nan, math.nan, 0.01, "inconclusive"),
])
def test_verdict(low, high, p, expected):
    assert stats.verdict(low, high, p) == expected


def test_verdict_alpha():
    assert stats.verdict(0.01, 0.03, 0.02, alpha=0.01) == "inconclusive"
    assert stats.verdict(0.01, 0.03, 0.02, alpha=0.05) == "better"


def test_a_run_collapsed_when_it_predicts_one_class_or_scores_what_that_would():
    import pandas as pd

    from suite.analysis import collapsed

    runs = pd.DataFrame({
        "dataset": ["mnist", "mnist", "mnist", "cifar10", "mnist", "mnist"],
        "test_acc": [0.5, 0.1135, 0.125, 0.1, 0.3, 0.9],
        "test_top_share": [0.95, None, None, None, 0.5, 0.11],
        "test_majority_share": [0.11, None, None, None, 0.3, 0.11],  # runs that logged it (a 200-image test subset here)
        "config.data.test_size": [None, None, None, None, 200, 200],
    })
    # 95% of predictions in one class; MNIST at its 1s share; 11.35% + 3.6 SE is not; CIFAR-10 at 10%;
    # a 200-image subset whose largest class is 30%, scored 30%; a trained run
    assert list(collapsed(runs)) == [True, True, False, True, True, False]
