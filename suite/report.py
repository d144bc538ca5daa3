"""Write a study's report from MLflow alone: the one module that writes report files.

    suite report regularization        # or: make report STUDY=regularization

`reports/<study>/` gets report.md, a self-contained report.html (figures embedded),
summary.csv, comparisons.csv, claims.csv, runs.csv, curves.csv and the figures as PNG;
the same files are attached to a per-study MLflow "summary" run. `reports/index.md` and
`index.html` list every study. Smoke reports go to `reports/smoke/<study>/`. Nothing here
depends on wall-clock time, so rebuilding from the same store gives identical tables.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path

import pandas as pd

from . import analysis, provenance, tracking
from .config import METRIC_DIRECTIONS, Execution
from .errors import SuiteError
from .results import Results, collect, from_report
from .data import INPUTS
from .models import parameter_count
from .study import Study, expand, format_value

FIG_DPI = 110
UI_URL_ENV = "SUITE_UI_URL"  # where reports link run ids to (e.g. http://127.0.0.1:5000, `make ui`'s default); unset: no links


def ui_url(cli_value: str | None = None) -> str | None:
    """The MLflow UI reports link to: --ui-url, else $SUITE_UI_URL, else none (committed reports carry no dead links)."""
    value = cli_value or os.environ.get(UI_URL_ENV) or None
    return value.rstrip("/") if value else None


def commands(study: Study, smoke: bool, *flags: str) -> tuple[str, str]:
    """(recreate the runs, rebuild the report), with the smoke flag where the report is a smoke one, and `flags`."""
    args = " ".join((*(["--smoke"] if smoke else []), *flags))
    extra = f" ARGS={args}" if len(flags) + smoke == 1 else f' ARGS="{args}"' if args else ""
    return f"make study STUDY={study.name}{extra}", f"make report STUDY={study.name}{extra}"


def out_dir(study: Study, smoke: bool, reports_dir: Path) -> Path:
    return reports_dir / "smoke" / study.name if smoke else reports_dir / study.name


def claim_table(study: Study, smoke: bool, uri: str, storage: str | None = None, execution: Execution | None = None) -> pd.DataFrame:
    study = _with_tuning(study, smoke, storage)
    results = _collect(study, smoke, uri, execution)
    return analysis.judge_claims(results.runs, study)


def _with_tuning(study: Study, smoke: bool, storage: str | None) -> Study:
    if study.tune is None:
        return study
    from . import tune

    return tune.tuned_study(study, smoke, tune.storage_url(storage))


def _collect(study: Study, smoke: bool, uri: str, execution: Execution | None) -> Results:
    """The study's finished runs, each marked `collapsed` or not (see analysis.collapsed)."""
    results = collect(study, smoke, uri, execution)
    results.runs["collapsed"] = analysis.collapsed(results.runs)
    if results.runs.empty:
        how = f"suite study {study.name}" + (" --smoke" if smoke else "")
        raise SuiteError(f"no finished runs of study '{study.name}'{' (smoke)' if smoke else ''} in {uri}; run `{how}` first")
    return results


