"""What a study's report says: its blocks of text and tables (see `render` for the block kinds)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pandas as pd

from .. import analysis, components, plural, provenance, tracking
from ..errors import OptionError
from ..spec.config import METRIC_DIRECTIONS, task_of
from ..spec.grid import format_value
from ..spec.study import Study, commands, make_command

UI_URL_ENV = "SUITE_UI_URL"  # where reports link run ids to (e.g. http://127.0.0.1:5000, `make ui`'s default); unset: no links


def ui_url(cli_value: str | None = None) -> str | None:
    """The MLflow UI reports link to: --ui-url, else $SUITE_UI_URL, else none (committed reports carry no dead links)."""
    value = cli_value or os.environ.get(UI_URL_ENV) or None
    try:
        host = urllib.parse.urlsplit(value).netloc if value else ""
    except ValueError:  # an unclosed [IPv6 address
        host = ""
    if value and (not value.lower().startswith(("http://", "https://")) or not host or not value.isprintable() or " " in value):
        raise OptionError(f"the MLflow UI's URL is http(s)://HOST:PORT, not {value[:60]!r} (--ui-url or ${UI_URL_ENV})")
    return value.rstrip("/") if value else None


def out_dir(study: Study, smoke: bool, reports_dir: Path) -> Path:
    return reports_dir / "smoke" / study.name if smoke else reports_dir / study.name


def blocks(study, smoke, results, summary, comparisons, claims, figures, ui, throwaway: bool = False) -> list[tuple]:
    runs, metric = results.runs, study.metric
    f = lambda v, diff=False: analysis.fmt(v, metric, diff)  # noqa: E731
    direction = "higher" if METRIC_DIRECTIONS[metric] == "max" else "lower"
    blocks = [("h1", f"{study.name}" + (" (smoke)" if smoke else "")), ("p", f"**Question.** {study.question}")]
    if study.description:
        blocks.append(("p", study.description.strip()))
    blocks.append(("p", f"Metric: `{metric}` ({direction} is better). {len(runs)} of {results.expected} runs finished"
                        f"{', ' + str(int(runs['diverged'].sum())) + ' diverged' if runs['diverged'].any() else ''}. "
                        f"Reproduce: `{commands(study, smoke)[0]}` (trains what is missing, then writes this report"
                        + (f"; with its plug-ins {', '.join(f'`{m}`' for m in study.plugins)} importable: see Provenance"
                           if study.plugins else "") + ")."))
    missing, failed = results.expected - len(runs), results.failed
    if failed:
        name, error = next(iter(failed.items()))
        rest = missing - len(failed)
        blocks.append(("p", f"**Incomplete:** {plural(len(failed), 'run')} of this study failed (first: `{name}`: {error}); the "
                            f"MLflow UI shows each one's error (tag `suite.error`) and, for an exception raised while it "
                            f"trained, its traceback (artifact `traceback.txt`); running the study again retrains them."
                            + (f" {plural(rest, 'more run')} {'is' if rest == 1 else 'are'} not in the store yet." if rest > 0 else "")))
    elif missing > 0:
        blocks.append(("p", f"**Incomplete:** {missing} runs of this study are not in the store yet."))
    if results.unmatched:
        blocks.append(("p", f"Note: {results.unmatched} finished runs in this experiment belong to an earlier version of the study file and are left out."))

    blocks.append(("h2", "Verdicts"))
    if not comparisons.empty:
        rows = [[r.dataset, f"{r.variant} vs {r.baseline}", f(r.mean_diff, True), _interval(r, f),
                 f"{r.p_holm:.3g}", f"**{r.verdict}**" + _seeds(r) + (f" ({r.degenerate})" if r.verdict == "degenerate" else "")
                 + (" (no seed finished on both sides)" if r.n_pairs == 0 else "")] for r in comparisons.itertuples()]
        blocks.append(("table", ["dataset", "comparison", "difference", "CI (Holm level)", "p (Holm)", "verdict"], rows))
    if not claims.empty:
        rows = [[r.claim, r.dataset, r.detail, f"**{r.verdict}**" + _seeds(r) + (" (nothing finished to test)" if r.n == 0 else "")]
                for r in claims.itertuples()]
        blocks.append(("table", ["claim", "dataset", "numbers", "verdict"], rows))
    if not (comparisons.empty and claims.empty):
        tests = len(comparisons) + len(claims)
        blocks.append(("p", f"One family of {tests} test{'s' if tests > 1 else ''}: every comparison and claim of this study is "
                            "Holm-adjusted together (family-wise error 5%), and each interval is drawn at its test's adjusted "
                            "level, so it excludes the null exactly when its Holm-adjusted p < 0.05."))
    if comparisons.empty and claims.empty:
        blocks.append(("p", "This study names no baseline and no claims; see the summary."))

    blocks.append(("h2", "Summary"))
    axes = list(study.grid_axes)
    classes = has_classes(study)  # (a regression study's collapsed and val acc columns said 0 and n/a)
    val_acc = classes and metric != "val_acc"  # (the study's metric has its own columns)
    header = ["dataset", "variant", *axes, "params", "n", "diverged", *(["collapsed"] if classes else []), f"mean {metric}", "std",
              "95% CI (t)", *(["val acc"] if val_acc else []), "epochs", "train s"]
    shown = lambda variant, axis: format_value(dict(study.points[variant])[axis])  # noqa: E731  (null as 'none', not NaN)
    rows = [[r["dataset"], r["variant"], *[shown(r["variant"], a) for a in axes], f"{r['params']:,}", r["n"], r["n_diverged"],
             *([r.get("n_collapsed", 0)] if classes else []), f(r["mean"]), f(r["std"], False).lstrip("+"),
             f"[{f(r['ci_low'])}, {f(r['ci_high'])}]", *([analysis.fmt(r.get("val_acc_mean", float("nan")), "val_acc")] if val_acc else []),
             f"{r.get('epochs_trained_mean', float('nan')):.1f}", f"{r.get('train_seconds_mean', float('nan')):.1f}"]
            for _, r in summary.iterrows()]
    blocks.append(("table", header, rows))

    if not comparisons.empty:
        if study.baselines:  # per slice: the baseline variant at each variant's own grid point
            blocks.append(("h2", f"Comparisons with the baseline `{study.baseline.split(',')[0]}` of each slice"))
            blocks.append(("p", f"The grid crosses the variants, so each variant is compared with `{study.baseline.split(',')[0]}` "
                                "at its own grid point (same values of every grid axis); each row names the baseline it uses."))
        else:
            blocks.append(("h2", f"Comparisons with the baseline `{study.baseline}`"))
        blocks.append(("p", "Paired by seed: seed k of a variant against seed k of the baseline (same init, data-order and "
                            "augmentation draws). p: two-sided paired t-test, Holm-adjusted together with the study's claims; "
                            "CI: paired Student-t at the test's adjusted level (0.05 / (m - r) for the test of rank r among m, "
                            "lower where Holm's running maximum raised its adjusted p); Wilcoxon signed-rank p for reference. Effect size: Cohen's d_z "
                            "(mean difference / std of differences). Verdict: better/worse when the CI excludes 0 and the "
                            "Holm-adjusted p < 0.05, else inconclusive, with the seeds a paired t-test at that adjusted level "
                            "would need for 80% power at the observed effect"
                            + ("; *degenerate* when at least half the seeds of either side collapsed to one class (more than 90% "
                               "of the test predictions in one class, or an accuracy within 3 binomial standard errors of the "
                               "largest class's share): such runs are named, not averaged into a verdict." if classes else ".")))
        rows = [[r.dataset, r.variant, r.n_pairs, f(r.mean_diff, True), _interval(r, f),
                 f"{r.p_t:.3g}", f"{r.p_holm:.3g}", f"{r.p_wilcoxon:.3g}", f"{r.effect_size:.2f}", r.verdict,
                 "" if pd.isna(r.seeds_needed) else int(r.seeds_needed)] for r in comparisons.itertuples()]
        blocks.append(("table", ["dataset", "variant", "pairs", "mean diff", "CI (Holm level)", "p (t)", "p (Holm)", "p (Wilcoxon)", "d_z", "verdict", "seeds needed"], rows))
    if not claims.empty:
        blocks.append(("p", "Claims: each is a one-sided t-test (paired for `A > B`, one-sample for `A >= value`) of H1 \"beyond the "
                            "claimed margin or threshold\", Holm-adjusted with the comparisons; its bounds are one-sided at the "
                            "adjusted level. *Supported* when the bound clears the margin or threshold (Holm-adjusted p < 0.05), "
                            "*contradicted* when the opposite one-sided test, Holm-adjusted in the claim's place, is below 0.05 "
                            "(its bound, shown then, lies on the wrong side), "
                            + ("*degenerate* when at least half the seeds of a side collapsed, " if classes else "")
                            + "else *inconclusive* (with the seeds the one-sided test would need for 80% power). `suite check` "
                            "exits 1 on a contradicted claim."))

    blocks.append(("h2", "Figures"))
    for name, caption in figures:
        blocks.append(("img", name, caption))

    blocks.append(("h2", "Provenance"))
    blocks.append(("list", _provenance(study, smoke, runs, results.source, results.packed, throwaway)))
    blocks.append(("h2", "Runs"))
    if ui and results.experiment_id:
        link = tracking.runs_url(ui, results.experiment_id)
        blocks.append(("p", f"[All runs of this study in the MLflow UI]({link}); each run key links to its run."))
    else:
        blocks.append(("p", f"Run keys identify runs in any store: `{commands(study, smoke)[0]}` recreates the runs that a store "
                            f"lacks (none if it holds them all), `make ui` then prints the link to them, and `suite evaluate KEY` "
                            f"reloads one run's weights. Links to runs: build the report with `--ui-url` or `${UI_URL_ENV}`."))
    rows = [[r.dataset, r.variant, r.seed, f(getattr(r, metric)), "yes" if r.diverged else "", *(["yes" if r.collapsed else ""] if classes else []),
             int(r.epochs_trained), f"{r.train_seconds:.1f}", _run_link(ui, results.experiment_id, r.run_id, r.run_key)] for r in runs.itertuples()]
    blocks.append(("table", ["dataset", "variant", "seed", metric, "diverged", *(["collapsed"] if classes else []), "epochs", "train s", "run key"], rows))
    return blocks


def _interval(r, f) -> str:
    """A comparison's interval with its confidence level, e.g. '[+1.22 pp, +1.67 pp] (99.2%)'."""
    return f"[{f(r.ci_low, True)}, {f(r.ci_high, True)}] ({analysis.pct(r.confidence)})"


