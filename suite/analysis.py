"""The statistics of a report: pure functions over the tidy runs DataFrame (one row per run).

- `summarize`: per dataset x variant, n runs, n diverged, mean, std and a Student-t 95% CI.
- `compare`: each variant against the baseline, paired by seed (seed k saw the same init,
  data order and augmentation draws on both sides): mean difference, paired-t CI and p,
  Wilcoxon p, Cohen's d_z, Holm-adjusted p across the study, a verdict in words.
- `judge_claims`: each claim of the study file with its numbers and verdict.

Diverged runs stay in: their metrics are what the diverged network measured, and they are
counted in `n_diverged`. Values that are not finite (a diverged run's loss) are left out of
means and pairs, and `n` says how many remained.
"""

from __future__ import annotations

import math

import pandas as pd

from . import stats
from . import components
from .config import METRIC_DIRECTIONS
from .study import Study, baseline_for

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


def compare(runs: pd.DataFrame, study: Study, metric: str | None = None) -> pd.DataFrame:
    """Every variant against the baseline, per dataset; empty without a baseline."""
    metric = metric or study.metric
    columns = ["dataset", "variant", "baseline", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_t", "p_wilcoxon",
               "effect_size", "p_holm", "verdict", "seeds_needed"]
    if study.baseline is None:
        return pd.DataFrame(columns=columns)
    sign = 1 if METRIC_DIRECTIONS[metric] == "max" else -1
    rows = []
    for dataset in study.datasets:
        for variant in study.variants:
            baseline = baseline_for(study, variant)
            if variant == baseline or baseline not in study.variants:
                continue
            pairs = paired_values(runs, dataset, variant, baseline, metric)
            result = stats.paired_comparison(pairs["a"].to_numpy(dtype=float), pairs["b"].to_numpy(dtype=float))
            rows.append({"dataset": dataset, "variant": variant, "baseline": baseline, "n_pairs": result.n,
                         "mean_diff": result.mean_diff, "ci_low": result.low, "ci_high": result.high, "p_t": result.p,
                         "p_wilcoxon": result.wilcoxon_p, "effect_size": result.effect_size, "seeds_needed": result.seeds_needed,
                         "degenerate": _degenerate(runs, dataset, [variant, baseline])})
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "verdict")] + ["degenerate"])
    table["p_holm"] = stats.holm(table["p_t"].tolist()) if len(table) else []
    # a verdict reads differences as "positive is better": flip the interval for lower-is-better metrics
    table["verdict"] = [stats.verdict(*((r.ci_low, r.ci_high) if sign > 0 else (-r.ci_high, -r.ci_low)), r.p_holm)
                        for r in table.itertuples()]
    table.loc[table["degenerate"] != "", "verdict"] = "degenerate"  # collapsed runs are named, not averaged into a verdict
    table.loc[table["verdict"] != "inconclusive", "seeds_needed"] = None
    return table[columns + (["degenerate"] if "collapsed" in runs else [])]


def judge_claims(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per claim and dataset: the interval it was judged on and the verdict."""
    rows = []
    for claim in study.claims:
        for dataset in [claim.dataset] if claim.dataset else study.datasets:
            if claim.right is None:
                values = runs[(runs["dataset"] == dataset) & (runs["variant"] == claim.left)][claim.metric]
                ci = stats.mean_ci(values.to_numpy(dtype=float))
                verdict = stats.claim_verdict_threshold(ci.low, ci.high, claim.op, claim.value)
                detail = f"mean {fmt(ci.mean, claim.metric)}, 95% CI [{fmt(ci.low, claim.metric)}, {fmt(ci.high, claim.metric)}], n={ci.n}; threshold {fmt(claim.value, claim.metric)}"
                low, high, n = ci.low, ci.high, ci.n
            else:
                pairs = paired_values(runs, dataset, claim.left, claim.right, claim.metric)
                result = stats.paired_comparison(pairs["a"].to_numpy(dtype=float), pairs["b"].to_numpy(dtype=float))
                verdict = stats.claim_verdict_paired(result.low, result.high, claim.op, claim.value)
                margin = f"; margin {fmt(claim.value, claim.metric, diff=True)}" if claim.value else ""
                detail = (f"{claim.left} - {claim.right} = {fmt(result.mean_diff, claim.metric, diff=True)}, 95% CI "
                          f"[{fmt(result.low, claim.metric, diff=True)}, {fmt(result.high, claim.metric, diff=True)}], {result.n} paired seeds{margin}")
                low, high, n = result.low, result.high, result.n
            reason = _degenerate(runs, dataset, [claim.left] + ([claim.right] if claim.right else []))
            if reason:
                verdict, detail = "degenerate", f"{reason}; {detail}"
            rows.append({"claim": claim.text, "dataset": dataset, "metric": claim.metric, "n": n,
                         "ci_low": low, "ci_high": high, "verdict": verdict, "detail": detail})
    return pd.DataFrame(rows, columns=["claim", "dataset", "metric", "n", "ci_low", "ci_high", "verdict", "detail"])


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
        if matrices:
            found[dataset, variant] = (sum(matrices), len(matrices))
    return found


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
