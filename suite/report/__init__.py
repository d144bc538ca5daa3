"""Write a study's report from MLflow alone: the one package that writes report files.

    suite report regularization        # or: make report STUDY=regularization

`reports/<study>/` gets report.md, a self-contained report.html (figures embedded),
summary.csv, comparisons.csv, claims.csv, runs.csv, curves.csv (per_class.csv for
classification) and the figures as PNG; the same files are attached to a per-study MLflow
"summary" run, with the verdicts as its metrics and tags. `reports/index.md` and `index.html`
list every study. Smoke reports go to `reports/smoke/<study>/`. Nothing here depends on
wall-clock time, so rebuilding from the same store gives identical tables.

The package: this module reads the runs (`results`), computes the tables (`analysis`) and writes
the files; `content` says what the report says, `figures` draws (with `plots`, the one module
that imports seaborn), `render` turns content into markdown and HTML through `templates/`,
`search` writes search reports from the Optuna store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from .. import analysis, provenance, tracking
from ..spec.config import Execution
from ..errors import SuiteError
from ..analysis.results import Results, collect, from_report, how_computed
from ..spec.derived import tuning_budget, tuning_targets, with_tuned
from ..spec.study import Study, commands, expand, make_command
from . import content
from .content import out_dir, ui_url
from .figures import error_figures, study_figures
from .render import bold_verdict, render_html, render_markdown
from .search import build_search, build_tuning_searches, searches_from_report, tuned_search, tuning_blocks

__all__ = ["build", "build_search", "build_tuning_searches", "claim_table", "out_dir", "ui_url", "verdict_record", "write_index"]


def claim_table(study: Study, smoke: bool, uri: str, execution: Execution | None = None) -> tuple[pd.DataFrame, int]:
    """The claims' verdicts, and how many of the study's runs are not among those they were judged from."""
    study = _with_tuning(study, smoke, _searches(study, smoke, uri), execution)
    results = _collect(study, smoke, uri, execution)
    return analysis.family(results.runs, study).claims, results.expected - len(results.runs)


def _with_tuning(study: Study, smoke: bool, found: dict, execution: Execution | None = None) -> Study:
    """With a `tune` block: the study plus its `@tuned` variants, at the best values the searches' parent runs hold (`found`):
    those of the searches whose trials were computed as `execution` computes the runs."""
    if study.tune is None:
        return study
    budget = tuning_budget(study, smoke)
    tuned = {}
    for dataset, variant in tuning_targets(study):
        trials, best, _ = tuned_search(found, study, variant, dataset, smoke, execution)
        if trials >= budget and best is not None:
            tuned[dataset, variant] = best
    return with_tuned(study, tuned)


def _searches(study: Study, smoke: bool, uri: str) -> dict:
    """`tracking.searches` of the study's experiment ({} without a `tune` block: nothing to read)."""
    if study.tune is None:
        return {}
    client = tracking.connect(uri, create=False)
    exp_id = tracking.experiment_id(client, tracking.experiment_name(study.name, smoke), create=False)
    return tracking.searches(client, exp_id) if exp_id else {}


def _collect(study: Study, smoke: bool, uri: str, execution: Execution | None, folder: Path | None = None) -> Results:
    """The study's finished runs, each marked `collapsed` or not (see analysis.collapsed). `folder`: the report's, whose
    own runs.csv (a committed report's) the error for a store without the runs points to."""
    results = collect(study, smoke, uri, execution)
    results.runs["collapsed"] = analysis.collapsed(results.runs)
    if results.runs.empty and results.unmatched:
        raise SuiteError(f"none of the {results.unmatched} finished runs of study '{study.name}'{' (smoke)' if smoke else ''} in "
                         f"{provenance.redact(uri)} is a run it defines now computed {how_computed(execution)}: were they computed another "
                         "way (pass the same --threads, --device, --pack, --fused-optimizer as the study) or under another "
                         "version of the study file?")
    if results.runs.empty:
        raise SuiteError(f"no finished runs of study '{study.name}'{' (smoke)' if smoke else ''} in {provenance.redact(uri)}; "
                         f"run `{commands(study, smoke)[0]}` first"
                         + (f", or rebuild the report from its own runs.csv: `{make_command('report', study, smoke, '--from-runs')}`"
                            if folder is not None and (folder / "runs.csv").is_file() else ""))
    return results


KEPT_FROM_STORE = ("per_class.csv", "confusion.png", "misclassified.png", "training_loss.png")  # (what --from-runs cannot draw)
STAGING = ".building-"  # + a unique suffix: each build its own folder (two drivers, or `suite report` beside a study)
STALE_STAGING = 3600  # seconds after which a staging folder is one a killed build left


