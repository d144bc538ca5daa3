"""The statistics of a report: pure functions over the tidy runs DataFrame (one row per run).

- `summarize`: per dataset x variant, n runs, n diverged, mean, std and a Student-t 95% CI.
- `family`: the study's tests as one Holm family. Each variant against its baseline, paired by
  seed (seed k saw the same init, data order and augmentation draws on both sides): mean
  difference, paired-t p, Wilcoxon p, Cohen's d_z; each claim as a one-sided t-test against its
  margin or threshold. All p-values are Holm-adjusted together, intervals are drawn at each
  test's adjusted level, and verdicts and "seeds needed" follow from those.

Diverged runs stay in: their metrics are what the diverged network measured, and they are
counted in `n_diverged`. Values that are not finite (a diverged run's loss) are left out of
means and pairs, and `n` says how many remained.

Beside it: `results.py` reads a study's runs from MLflow (or a committed report's runs.csv) into
that DataFrame; `stats.py` holds the statistics over arrays of per-seed values it calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import stats
from .. import components
from ..spec.config import METRIC_DIRECTIONS
from ..spec.study import Study, baseline_for

SUMMARY_EXTRAS = ("val_acc", "val_loss", "train_acc", "epochs_trained", "train_seconds")
COLLAPSE_SHARE = 0.9  # a run whose test predictions fall more than this much in one class has collapsed ...
COLLAPSE_SE = 3  # ... as has one whose accuracy is within this many binomial standard errors of the majority class's share


def collapsed(runs: pd.DataFrame) -> pd.Series:
    """Per run: did it collapse to (about) one class? Runs that logged their predictions' top share are judged on it
    too; older runs on accuracy alone, against the full test split's majority share (its dataset's registry record)."""
    if "test_acc" not in runs or runs.empty:
        return pd.Series(False, index=runs.index)
    full = runs["config.data.test_size"].isna() if "config.data.test_size" in runs else pd.Series(True, index=runs.index)
    split = runs["dataset"].map(lambda d: _test_split(d) or (math.nan, math.nan))
    size = runs["config.data.test_size"].where(~full, split.map(lambda s: s[0])) if "config.data.test_size" in runs else split.map(lambda s: s[0])
    majority = runs.get("test_majority_share", pd.Series(math.nan, index=runs.index))
    majority = majority.where(majority.notna(), split.map(lambda s: s[1]).where(full))
    se = (majority * (1 - majority) / size.astype(float)) ** 0.5
    top = runs.get("test_top_share", pd.Series(math.nan, index=runs.index))
    return ((top > COLLAPSE_SHARE) | ((runs["test_acc"] - majority).abs() <= COLLAPSE_SE * se)).fillna(False).astype(bool)


def _test_split(dataset: str) -> tuple | None:
    """(examples, share of the largest class) of a dataset's full test split, where its record knows them."""
    try:
        return components.get("dataset", dataset).test_split
    except ValueError:  # a plug-in's dataset whose plug-in this process has not loaded
        return None


def _degenerate(runs: pd.DataFrame, dataset: str, sides: list[str]) -> str:
    """Why a comparison or claim over these variants is degenerate ('' when it is not): at least half the seeds of a side collapsed."""
    if "collapsed" not in runs:
        return ""
    reasons = []
    for variant in sides:
        part = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant)]
        down = int(part["collapsed"].sum())
        if len(part) and down and 2 * down >= len(part):
            reasons.append(f"{down} of {len(part)} seeds of {variant} collapsed to one class")
    return "; ".join(reasons)