def _seeds(r) -> str:
    return f" (~{int(r.seeds_needed)} seeds to resolve)" if pd.notna(r.seeds_needed) else ""


def has_classes(study: Study) -> bool:
    """Whether the study's runs have classes to collapse into (a *degenerate* verdict, accuracy columns): a
    classification dataset among its datasets."""
    return any(task_of(dataset) == "classification" for dataset in study.datasets)


def _duration(seconds: float) -> str:
    """Minutes from one on; seconds below (a smoke study's '0.0 min')."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _run_link(ui: str | None, experiment_id: str | None, run_id: str, run_key: str) -> str:
    return f"[`{run_key}`]({tracking.run_url(ui, experiment_id, run_id)})" if ui and experiment_id else f"`{run_key}`"


def _short(commit: str) -> str:
    """A commit hash cut to 12 characters; anything else (provenance.NO_GIT) as it is."""
    return commit[:12] if len(commit) == 40 else commit


def _provenance(study: Study, smoke: bool, runs: pd.DataFrame, source: str = "store", packed: int = 0,
                throwaway: bool = False) -> list[str]:
    commits = sorted(set(runs["git_commit"]))
    dirty = int(runs["git_dirty"].sum())
    devices = sorted(set(runs["device"]))
    items = [f"Read from this report's own `runs.csv` and `curves.csv` (`{make_command('report', study, smoke, '--from-runs')}`), not from the "
             "MLflow store that holds the runs: the metrics as those tables give them (6 significant digits)."] if source != "store" else []
    items += [
        f"Rebuild this report: its runs were in a throw-away store (`make smoke`), deleted when it ended: "
        f"`{commands(study, smoke)[0]}` trains them into the default store, which keeps them, and writes this report again"
        if throwaway else
        f"Rebuild this report: `{commands(study, smoke)[1]}`"
        + (f" (from a store that holds its runs; from these tables: `{make_command('report', study, smoke, '--from-runs')}`)"
           if source != "store" else "") + f"; recreate its runs: `{commands(study, smoke)[0]}`",
        f"Study file: `{study.path}` (sha256 `{study.file_sha256[:16]}`)",
        f"Code: report built at commit `{_short(provenance.git_commit())}`{' (dirty tree)' if provenance.git_dirty() else ''}; "
        f"runs trained at {len(commits)} commit(s): {', '.join(f'`{_short(c)}`' for c in commits)}"
        + (f"; {dirty} run(s) from a dirty tree" if dirty else ""),
        "Packages: " + ", ".join(f"{k} {v}" for k, v in provenance.versions().items())
        + (f"; plug-ins: {'; '.join(sorted(set(runs['plugins'].dropna())))}" if "plugins" in runs else ""),
        "Devices: " + "; ".join(devices),
        *([f"**Warning:** these runs were computed on {len(devices)} kinds of device (see Devices): GPU models and CPU "
           "kernels (AVX2, AVX512, ...) round sums differently, so a run key may give other numbers on each "
           "(README \"Reproducibility\")"] if len(devices) > 1 else []),
        "Data: " + ", ".join(f"{d} `{fp}`" for d, fp in sorted(set(zip(runs["dataset"], runs["data_fingerprint"])))),
        f"Runs: {len(runs)}, total training time {_duration(runs['train_seconds'].sum())}",
    ]
    if packed:
        items.append(f"Packed: {packed} of these runs trained as members of packed models (`--pack`): same draws as unpacked runs, "
                     "last-bit different sums, so they have their own run keys and are compared only with each other; "
                     "a pack's members share its training time")
    if len(commits) > 1:
        items.insert(3, f"**Warning:** this study mixes runs from {len(commits)} code versions.")
    return items


def headline(study: Study, comparisons: pd.DataFrame, claims: pd.DataFrame) -> list[str]:
    f = lambda v: analysis.fmt(v, study.metric, True)  # noqa: E731
    lines = [f"{r.variant} vs {r.baseline} ({r.dataset}): {r.verdict}, {f(r.mean_diff)} [{f(r.ci_low)}, {f(r.ci_high)}]"
             for r in comparisons.itertuples()]
    return lines + [f"claim '{r.claim}' ({r.dataset}): {r.verdict}" for r in claims.itertuples()]


def error_blocks(study, smoke, results, classes: pd.DataFrame, figures: list[tuple[str, str]], kept: bool = False) -> list[tuple]:
    """'Where the errors are': per-class test accuracy, confusion matrices and misclassified images, over seeds.
    `kept`: `classes` and the figures are the report's own, kept by a rebuild from its runs.csv (which has no predictions)."""
    runs = results.runs
    if "test_acc" not in runs or not runs["test_acc"].notna().any():
        return []  # regression: no classes
    blocks = [("h2", "Where the errors are")]
    missing = 0 if kept else int((~runs["run_id"].isin(results.errors or {})).sum())
    older = missing - results.gone - results.unreadable  # recorded before the suite kept test predictions
    why = " ".join(filter(None, [
        f"{results.gone} of {len(runs)} runs have no artifacts in the store at all (for a sqlite store: `mlruns/` beside its "
        "file was moved or deleted?)." if results.gone and not kept else "",
        f"{results.unreadable} of {len(runs)} runs' test_errors.json or misclassified.npz cannot be read (damaged or edited; "
        "the report's build warned of each)." if results.unreadable and not kept else "",
        f"{older} of {len(runs)} runs logged no predictions (recorded before the suite kept them: "
        f"`{commands(study, smoke, '--force')[0]}` retrains them with them)." if older > 0 and not kept else ""]))
    if classes.empty and not (results.gone or results.unreadable):  # (the committed reports' runs, all older)
        return blocks + [("p", f"None of these {len(runs)} runs logged its test predictions (runs recorded before the suite kept "
                               f"them do not): `{commands(study, smoke, '--force')[0]}` retrains them with per-class accuracy, "
                               "confusion matrices and misclassified examples.")]
    if classes.empty:
        return blocks + [("p", f"No test predictions to show. {why}")]
    labels = sorted(classes["class"].unique())
    name = lambda dataset, label: components.class_name(dataset, int(label))  # noqa: E731  (CIFAR-10's 3: cat)
    rows = [[dataset, variant, int(group["seeds"].iloc[0]), *[analysis.fmt(a, "test_acc") for a in group["accuracy"]],
             f"{name(dataset, worst['class'])} → {name(dataset, worst['confused_with'])} ({100 * worst['confused_share']:.1f}%)"
             if pd.notna(worst["confused_with"]) else "-"]
            for (dataset, variant), group in classes.groupby(["dataset", "variant"], observed=True, sort=False)
            for worst in [group.loc[group["confused_share"].idxmax()]]]
    named = {components.class_names(d) for d in classes["dataset"].unique()}  # one table: names where its datasets share them
    shared, first = named.pop() if len(named) == 1 else None, classes["dataset"].iloc[0]
    columns = [name(first, c) if shared else f"class {c}" for c in labels]
    blocks.append(("p", "Test accuracy per true class, over every seed's test predictions (`per_class.csv`); the last column "
                        "names the most frequent confusion (true → predicted, share of that class's test examples)."
                        + (f" Left out: {why}" if missing else "")
                        + (" Kept as this report had them: its runs.csv, which this rebuild read, holds no test predictions." if kept else "")))
    blocks.append(("table", ["dataset", "variant", "seeds", *columns, "most confused"], rows))
    return blocks + [("img", name, caption) for name, caption in figures]