def _staging(folder: Path) -> Path:
    """An empty folder of this build's own inside the report's, for its files (those killed builds left are cleared)."""
    now = time.time()
    for old in folder.glob(STAGING + "*"):
        try:
            if now - old.stat().st_mtime > STALE_STAGING:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING, dir=folder))
    except OSError as err:
        raise SuiteError(f"cannot write the report into {folder}: {err.strerror or err}") from None


def _publish(new: Path, folder: Path) -> None:
    """Move the built files into the report's folder (each rename atomic), then remove figures and the optional table
    that this build did not make; other files (a search's folder) stay."""
    made = {path.name for path in new.iterdir()}
    if blocked := sorted(name for name in made if (folder / name).is_dir() and not (folder / name).is_symlink()):
        raise SuiteError(f"{folder / blocked[0]} is a folder where the report writes a file; move it away and run the same "
                         "command again (the report is as it was)")
    for name in sorted(made):
        os.replace(new / name, folder / name)
    new.rmdir()
    for stale in [*folder.glob("*.png"), folder / "per_class.csv"]:
        if stale.name not in made:
            stale.unlink(missing_ok=True)


def build(study: Study, smoke: bool, uri: str | None, reports_dir: Path,
          execution: Execution | None = None, ui: str | None = None, from_runs: bool = False, throwaway: bool = False) -> Path:
    """Collect, analyse, plot and write everything; returns the path of report.md.

    `execution` (device, threads) picks which of the study's runs: those computed that way (default: 1 CPU thread).
    `ui`: the MLflow UI's base URL that run ids link to (None: no links, the commands that recreate the runs instead).
    `from_runs`: read the runs from the report's own runs.csv / curves.csv instead of the store (a committed report
    whose runs live in another store); no store is opened then (`uri` None). `throwaway`: the store is deleted after the
    command (`suite smoke`): the report says how to get runs that stay.
    """
    if from_runs:
        found = searches_from_report(study, smoke, reports_dir) if study.tune is not None else {}
        study, results = from_report(study, out_dir(study, smoke, reports_dir), smoke, execution)
        results.runs["collapsed"] = analysis.collapsed(results.runs)
    else:
        found = _searches(study, smoke, uri)
        study = _with_tuning(study, smoke, found, execution)
        results = _collect(study, smoke, uri, execution, out_dir(study, smoke, reports_dir))
    runs, metric = results.runs, study.metric
    summary = _with_parameters(study, smoke, runs, analysis.summarize(runs, metric, study.grid_axes))
    tests = analysis.family(runs, study)  # comparisons and claims: one Holm family
    comparisons, claims = tests.comparisons, tests.claims
    folder = out_dir(study, smoke, reports_dir)
    new = _staging(folder)  # every file is written here first: an interrupted or failed build leaves the report as it was
    try:
        # runs.csv holds no test predictions or step losses: a rebuild from it keeps the files drawn from them as they are
        kept = [name for name in KEPT_FROM_STORE if (folder / name).is_file()] if from_runs else []
        for name in kept:
            shutil.copy2(folder / name, new / name)
        classes = analysis.read_per_class(new / "per_class.csv") if "per_class.csv" in kept else analysis.per_class(runs, results.errors)
        tables = {"summary": summary, "comparisons": comparisons, "claims": claims, "runs": runs, "curves": results.curves,
                  **({"per_class": classes} if not classes.empty and "per_class.csv" not in kept else {})}
        for name, table in tables.items():
            table.to_csv(new / f"{name}.csv", index=False, float_format="%.6g")
        figures = study_figures(study, results, summary, comparisons, new, kept)
        blocks = content.blocks(study, smoke, results, summary, comparisons, claims, figures, ui, throwaway)
        at = blocks.index(("h2", "Provenance"))
        errors = [] if classes.empty else error_figures(runs, results.errors, new, kept)
        blocks[at:at] = content.error_blocks(study, smoke, results, classes, errors, kept="per_class.csv" in kept)
        if study.tune is not None:
            at = blocks.index(("h2", "Provenance"))
            blocks[at:at] = tuning_blocks(study, smoke, reports_dir, found, execution)
        (new / "report.md").write_text(render_markdown(blocks))
        (new / "report.html").write_text(render_html(blocks, new, title=f"{study.name}: {study.question}"))
        meta = {"name": study.name, "question": study.question, "runs": len(runs), "expected": results.expected,
                "headline": content.headline(study, comparisons, claims)}
        (new / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        _publish(new, folder)
    except BaseException:  # (Ctrl-C too) the report stays as it was
        shutil.rmtree(new, ignore_errors=True)
        raise
    if not from_runs:
        _attach(study, smoke, uri, folder, comparisons, claims)
    if not smoke:
        write_index(reports_dir)
    return folder / "report.md"


def _with_parameters(study: Study, smoke: bool, runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `params` column: each variant's trainable parameters on each dataset.

    Runs log the count (metric `parameters`); for runs recorded before they did, it is computed from the config.
    """
    logged = runs.groupby(["dataset", "variant"], observed=True)["parameters"].max() if "parameters" in runs else pd.Series(dtype=float)
    keys = list(zip(summary["dataset"], summary["variant"]))
    if all(pd.notna(logged.get(key)) for key in keys):
        counts = [int(logged[key]) for key in keys]
    else:
        from ..components import get
        from ..components.models import parameter_count  # imports torch

        models = {(spec.dataset, spec.variant): spec.config.model for spec in expand(study, smoke)}
        counts = [parameter_count(models[key], *get("dataset", key[0]).inputs) for key in keys]
    summary = summary.copy()
    summary.insert(summary.columns.get_loc("n"), "params", counts)
    return summary


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
        run_id = tracking.start_run(client, exp_id, f"{study.name} report", {"suite.kind": "summary", "suite.study": study.name,
                                    "suite.smoke": smoke, "suite.git_commit": provenance.git_commit()}, {}, {"study": study.name})
        try:  # the old summary goes once the new one is whole: a failure on the way keeps it
            tracking.log_files(client, run_id, sorted(p for p in folder.iterdir() if p.is_file()), "report")
            metrics, tags = verdict_record(comparisons, claims)
            tracking.log_metric_items(client, run_id, [(k, v, 0) for k, v in metrics.items()])
            tracking.end_run(client, run_id, tags=tags)
        except BaseException:
            with contextlib.suppress(Exception):  # (the store may be what failed)
                tracking.delete_runs(client, [run_id])
            raise
        # the old summaries go once the new one is whole, listed now: one whose writer was killed while the tracking server
        # created it may be committed after this one started. Only older ones: a newer writer's is kept (and deletes this)
        ours = client.get_run(run_id).info
        tracking.delete_runs(client, [r.info.run_id for r in tracking.search(client, exp_id, "summary")
                                      if r.data.tags.get("suite.smoke") == str(smoke)
                                      and (r.info.start_time, r.info.run_id) < (ours.start_time, ours.run_id)])


def _meta(path: Path) -> dict | None:
    """A report's meta.json, or None (with a warning) where that file is not one a report wrote."""
    try:
        meta = json.loads(path.read_text())
        if (isinstance(meta, dict) and {"runs", "expected"} <= meta.keys() and isinstance(meta.get("headline"), list)
                and all(isinstance(value, str) for value in [meta.get("name"), meta.get("question"), *meta["headline"]])):
            return meta
        why = "not what a report writes"
    except (OSError, ValueError) as err:  # (UnicodeDecodeError is a ValueError)
        why = getattr(err, "strerror", None) or str(err).splitlines()[0][:120]
    print(f"warning: the index leaves out {path.parent.name}: its meta.json cannot be read ({why})", file=sys.stderr)
    return None


def write_index(reports_dir: Path) -> None:
    """reports/index.md and index.html: every study with its question, runs, verdicts (coloured in HTML) and links."""
    metas = [m for m in map(_meta, sorted(reports_dir.glob("*/meta.json"))) if m is not None]
    blocks = [("h1", "Study reports"),
              ("p", "Every study with its question, its runs (finished / expected) and the verdict of each comparison and claim. "
                    "Rebuild one with `make report STUDY=name`; recreate its runs in an empty store with `make study STUDY=name`.")]
    header = ["study", "question", "runs", "verdicts"]
    rows = [[m["question"], f"{m['runs']}/{m['expected']}", "<br>".join(map(bold_verdict, m["headline"])) or "-"] for m in metas]
    blocks.append(("table", header, [[f"[{m['name']}]({m['name']}/report.md)", *r] for m, r in zip(metas, rows)]))
    (reports_dir / "index.md").write_text(render_markdown(blocks))
    html_rows = [[f"[{m['name']}]({m['name']}/report.html)", *r] for m, r in zip(metas, rows)]
    (reports_dir / "index.html").write_text(render_html(blocks[:2] + [("table", header, html_rows)], reports_dir, "Study reports"))