def summarize(runs: pd.DataFrame, metric: str, grid_axes=()) -> pd.DataFrame:
    rows = []
    # in the order the runs come (results.collect sorts them as the study file lists datasets and variants)
    for (dataset, variant), group in runs.groupby(["dataset", "variant"], observed=True, sort=False):
        ci = stats.mean_ci(group[metric].to_numpy(dtype=float))
        row = {"dataset": dataset, "variant": variant, **{a: group[a].iloc[0] for a in grid_axes},
               "n": len(group), "n_diverged": int(group["diverged"].sum()),
               **({"n_collapsed": int(group["collapsed"].sum())} if "collapsed" in group else {}),
               "mean": ci.mean, "std": ci.std, "ci_low": ci.low, "ci_high": ci.high,
               "min": group[metric].min(), "max": group[metric].max()}
        for extra in SUMMARY_EXTRAS:
            if extra in group and extra != metric:
                row[f"{extra}_mean"] = group[extra].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def paired_values(runs: pd.DataFrame, dataset: str, a: str, b: str, metric: str) -> pd.DataFrame:
    """Columns seed, a, b: the metric of both variants for each seed both have."""
    part = runs[runs["dataset"] == dataset]
    left = part[part["variant"] == a][["seed", metric]].rename(columns={metric: "a"})
    right = part[part["variant"] == b][["seed", metric]].rename(columns={metric: "b"})
    return left.merge(right, on="seed").sort_values("seed")


@dataclass(frozen=True)
class Family:
    """A study's tests, Holm-adjusted together: every comparison with its baseline and every claim."""
    comparisons: pd.DataFrame
    claims: pd.DataFrame


COMPARISON_COLUMNS = ["dataset", "variant", "baseline", "n_pairs", "mean_diff", "confidence", "ci_low", "ci_high", "p_t",
                      "p_wilcoxon", "effect_size", "p_holm", "verdict", "seeds_needed"]
CLAIM_COLUMNS = ["claim", "dataset", "metric", "n", "estimate", "confidence", "ci_low", "ci_high", "p", "p_holm",
                 "verdict", "seeds_needed", "detail"]


def family(runs: pd.DataFrame, study: Study, alpha: float = stats.ALPHA) -> Family:
    """Every comparison (two-sided paired t-test) and every claim (one-sided t-test against its margin or threshold)
    as one family: Holm-adjusted together, each interval at its adjusted level (`stats.holm_adjust`), "seeds needed"
    for 80% power at that level. A comparison's interval is two-sided at 1 - level; a claim's bounds are each one-sided
    at 1 - level, so a claim is supported exactly when its p_holm < alpha. A claim is contradicted when the opposite
    one-sided test (p' = the other tail), put in the family in the claim's place, has a Holm-adjusted p' < alpha."""
    comparisons, claims = _comparisons(runs, study), _claims(runs, study)
    p = comparisons["p_t"].tolist() + claims["p"].tolist()
    adjusted, levels = stats.holm_adjust(p, alpha)
    cut = len(comparisons)
    opposite = []  # per claim: (Holm-adjusted p', level) of "beyond the margin the other way", in the claim's place
    for j, p_other in enumerate(claims["p_opposite"]):
        swapped_adjusted, swapped_levels = stats.holm_adjust(p[:cut + j] + [p_other] + p[cut + j + 1:], alpha)
        opposite.append((swapped_adjusted[cut + j], swapped_levels[cut + j]))
    comparisons = _judge_comparisons(comparisons, adjusted[:cut], levels[:cut], study.metric, alpha)
    if "collapsed" not in runs:  # nothing was checked for collapse: no column that would claim none did
        comparisons = comparisons.drop(columns="degenerate")
    return Family(comparisons, _judge_claims(claims, adjusted[cut:], levels[cut:], opposite, alpha))