def build(study: Study, smoke: bool, uri: str, reports_dir: Path, storage: str | None = None,
          execution: Execution | None = None, ui: str | None = None, from_runs: bool = False) -> Path:
    """Collect, analyse, plot and write everything; returns the path of report.md.

    `execution` (device, threads) picks which of the study's runs: those computed that way (default: 1 CPU thread).
    `ui`: the MLflow UI's base URL that run ids link to (None: no links, the commands that recreate the runs instead).
    `from_runs`: read the runs from the report's own runs.csv / curves.csv instead of the store (a committed report
    whose runs live in another store); nothing is written to the store then.
    """
    if from_runs:
        results = from_report(study, out_dir(study, smoke, reports_dir))
        results.runs["collapsed"] = analysis.collapsed(results.runs)
    else:
        study = _with_tuning(study, smoke, storage)
        results = _collect(study, smoke, uri, execution)
    runs, metric = results.runs, study.metric
    summary = _with_parameters(study, smoke, analysis.summarize(runs, metric, study.grid_axes))
    comparisons = analysis.compare(runs, study)
    claims = analysis.judge_claims(runs, study)
    folder = out_dir(study, smoke, reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    classes = analysis.per_class(runs, results.errors)
    tables = {"summary": summary, "comparisons": comparisons, "claims": claims, "runs": runs, "curves": results.curves,
              **({"per_class": classes} if not classes.empty else {})}
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False, float_format="%.6g")
    figures = _figures(study, results, summary, comparisons, folder)
    blocks = _blocks(study, smoke, results, summary, comparisons, claims, figures, ui)
    at = blocks.index(("h2", "Provenance"))
    blocks[at:at] = _error_blocks(study, smoke, results, classes, folder)
    if study.tune is not None:
        at = blocks.index(("h2", "Provenance"))
        blocks[at:at] = _tuning_blocks(study, smoke, reports_dir, storage, uri)
    (folder / "report.md").write_text(render_markdown(blocks))
    (folder / "report.html").write_text(render_html(blocks, folder, title=f"{study.name}: {study.question}"))
    meta = {"name": study.name, "question": study.question, "runs": len(runs), "expected": results.expected,
            "headline": _headline(study, comparisons, claims)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if not from_runs:
        _attach(study, smoke, uri, folder, comparisons, claims)
    if not smoke:
        write_index(reports_dir)
    return folder / "report.md"


def _with_parameters(study: Study, smoke: bool, summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `params` column: each variant's trainable parameters on each dataset."""
    models = {(spec.dataset, spec.variant): spec.config.model for spec in expand(study, smoke)}
    counts = [parameter_count(models[key], *INPUTS[key[0]]) for key in zip(summary["dataset"], summary["variant"])]
    summary = summary.copy()
    summary.insert(summary.columns.get_loc("n"), "params", counts)
    return summary


# ---------------------------------------------------------------- figures


def _figures(study, results, summary, comparisons, folder: Path) -> list[tuple[str, str]]:
    """Render and save every figure; returns (file name, caption) pairs."""
    from . import plots  # seaborn is imported only when figures are drawn

    runs, metric = results.runs, study.metric
    task = "classification" if "test_acc" in runs and runs["test_acc"].notna().any() else "regression"
    made = [("final_metric.png", f"Final {plots.label(metric)} per variant: each seed is a point; black: mean and 95% t-interval.",
             plots.final_metric(runs, summary, metric, study.question))]
    if not results.curves.empty and results.curves["epoch"].max() > 1:  # one epoch: one point, no curve
        made.append(("learning_curves.png", "Learning curves: mean over seeds per epoch, band = Student-t 95% CI (accuracy bands cut at 0 and 100%). "
                     "Where runs stopped early, later epochs average only the runs still training.",
                     plots.learning_curves(results.curves, task)))
    if results.steps is not None and results.steps["step"].nunique() > 1:
        made.append(("training_loss.png", "Training loss of every 50th batch (the batch's own loss, before its update): mean over "
                     "seeds per variant, band = Student-t 95% CI.", plots.step_curves(results.steps)))
    if task == "classification" and runs["train_eval_acc"].notna().any():
        made.append(("generalisation_gap.png", "Generalisation gap: accuracy on 5,000 training images minus test accuracy, both on the "
                     "tested weights (eval mode, no augmentation); bar = mean with Student-t 95% CI, points = seeds.",
                     plots.generalisation_gap(runs)))
    for axis in study.grid_axes:
        made.append((f"axis_{axis.replace('.', '_')}.png", f"{plots.label(metric)} against {axis}: mean with Student-t 95% CI, each seed a point.",
                     plots.axis_plot(runs, axis, metric)))
    if not comparisons.empty:
        made.append(("forest.png", f"Paired differences to the baseline '{study.baseline}' with 95% CI (green: better, red: worse, grey: inconclusive, orange: degenerate).",
                     plots.forest(comparisons, metric)))
    out = []
    for name, caption, fig in made:
        fig.savefig(folder / name, dpi=FIG_DPI, metadata={"Software": None})
        plots.plt.close(fig)
        out.append((name, caption))
    return out


def _error_blocks(study, smoke, results, classes: pd.DataFrame, folder: Path) -> list[tuple]:
    """'Where the errors are': per-class test accuracy, confusion matrices and misclassified images, over seeds."""
    runs = results.runs
    if "test_acc" not in runs or not runs["test_acc"].notna().any():
        return []  # regression: no classes
    blocks = [("h2", "Where the errors are")]
    missing = int((~runs["run_id"].isin(results.errors)).sum())
    if classes.empty:
        return blocks + [("p", f"None of these {len(runs)} runs logged its test predictions (runs recorded before the suite kept "
                               f"them do not): `{commands(study, smoke, '--force')[0]}` retrains them with per-class accuracy, "
                               "confusion matrices and misclassified examples.")]
    from . import plots

    labels = sorted(classes["class"].unique())
    rows = [[dataset, variant, int(group["seeds"].iloc[0]), *[analysis.fmt(a, "test_acc") for a in group["accuracy"]],
             f"{int(worst['class'])} → {int(worst['confused_with'])} ({100 * worst['confused_share']:.1f}%)" if pd.notna(worst["confused_with"]) else "-"]
            for (dataset, variant), group in classes.groupby(["dataset", "variant"], observed=True, sort=False)
            for worst in [group.loc[group["confused_share"].idxmax()]]]
    blocks.append(("p", "Test accuracy per true class, over every seed's test predictions (`per_class.csv`); the last column "
                        "names the most frequent confusion (true → predicted, share of that class's test examples)."
                        + (f" {missing} of {len(runs)} runs logged no predictions (recorded before the suite kept them) and are left out." if missing else "")))
    blocks.append(("table", ["dataset", "variant", "seeds", *[f"class {c}" for c in labels], "most confused"], rows))
    examples = {}
    for (dataset, variant), group in runs.groupby(["dataset", "variant"], observed=True, sort=False):
        kept = [(image, t, p) for r in group["run_id"] if r in results.errors
                for image, t, p in zip(results.errors[r]["images"], results.errors[r]["true"], results.errors[r]["predicted"])]
        if kept:
            examples[dataset, variant] = kept[:8]
    made = [("confusion.png", "Test confusion matrices over seeds: row = true class, column = predicted, in percent of the row.",
             plots.confusion_grid(analysis.confusions(runs, results.errors)))]
    if examples:
        made.append(("misclassified.png", "Misclassified test images (true → predicted), the first ones of each variant's seeds in order.",
                     plots.gallery(examples)))
    for name, caption, fig in made:
        fig.savefig(folder / name, dpi=FIG_DPI, metadata={"Software": None})
        plots.plt.close(fig)
        blocks.append(("img", name, caption))
    return blocks


# ---------------------------------------------------------------- content


def _blocks(study, smoke, results, summary, comparisons, claims, figures, ui) -> list[tuple]:
    runs, metric = results.runs, study.metric
    f = lambda v, diff=False: analysis.fmt(v, metric, diff)  # noqa: E731
    direction = "higher" if METRIC_DIRECTIONS[metric] == "max" else "lower"
    blocks = [("h1", f"{study.name}" + (" (smoke)" if smoke else "")), ("p", f"**Question.** {study.question}")]
    if study.description:
        blocks.append(("p", study.description.strip()))
    blocks.append(("p", f"Metric: `{metric}` ({direction} is better). {len(runs)} of {results.expected} runs finished"
                        f"{', ' + str(int(runs['diverged'].sum())) + ' diverged' if runs['diverged'].any() else ''}. "
                        f"Reproduce: `{commands(study, smoke)[0]}` (trains what is missing, then writes this report)."))
    if len(runs) < results.expected:
        blocks.append(("p", f"**Incomplete:** {results.expected - len(runs)} runs of this study are not in the store yet."))
    if results.unmatched:
        blocks.append(("p", f"Note: {results.unmatched} finished runs in this experiment belong to an earlier version of the study file and are left out."))

    blocks.append(("h2", "Verdicts"))
    if not comparisons.empty:
        rows = [[r.dataset, f"{r.variant} vs {r.baseline}", f(r.mean_diff, True), f"[{f(r.ci_low, True)}, {f(r.ci_high, True)}]",
                 f"{r.p_holm:.3g}", f"**{r.verdict}**" + (f" (~{int(r.seeds_needed)} seeds to resolve)" if pd.notna(r.seeds_needed) else "")
                 + (f" ({r.degenerate})" if r.verdict == "degenerate" else "")]
                for r in comparisons.itertuples()]
        blocks.append(("table", ["dataset", "comparison", "difference", "95% CI", "p (Holm)", "verdict"], rows))
    if not claims.empty:
        rows = [[r.claim, r.dataset, r.detail, f"**{r.verdict}**"] for r in claims.itertuples()]
        blocks.append(("table", ["claim", "dataset", "numbers", "verdict"], rows))
    if comparisons.empty and claims.empty:
        blocks.append(("p", "This study names no baseline and no claims; see the summary."))

    blocks.append(("h2", "Summary"))
    axes = list(study.grid_axes)
    header = ["dataset", "variant", *axes, "params", "n", "diverged", "collapsed", f"mean {metric}", "std", "95% CI (t)", "val acc", "epochs", "train s"]
    shown = lambda variant, axis: format_value(dict(study.points[variant])[axis])  # noqa: E731  (null as 'none', not NaN)
    rows = [[r["dataset"], r["variant"], *[shown(r["variant"], a) for a in axes], f"{r['params']:,}", r["n"], r["n_diverged"], r.get("n_collapsed", 0), f(r["mean"]), f(r["std"], False).lstrip("+"),
             f"[{f(r['ci_low'])}, {f(r['ci_high'])}]", analysis.fmt(r.get("val_acc_mean", float("nan")), "val_acc"),
             f"{r.get('epochs_trained_mean', float('nan')):.1f}", f"{r.get('train_seconds_mean', float('nan')):.1f}"]
            for _, r in summary.iterrows()]
    blocks.append(("table", header, rows))

    if not comparisons.empty:
        blocks.append(("h2", f"Comparisons with the baseline `{study.baseline}`"))
        blocks.append(("p", "Paired by seed: seed k of a variant against seed k of the baseline (same init, data-order and "
                            "augmentation draws). CI: paired Student-t 95%. p: two-sided paired t-test, Holm-adjusted across "
                            "all comparisons of the study; Wilcoxon signed-rank p for reference. Effect size: Cohen's d_z "
                            "(mean difference / std of differences). Verdict: better/worse when the CI excludes 0 and the "
                            "Holm-adjusted p < 0.05, else inconclusive, with the seeds a paired t-test would need for 80% power "
                            "at the observed effect; *degenerate* when at least half the seeds of either side collapsed to one "
                            "class (more than 90% of the test predictions in one class, or an accuracy within 3 binomial standard "
                            "errors of the largest class's share): such runs are named, not averaged into a verdict."))
        rows = [[r.dataset, r.variant, r.n_pairs, f(r.mean_diff, True), f"[{f(r.ci_low, True)}, {f(r.ci_high, True)}]",
                 f"{r.p_t:.3g}", f"{r.p_holm:.3g}", f"{r.p_wilcoxon:.3g}", f"{r.effect_size:.2f}", r.verdict,
                 "" if pd.isna(r.seeds_needed) else int(r.seeds_needed)] for r in comparisons.itertuples()]
        blocks.append(("table", ["dataset", "variant", "pairs", "mean diff", "95% CI", "p (t)", "p (Holm)", "p (Wilcoxon)", "d_z", "verdict", "seeds needed"], rows))
    if not claims.empty:
        blocks.append(("p", "Claims: *supported* when the 95% CI clears the claimed margin or threshold, *contradicted* when it "
                            "lies entirely on the other side, *degenerate* when at least half the seeds of a side collapsed, else *inconclusive*. `suite check` exits 1 on a contradicted claim."))

    blocks.append(("h2", "Figures"))
    for name, caption in figures:
        blocks.append(("img", name, caption))

    blocks.append(("h2", "Provenance"))
    blocks.append(("list", _provenance(study, smoke, runs, results.source)))
    blocks.append(("h2", "Runs"))
    if ui and results.experiment_id:
        link = tracking.runs_url(ui, results.experiment_id)
        blocks.append(("p", f"[All runs of this study in the MLflow UI]({link}); each run key links to its run."))
    else:
        blocks.append(("p", f"Run keys identify runs in any store: `{commands(study, smoke)[0]}` recreates the runs that a store "
                            f"lacks (none if it holds them all), `make ui` then prints the link to them, and `suite evaluate KEY` "
                            f"reloads one run's weights. Links to runs: build the report with `--ui-url` or `${UI_URL_ENV}`."))
    rows = [[r.dataset, r.variant, r.seed, f(getattr(r, metric)), "yes" if r.diverged else "", "yes" if r.collapsed else "", int(r.epochs_trained),
             f"{r.train_seconds:.1f}", _run_link(ui, results.experiment_id, r.run_id, r.run_key)] for r in runs.itertuples()]
    blocks.append(("table", ["dataset", "variant", "seed", metric, "diverged", "collapsed", "epochs", "train s", "run key"], rows))
    return blocks


def _run_link(ui: str | None, experiment_id: str | None, run_id: str, run_key: str) -> str:
    return f"[`{run_key}`]({tracking.run_url(ui, experiment_id, run_id)})" if ui and experiment_id else f"`{run_key}`"


def _provenance(study: Study, smoke: bool, runs: pd.DataFrame, source: str = "store") -> list[str]:
    commits = sorted(set(runs["git_commit"]))
    dirty = int(runs["git_dirty"].sum())
    items = [f"Read from this report's own `runs.csv` and `curves.csv` (`suite report {study.name} --from-runs`), not from the "
             "MLflow store that holds the runs: the metrics as those tables give them (6 significant digits)."] if source != "store" else []
    items += [
        f"Rebuild this report: `{commands(study, smoke)[1]}`; recreate its runs: `{commands(study, smoke)[0]}`",
        f"Study file: `{study.path}` (sha256 `{study.file_sha256[:16]}`)",
        f"Code: report built at commit `{provenance.git_commit()[:12]}`{' (dirty tree)' if provenance.git_dirty() else ''}; "
        f"runs trained at {len(commits)} commit(s): {', '.join(f'`{c[:12]}`' for c in commits)}"
        + (f"; {dirty} run(s) from a dirty tree" if dirty else ""),
        "Packages: " + ", ".join(f"{k} {v}" for k, v in provenance.versions().items()),
        "Devices: " + "; ".join(sorted(set(runs["device"]))),
        "Data: " + ", ".join(f"{d} `{fp}`" for d, fp in sorted(set(zip(runs["dataset"], runs["data_fingerprint"])))),
        f"Runs: {len(runs)}, total training time {runs['train_seconds'].sum() / 60:.1f} min",
    ]
    if len(commits) > 1:
        items.insert(3, f"**Warning:** this study mixes runs from {len(commits)} code versions.")
    return items


def _headline(study: Study, comparisons: pd.DataFrame, claims: pd.DataFrame) -> list[str]:
    f = lambda v: analysis.fmt(v, study.metric, True)  # noqa: E731
    lines = [f"{r.variant} vs {r.baseline} ({r.dataset}): {r.verdict}, {f(r.mean_diff)} [{f(r.ci_low)}, {f(r.ci_high)}]"
             for r in comparisons.itertuples()]
    return lines + [f"claim '{r.claim}' ({r.dataset}): {r.verdict}" for r in claims.itertuples()]


def verdict_record(comparisons: pd.DataFrame, claims: pd.DataFrame) -> tuple[dict, dict]:
    """(metrics, tags) of a summary run: verdict counts, each comparison's difference and effect size, each claim's verdict.

    So `mlflow.search_runs(filter_string="metrics.claims_contradicted > 0")` finds every study with a contradicted claim.
    """
    name = lambda *parts: re.sub(r"[^\w./ -]", "_", ".".join(map(str, parts)))  # noqa: E731  (MLflow's allowed key characters)
    metrics = {f"{kind}_{v}": float((table["verdict"] == v).sum()) for kind, table, verdicts in
               (("comparisons", comparisons, ("better", "worse", "inconclusive", "degenerate")),
                ("claims", claims, ("supported", "contradicted", "inconclusive", "degenerate"))) for v in verdicts}
    tags = {}
    for r in comparisons.itertuples():
        metrics[name("diff", r.dataset, r.variant)] = r.mean_diff
        metrics[name("d_z", r.dataset, r.variant)] = r.effect_size
        tags[name("verdict", r.dataset, r.variant)] = f"{r.verdict} vs {r.baseline}"
    for i, r in enumerate(claims.itertuples()):
        tags[name("claim", i, r.dataset)] = f"{r.verdict}: {r.claim}"
    return {k: v for k, v in metrics.items() if pd.notna(v)}, tags


def _attach(study: Study, smoke: bool, uri: str, folder: Path, comparisons: pd.DataFrame, claims: pd.DataFrame) -> None:
    """Replace the study's MLflow summary run with one carrying this report's files and its verdicts."""
    with tracking.store_lock(uri):
        client = tracking.connect(uri)
        exp_id = tracking.experiment_id(client, tracking.experiment_name(study.name, smoke))
        old = [r.info.run_id for r in tracking.search(client, exp_id, "summary") if r.data.tags.get("suite.smoke") == str(smoke)]
        tracking.delete_runs(client, old)
        run_id = tracking.start_run(client, exp_id, f"{study.name} report", {"suite.kind": "summary", "suite.study": study.name,
                                    "suite.smoke": smoke, "suite.git_commit": provenance.git_commit()}, {}, {"study": study.name})
        tracking.log_files(client, run_id, sorted(p for p in folder.iterdir() if p.is_file()), "report")
        metrics, tags = verdict_record(comparisons, claims)
        tracking.log_metric_items(client, run_id, [(k, v, 0) for k, v in metrics.items()])
        tracking.end_run(client, run_id, tags=tags)


# ---------------------------------------------------------------- index


VERDICTS = ("better", "worse", "inconclusive", "supported", "contradicted", "degenerate")


def write_index(reports_dir: Path) -> None:
    """reports/index.md and index.html: every study with its question, runs, verdicts (coloured in HTML) and links."""
    metas = [json.loads(p.read_text()) for p in sorted(reports_dir.glob("*/meta.json"))]
    blocks = [("h1", "Study reports"),
              ("p", "Every study with its question, its runs (finished / expected) and the verdict of each comparison and claim. "
                    "Rebuild one with `make report STUDY=name`; recreate its runs in an empty store with `make study STUDY=name`.")]
    header = ["study", "question", "runs", "verdicts"]
    rows = [[m["question"], f"{m['runs']}/{m['expected']}", "<br>".join(map(_bold_verdict, m["headline"])) or "-"] for m in metas]
    blocks.append(("table", header, [[f"[{m['name']}]({m['name']}/report.md)", *r] for m, r in zip(metas, rows)]))
    (reports_dir / "index.md").write_text(render_markdown(blocks))
    html_rows = [[f"[{m['name']}]({m['name']}/report.html)", *r] for m, r in zip(metas, rows)]
    (reports_dir / "index.html").write_text(render_html(blocks[:2] + [("table", header, html_rows)], reports_dir, "Study reports"))


def _bold_verdict(line: str) -> str:
    """'l2 vs none (mnist): better, ...' -> the verdict word in bold (coloured by the HTML style)."""
    return re.sub(rf": ({'|'.join(VERDICTS)})\b", r": **\1**", line, count=1)


# ---------------------------------------------------------------- rendering


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(("#" if kind == "h1" else "##") + f" {block[1]}\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*\n")
        elif kind == "code":
            out.append(f"```yaml\n{block[1]}\n```\n")
        elif kind == "table":
            header, rows = block[1], block[2]
            cells = lambda r: "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"  # noqa: E731
            out.append("\n".join([cells(header), "|" + "---|" * len(header), *map(cells, rows)]) + "\n")
    return "\n".join(out)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}code{background:#f6f6f6;padding:0 3px}figure{margin:1.5em 0}
.better,.supported{color:#1a7f37}.worse,.contradicted{color:#c62828}.inconclusive{color:#777}.degenerate{color:#b26a00}"""


def _inline(text: str) -> str:
    """The little markdown our text uses: `code`, **bold** (a verdict word gets its colour), *italic*, [link](url), <br>."""
    out = html.escape(str(text)).replace("&lt;br&gt;", "<br>")
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", lambda m: f'<b class="{m[1]}">{m[1]}</b>' if m[1] in VERDICTS else f"<b>{m[1]}</b>", out)
    out = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    """A self-contained page: figures embedded as base64 PNG, so it opens from disk with no server."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "img":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(block[2])}</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- search reports


def build_search(target, search, reports_dir: Path, storage: str, uri: str) -> Path:
    """reports/<study>/search/ (or search/<variant>/ for a tune block): best trial, top-k, figures, warnings.

    The files are also attached (folder `report/`) to the search's parent run in MLflow.
    """
    from . import plots, tune

    trials = tune.trials_frame(search)
    folder = out_dir(target.study, target.smoke, reports_dir) / "search"
    if target.block is not target.study.search:
        folder = folder / target.variant.replace("/", "_") / target.dataset
    folder.mkdir(parents=True, exist_ok=True)
    trials.to_csv(folder / "trials.csv", index=False, float_format="%.6g")
    complete = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    blocks = [("h1", f"Search: {target.name}"),
              ("p", f"Objective: `{target.block.objective}` ({target.block.direction}), on variant `{target.variant}` of "
                    f"{target.dataset}; {target.block.sampler} sampler (seed {target.block.seed}), {target.block.pruner} pruner; "
                    f"every trial trains with seed {target.block.seed}. Optuna study `{target.name}` in `{tune.redact(storage)}`. "
                    + (f"Continue it with `make tune STUDY={target.study.name} TRIALS=n`." if target.block is target.study.search else
                       f"Its budget is the study's `tune.trials`; `make study STUDY={target.study.name}` runs what is missing."))]
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    blocks.append(("p", "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + "."))
    warnings = []
    if complete.empty:
        warnings.append("no trial completed")
    else:
        best = search.best_trial
        warnings += tune.edge_warnings(target.block, best.params)
        blocks.append(("h2", "Best trial"))
        blocks.append(("list", [f"trial {best.number}: {target.block.objective} = {best.value:.4f}",
                                *[f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best.params.items()],
                                f"MLflow run id `{best.user_attrs.get('mlflow_run_id', '')}`"]))
        blocks.append(("p", "Ready to paste into the study's `variants:`"))
        blocks.append(("code", _variant_yaml(f"{target.variant}_tuned", best.params)))
        ascending = target.block.direction == "minimize"
        top = complete.sort_values("value", ascending=ascending).head(10)
        params = list(target.block.space)
        blocks.append(("h2", "Top trials"))
        blocks.append(("table", ["trial", "value", *params, "epochs", "MLflow run id"],
                       [[int(r["trial"]), f"{r['value']:.4f}", *[f"{r[p]:.4g}" if isinstance(r[p], float) else r[p] for p in params],
                         int(r["epochs"]), f"`{r['mlflow_run_id']}`"] for _, r in top.iterrows()]))
    failed = int(counts.get("FAIL", 0))
    if len(trials) and failed > len(trials) / 4:
        warnings.append(f"{failed} of {len(trials)} trials diverged or failed (more than a quarter)")
    if warnings:
        blocks.insert(2, ("p", "**Warning:** " + "; ".join(warnings) + "."))
    figures = []
    if not complete.empty:
        made = [("history.png", "Optimisation history: each trial's objective, and the best so far.",
                 plots.search_history(trials, target.block.objective, target.block.direction))]
        imp = tune.importances(search)
        if imp:
            made.append(("importances.png", "Parameter importances (Optuna's fANOVA evaluator).", plots.importances(imp)))
        made.append(("slice.png", "The objective against each parameter (log axes where the range is log-scaled).",
                     plots.search_slices(trials, target.block.objective, {k: p.log for k, p in target.block.space.items()})))
        for name, caption, fig in made:
            fig.savefig(folder / name, dpi=FIG_DPI, metadata={"Software": None})
            plots.plt.close(fig)
            figures.append(("img", name, caption))
    blocks += [("h2", "Figures"), *figures] if figures else []
    (folder / "report.md").write_text(render_markdown(blocks))
    (folder / "report.html").write_text(render_html(blocks, folder, f"Search {target.name}"))
    _attach_search(target, uri, folder)
    return folder / "report.md"


def _attach_search(target, uri: str, folder: Path) -> None:
    """The search report's files as artifacts of the search's parent run (replacing earlier ones)."""
    with tracking.store_lock(uri):
        client = tracking.connect(uri)
        exp_id = tracking.experiment_id(client, tracking.experiment_name(target.study.name, target.smoke), create=False)
        parents = [r for r in tracking.search(client, exp_id, "search") if r.data.tags.get("suite.search") == target.name] if exp_id else []
        for parent in parents:
            tracking.log_files(client, parent.info.run_id, sorted(p for p in folder.iterdir() if p.is_file()), "report")


def _variant_yaml(name: str, params: dict) -> str:
    tree: dict = {}
    for path, value in params.items():
        node = tree
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = float(f"{value:.4g}") if isinstance(value, float) else value

    def flow(node) -> str:
        if isinstance(node, dict):
            return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in node.items()) + "}"
        return str(node)

    return f"variants:\n  {name}: {flow(tree)}"


def _tuning_blocks(study: Study, smoke: bool, reports_dir: Path, storage: str | None, uri: str) -> list[tuple]:
    """The tuned settings of each variant (equal budgets), with a search report per variant."""
    from . import tune

    storage = tune.storage_url(storage)
    block = study.tune
    rows = []
    for target in tune.tune_targets(study, smoke):
        search = tune.load_search(target, storage)
        if search is None:
            rows.append([target.dataset, target.variant, 0, "not tuned yet", "", ""])
            continue
        path = build_search(target, search, reports_dir, storage, uri).relative_to(out_dir(study, smoke, reports_dir))
        trials = tune.trials_frame(search)
        done = trials[trials["state"] == "COMPLETE"]
        best = search.best_trial if len(done) else None
        values = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in (best.params if best else {}).items())
        rows.append([target.dataset, target.variant, len(trials), values or "no trial completed",
                     f"{best.value:.4f}" if best else "", f"[search report]({path})"])
    tuned = ", ".join(f"`{k}`" for k in block.space)
    return [("h2", "Tuned settings"),
            ("p", f"Before its seeds ran, every variant was tuned over {tuned} with the same budget "
                  f"({target.budget} trials, {block.sampler} sampler, seed {block.seed}, {block.pruner} pruner), judged on "
                  f"`{block.objective}` of the validation split; `<variant>@tuned` rows are trained at the best values and "
                  f"compared with `{study.baseline}@tuned`. The plain variants are the answer at default settings."),
            ("table", ["dataset", "variant", "trials", "tuned values", f"best {block.objective}", "search"], rows)]
