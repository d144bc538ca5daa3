"""Search reports (`suite tune`, and the tuning behind a study's `@tuned` variants): built from the Optuna store.

`reports/<study>/search/` (a `tune` block: `search/<variant>/<dataset>/`) gets report.md/html, trials.csv
and figures; the same files are attached to the search's parent run in MLflow.
"""

from __future__ import annotations

from pathlib import Path

from .. import tracking
from ..provenance import redact
from ..analysis.results import plain
from ..spec.config import Execution
from ..spec.derived import search_fingerprint, tuning_budget, tuning_name, tuning_targets
from ..spec.study import Study, commands, make_command
from .content import out_dir
from .figures import save
from .render import render_html, render_markdown

def searches_from_report(study: Study, smoke: bool, reports_dir: Path) -> dict:
    """As `tracking.searches`, read from the committed search reports' trials.csv instead of the store (a report rebuilt
    `--from-runs`): (search name, dataset) -> (trials counted, best values, best objective, None), values to 6 significant digits."""
    import pandas as pd

    found, folder = {}, out_dir(study, smoke, reports_dir) / "search"
    for dataset, variant in tuning_targets(study):
        path = folder / variant.replace("/", "_") / dataset / "trials.csv"
        if not path.exists():
            continue
        trials = pd.read_csv(path)
        reason = trials.get("fail_reason", pd.Series("", index=trials.index))
        counted = trials[trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"]) & ~((trials["state"] == "FAIL") & (reason == tracking.INTERRUPTED))]
        complete = trials[trials["state"] == "COMPLETE"]
        best = complete.loc[complete["value"].idxmin() if study.tune.direction == "minimize" else complete["value"].idxmax()] if len(complete) else None
        found[tuning_name(study, variant, smoke, dataset), dataset] = (
            len(counted), None if best is None else {p: plain(best[p]) for p in study.tune.space},
            None if best is None else float(best["value"]), None)
    return found


def tuned_search(found: dict, study: Study, variant: str, dataset: str, smoke: bool, execution: Execution | None = None) -> tuple:
    """(trials counted, best values, best objective) of the search behind `variant`'s tuning on `dataset`, from `found`
    (`tracking.searches`): the one run with the study's configuration as it is now, under its plain name or kept apart
    as `<name>@<fingerprint>` (tune.placed); (0, None, None) when there is none. A search recorded without a fingerprint
    (from before them, or read from a report's files) counts as this configuration's. `execution`: how the runs that the
    tuned values are for were computed (the search's trials were computed so too)."""
    plain = tuning_name(study, variant, smoke, dataset)
    fingerprint = search_fingerprint(study, study.tune, variant, dataset, smoke, execution)
    for name in (f"{plain}@{fingerprint[:8]}", plain):
        trials, best, value, stamped = found.get((name, dataset), (0, None, None, None))
        if trials and stamped in (None, fingerprint):
            return trials, best, value
    return 0, None, None


def build_search(target, search, reports_dir: Path, storage: str, uri: str) -> Path:
    """reports/<study>/search/ (or search/<variant>/ for a tune block): best trial, top-k, figures, warnings.

    The files are also attached (folder `report/`) to the search's parent run in MLflow.
    """
    from .. import tune
    from . import plots

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
                    f"every trial trains with seed {target.block.seed}. Optuna study `{target.name}` in `{redact(storage)}`. "
                    + (f"Continue it with `{make_command('tune', target.study, target.smoke, variables='TRIALS=n')}`."
                       if target.block is target.study.search else
                       f"Its budget is the study's `tune.trials`; `{commands(target.study, target.smoke)[0]}` runs what is missing."))]
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
            made.append(("importances.png", "Parameter importances (Optuna's PED-ANOVA evaluator).", plots.importances(imp)))
        made.append(("slice.png", "The objective against each parameter (log axes where the range is log-scaled).",
                     plots.search_slices(trials, target.block.objective, {k: p.log for k, p in target.block.space.items()})))
        figures = [("img", name, caption) for name, caption in save(made, folder)]
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


def build_tuning_searches(study: Study, smoke: bool, reports_dir: Path, storage: str | None, uri: str,
                          execution: Execution | None = None) -> None:
    """The search report of every variant's tuning (a `tune` block), from the Optuna store: the searches of `execution`."""
    from .. import tune

    storage = tracking.storage_url(storage)
    for target in tune.tune_targets(study, smoke, storage, how=execution):
        search = tune.load_search(target, storage)
        if search is not None:
            build_search(target, search, reports_dir, storage, uri)


def tuning_blocks(study: Study, smoke: bool, reports_dir: Path, searches: dict, execution: Execution | None = None) -> list[tuple]:
    """The tuned settings of each variant (equal budgets), read from the searches' parent runs in MLflow."""
    block, folder = study.tune, out_dir(study, smoke, reports_dir)
    budget = tuning_budget(study, smoke)
    rows = []
    for dataset, variant in tuning_targets(study):
        trials, best, value = tuned_search(searches, study, variant, dataset, smoke, execution)
        if not trials:
            rows.append([dataset, variant, 0, "not tuned yet", "", ""])
            continue
        values = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in (best or {}).items())
        page = folder / "search" / variant.replace("/", "_") / dataset / "report.md"
        rows.append([dataset, variant, trials, values or "no trial completed", f"{value:.4f}" if value is not None else "",
                     f"[search report]({page.relative_to(folder)})" if page.exists() else "-"])
    tuned = ", ".join(f"`{k}`" for k in block.space)
    return [("h2", "Tuned settings"),
            ("p", f"Before its seeds ran, every variant was tuned over {tuned} with the same budget "
                  f"({budget} trials, {block.sampler} sampler, seed {block.seed}, {block.pruner} pruner), judged on "
                  f"`{block.objective}` of the validation split; `<variant>@tuned` rows are trained at the best values and "
                  f"compared with `{study.baseline}@tuned`. The plain variants are the answer at default settings."),
            ("table", ["dataset", "variant", "trials", "tuned values", f"best {block.objective}", "search"], rows)]