def _comparisons(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Every variant against its baseline, per dataset, unadjusted; empty without a baseline."""
    rows = []
    for dataset in study.datasets if study.baseline is not None else ():
        for variant in study.variants:
            baseline = baseline_for(study, variant)
            if variant == baseline or baseline not in study.variants:
                continue
            pairs = paired_values(runs, dataset, variant, baseline, study.metric)
            result = stats.paired_comparison(pairs["a"].to_numpy(dtype=float), pairs["b"].to_numpy(dtype=float))
            rows.append({"dataset": dataset, "variant": variant, "baseline": baseline, "n_pairs": result.n,
                         "mean_diff": result.mean_diff, "std_diff": result.std_diff, "p_t": result.p,
                         "p_wilcoxon": result.wilcoxon_p, "effect_size": result.effect_size,
                         "degenerate": _degenerate(runs, dataset, [variant, baseline])})
    columns = ["dataset", "variant", "baseline", "n_pairs", "mean_diff", "std_diff", "p_t", "p_wilcoxon", "effect_size", "degenerate"]
    return pd.DataFrame(rows, columns=columns)


def _judge_comparisons(table: pd.DataFrame, adjusted: list, levels: list, metric: str, alpha: float) -> pd.DataFrame:
    table = table.assign(p_holm=adjusted, confidence=[1 - a for a in levels])
    bounds = [stats.t_interval(r.mean_diff, r.std_diff, r.n_pairs, r.confidence) for r in table.itertuples()]
    table["ci_low"], table["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    sign = 1 if METRIC_DIRECTIONS[metric] == "max" else -1
    # a verdict reads differences as "positive is better": flip the interval for lower-is-better metrics
    table["verdict"] = [stats.verdict(*((r.ci_low, r.ci_high) if sign > 0 else (-r.ci_high, -r.ci_low)), r.p_holm, alpha)
                        for r in table.itertuples()]
    table.loc[table["degenerate"] != "", "verdict"] = "degenerate"  # collapsed runs are named, not averaged into a verdict
    table["seeds_needed"] = [stats.seeds_for_power(r.effect_size, alpha=level) if r.verdict == "inconclusive" else None
                             for r, level in zip(table.itertuples(), levels)]
    return table[COMPARISON_COLUMNS + ["degenerate"]]


def _claims(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per claim and dataset: its estimate, spread and one-sided p, unadjusted."""
    rows = []
    for claim in study.claims:
        for dataset in [claim.dataset] if claim.dataset else study.datasets:
            greater = claim.op in stats.ABOVE
            if claim.right is None:  # A op value: is A's mean beyond the value?
                values = runs[(runs["dataset"] == dataset) & (runs["variant"] == claim.left)][claim.metric]
                ci = stats.mean_ci(values.to_numpy(dtype=float))
                estimate, std, n, null = ci.mean, ci.std, ci.n, claim.value
            else:  # A op B by at least margin: is the paired difference A - B beyond +-margin?
                pairs = paired_values(runs, dataset, claim.left, claim.right, claim.metric)
                result = stats.paired_comparison(pairs["a"].to_numpy(dtype=float), pairs["b"].to_numpy(dtype=float))
                estimate, std, n, null = result.mean_diff, result.std_diff, result.n, claim.value if greater else -claim.value
            rows.append({"claim": claim.text, "dataset": dataset, "metric": claim.metric, "n": n, "estimate": estimate,
                         "std": std, "null": null, "greater": greater, "op": claim.op, "left": claim.left, "right": claim.right,
                         "p": stats.one_sided_p(estimate, std, n, null, greater),
                         "p_opposite": stats.one_sided_p(estimate, std, n, null, not greater),
                         "degenerate": _degenerate(runs, dataset, [claim.left] + ([claim.right] if claim.right else []))})
    columns = ["claim", "dataset", "metric", "n", "estimate", "std", "null", "greater", "op", "left", "right", "p", "p_opposite",
               "degenerate"]
    return pd.DataFrame(rows, columns=columns)


def _judge_claims(table: pd.DataFrame, adjusted: list, levels: list, opposite: list, alpha: float) -> pd.DataFrame:
    rows = []
    for r, p_holm, level, (p_opposite_holm, opposite_level) in zip(table.itertuples(), adjusted, levels, opposite):
        verdict = "supported" if p_holm < alpha else "contradicted" if p_opposite_holm < alpha else "inconclusive"
        if verdict == "contradicted":  # the bounds of the test that decided: the opposite one's level
            level = opposite_level
        low, high = stats.t_interval(r.estimate, r.std, r.n, 1 - 2 * level)  # each bound one-sided at 1 - level
        d, paired = r.metric, isinstance(r.right, str)
        shown = f"{pct(1 - level)} one-sided bounds"
        if paired:
            margin = f"; margin {fmt(abs(r.null), d, diff=True)}" if r.null else ""
            detail = (f"{r.left} - {r.right} = {fmt(r.estimate, d, diff=True)}, [{fmt(low, d, diff=True)}, "
                      f"{fmt(high, d, diff=True)}] ({shown}), {r.n} paired seeds{margin}")
        else:
            detail = f"mean {fmt(r.estimate, d)}, [{fmt(low, d)}, {fmt(high, d)}] ({shown}), n={r.n}; threshold {fmt(r.null, d)}"
        detail += f"; p = {r.p:.3g}, p_Holm = {p_holm:.3g}"
        if verdict == "contradicted":
            detail += f"; the opposite test's p_Holm = {p_opposite_holm:.3g}"
        if r.degenerate:
            verdict, detail = "degenerate", f"{r.degenerate}; {detail}"
        toward = (r.estimate - r.null) / r.std * (1 if r.greater else -1) if r.std else math.nan
        seeds = stats.seeds_for_power(toward, alpha=level, sides=1) if verdict == "inconclusive" else None
        rows.append({"claim": r.claim, "dataset": r.dataset, "metric": r.metric, "n": r.n, "estimate": r.estimate,
                     "confidence": 1 - level, "ci_low": low, "ci_high": high, "p": r.p, "p_holm": p_holm,
                     "verdict": verdict, "seeds_needed": seeds, "detail": detail})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def pct(confidence: float) -> str:
    """A confidence level as a short percentage: 0.95 -> '95%', 0.99166 -> '99.2%'."""
    return f"{100 * confidence:.3g}%" if not math.isnan(confidence) else "n/a"


def fmt(value: float, metric: str, diff: bool = False) -> str:
    """Accuracies in percent (differences in percentage points), everything else to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric.endswith("_acc"):
        return f"{100 * value:+.2f} pp" if diff else f"{100 * value:.2f}%"
    return f"{value:+.4g}" if diff else f"{value:.4g}"


def confusions(runs: pd.DataFrame, errors: dict) -> dict:
    """(dataset, variant) -> (test confusion matrix summed over the seeds that logged one, number of those seeds)."""
    import numpy as np

    found = {}
    for (dataset, variant), group in runs.groupby(["dataset", "variant"], observed=True, sort=False):
        matrices = [np.array(errors[r]["confusion"]) for r in group["run_id"] if r in errors]
        matrices = [m for m in matrices if m.shape == matrices[0].shape]  # (seeds whose labels had another class count: apart)
        if matrices:
            found[dataset, variant] = (sum(matrices), len(matrices))
    return found


def read_per_class(path) -> pd.DataFrame:
    """A report's per_class.csv as `per_class` made it. Its shares are counts over `n` written at 6 significant
    digits: each is put back to that exact count / n (a rebuild from it showed 4460 / 4910, 90.84%, as 0.90835, 90.83%).
    Below 100,000 examples the 6 digits tell the counts apart; past that a share stays as written."""
    table = pd.read_csv(path)
    if not {"n", "accuracy", "confused_share"} <= set(table.columns):  # (not as `per_class` writes it: shown as it is)
        return table
    exact = table["n"] < 100_000
    for column in ("accuracy", "confused_share"):
        table.loc[exact, column] = (table.loc[exact, column] * table.loc[exact, "n"]).round() / table.loc[exact, "n"]
    return table


def per_class(runs: pd.DataFrame, errors: dict) -> pd.DataFrame:
    """Per dataset, variant and true class, over all seeds: test examples, accuracy, and the class most often predicted instead."""
    rows = []
    for (dataset, variant), (matrix, seeds) in confusions(runs, errors).items():
        for c, row in enumerate(matrix):
            n, wrong = int(row.sum()), row.copy()
            wrong[c] = 0
            rows.append({"dataset": dataset, "variant": variant, "class": c, "seeds": seeds, "n": n,
                         "accuracy": row[c] / n if n else math.nan,
                         "confused_with": int(wrong.argmax()) if wrong.sum() else None,
                         "confused_share": wrong.max() / n if n else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "variant", "class", "seeds", "n", "accuracy", "confused_with", "confused_share"])
