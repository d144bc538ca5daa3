"""Read a study's runs back from MLflow into tidy, typed DataFrames.

Typed columns (variant, seed, grid values, the config) come from re-expanding the study
file and matching run keys, not from parsing MLflow's string params; MLflow supplies the
metrics, ids and provenance tags. Runs whose key the study no longer expands to (the file
was edited) are counted in `Results.unmatched`, not mixed in.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import tracking
from ..errors import SuiteError, error_line
from ..spec.config import METRIC_ALIASES, Execution, flatten, task_of
from ..spec.derived import TUNED, with_tuned
from ..spec.study import Study, expand

CURVE_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_mse", "epoch_seconds")
FINAL_METRICS = ("test_acc", "test_loss", "test_mse", "train_eval_acc", "train_eval_loss", "epochs_trained", "best_epoch",
                 "tested_epoch", "train_seconds", "test_top_share", "test_majority_share", "parameters")


@dataclass
class Results:
    runs: pd.DataFrame  # one row per finished run
    curves: pd.DataFrame  # long format: one row per run x epoch x metric
    expected: int  # runs the study expands to
    unmatched: int  # finished runs in the experiment that this study file no longer expands to
    summary_run_id: str | None  # the per-study MLflow run that carries the report
    experiment_id: str | None = None  # the study's MLflow experiment
    errors: dict = field(default_factory=dict)  # run id -> test confusion matrix and misclassified examples (runs that logged them)
    steps: pd.DataFrame | None = None  # long format: the training loss of every 50th batch (`train_loss_step`), per run
    source: str = "store"  # where the runs were read: the MLflow store, or a report's own runs.csv ("runs.csv")
    packed: int = 0  # runs trained as members of packed models (execution.packed): the report says so
    gone: int = 0  # runs whose artifacts are not in the store at all (their folder moved or deleted)
    unreadable: int = 0  # runs whose test_errors.json / misclassified.npz cannot be read (a warning said which)
    failed: dict = field(default_factory=dict)  # run name -> error line: the study's runs that failed and have no finished run


def collect(study: Study, smoke: bool, uri: str, execution: Execution | None = None) -> Results:
    """The study's finished runs computed with `execution` (default: 1 CPU thread); with a `tune` block, `study` should already carry its tuned variants."""
    specs = {s.run_key: s for s in expand(study, smoke, execution)}
    client = tracking.connect(uri, create=False)
    exp_id = tracking.experiment_id(client, tracking.experiment_name(study.name, smoke), create=False)
    found = tracking.search(client, exp_id, "run", status=tracking.FINISHED) if exp_id else []
    unmatched = sum(run.data.tags.get("suite.run_key") not in specs for run in found)
    matched = tracking.newest_per_key(run for run in found if run.data.tags.get("suite.run_key") in specs)
    rows = [_row(specs[run.data.tags["suite.run_key"]], run) for run in matched]
    artifacts = {run.info.run_id: run.info.artifact_uri for run in matched}
    runs = pd.DataFrame(rows, columns=_columns(study, rows))
    runs["variant"] = pd.Categorical(runs["variant"], categories=list(study.variants), ordered=True)
    runs = _in_study_order(runs, study, ["dataset", "variant", "seed"])
    curves = _in_study_order(_curves(client, runs), study, ["dataset", "variant", "seed", "metric", "epoch"])
    runs = _at_tested_epoch(runs, curves)
    summaries = tracking.search(client, exp_id, "summary") if exp_id else []
    summary = next((r.info.run_id for r in summaries if r.data.tags.get("suite.smoke") == str(smoke)), None)
    steps = _in_study_order(_steps(client, runs), study, ["dataset", "variant", "seed", "step"])
    packed = sum(specs[key].config.execution.packed for key in runs["run_key"]) if "run_key" in runs else 0
    errors, gone, unreadable = _errors({r: artifacts[r] for r in runs["run_id"]})
    missing = set(specs) - {run.data.tags.get("suite.run_key") for run in matched}
    failed = tracking.newest_per_key(run for run in (tracking.search(client, exp_id, "run", status="FAILED") if exp_id else [])
                                     if run.data.tags.get("suite.run_key") in missing)
    return Results(runs, curves, len(specs), unmatched, summary, exp_id, errors, steps, packed=packed, gone=gone,
                   unreadable=unreadable, failed={run.info.run_name: run.data.tags.get("suite.error", "") for run in failed})


def _steps(client, runs: pd.DataFrame) -> pd.DataFrame:
    history = tracking.histories(client, runs["run_id"].tolist(), ["train_loss_step"])
    steps = pd.DataFrame([(r, s, v) for r, _, s, v in history], columns=["run_id", "step", "value"])
    return runs[["run_id", "dataset", "variant", "seed"]].merge(steps, on="run_id")


def _errors(artifacts: dict) -> tuple[dict, int, int]:
    """Each run's `test_errors.json` with its gallery images ({run id: its artifact URI} in), how many runs have no
    artifacts at all (every run logs its config), and how many have files that cannot be read (damaged, edited: left
    out with a warning). Runs recorded before errors were logged have none."""
    import tempfile

    found, gone, unreadable = {}, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for run_id, uri in artifacts.items():
            names = tracking.artifact_names(uri)
            gone += not names
            if tracking.ERRORS not in names or tracking.GALLERY_FILE not in names:
                continue
            try:
                found[run_id] = _error_table(uri, Path(tmp) / run_id)
            except Exception as err:  # (json's, numpy's, zipfile's errors, and ours below)
                unreadable += 1
                print(f"warning: run {run_id}: its {tracking.ERRORS} and {tracking.GALLERY_FILE} cannot be read ({error_line(err)}); the report "
                      "leaves its test errors out", file=sys.stderr)
    return found, gone, unreadable


def _error_table(uri: str, folder: Path) -> dict:
    """One run's confusion matrix and misclassified examples, checked to be what the recorder writes."""
    import numpy as np

    table = json.loads(tracking.download_at(uri, tracking.ERRORS, folder).read_text())
    with np.load(tracking.download_at(uri, tracking.GALLERY_FILE, folder)) as gallery:
        table["images"] = gallery["images"]
    confusion = np.array(table["confusion"])
    classes = len(confusion)  # (the classes its run's labels have: a plug-in dataset may declare another count)
    if confusion.shape != (classes, classes) or not classes or confusion.dtype.kind not in "iu" or (confusion < 0).any():
        raise ValueError("its confusion matrix is not a square table of counts")
    labels = [*table["true"], *table["predicted"]]
    if not len(table["true"]) == len(table["predicted"]) == len(table["images"]) or not all(
            isinstance(c, int) and 0 <= c < classes for c in labels):
        raise ValueError("its misclassified examples do not match their labels and images")
    return table


def _in_study_order(frame: pd.DataFrame, study: Study, by: list[str]) -> pd.DataFrame:
    """Sorted with datasets in the study file's order (not the alphabet's); variant is categorical already."""
    order = {d: i for i, d in enumerate(study.datasets)}
    key = lambda column: column.map(order) if column.name == "dataset" else column  # noqa: E731
    return frame.sort_values(by, kind="stable", key=key).reset_index(drop=True)


def from_report(study: Study, folder: Path, smoke: bool = False, execution: Execution | None = None) -> tuple[Study, Results]:
    """The runs of a report read back from its own `runs.csv` and `curves.csv`, for a store that no longer holds them,
    and the study they answer (with a `tune` block: plus its `@tuned` variants).

    As with `collect`, the typed columns come from re-expanding the study file and matching run keys;
    the table supplies the metrics (as written: 6 significant digits) and the provenance. A study with a
    `tune` block is expanded with its `@tuned` variants at the values runs.csv recorded (`_tuned`);
    their keys hash the full-precision tuned values, so those rows are matched by dataset, variant and seed
    (where the untuned twin of the row matches by key).
    """
    table, curves = _report_tables(folder)
    study = _tuned(study, table)
    specs = {s.run_key: s for s in expand(study, smoke, execution)}
    by_cell = {(s.dataset, s.variant, s.seed): s for s in specs.values() if s.variant.endswith(TUNED)}
    records = table.to_dict("records")
    # a tuned row counts only where its untuned twin (same dataset, variant, seed) still matches by key:
    # the study file is the one that trained it, apart from the tuned values
    current = {(r["dataset"], r["variant"], r["seed"]) for r in records if r["run_key"] in specs}
    rows, unmatched = [], 0
    for record in records:
        cell = (record["dataset"], record["variant"], record["seed"])
        twin = (cell[0], cell[1].removesuffix(TUNED), cell[2])
        spec = specs.get(record["run_key"]) or (by_cell.get(cell) if twin in current else None)
        if spec is None:
            unmatched += 1
            continue
        metrics = {m: record[m] for m in (*FINAL_METRICS, *METRIC_ALIASES, "diverged") if m in record and pd.notna(record[m])}
        tags = {f"suite.{k}": str(record[k]) for k in ("git_commit", "git_dirty", "device", "data_fingerprint")}
        if pd.notna(record.get("plugins")):
            tags["suite.plugins"] = record["plugins"]
        row = _row_of(spec, metrics, tags, record["run_id"], record["run_name"], pd.Timestamp(record["start_time"]))
        rows.append({**row, "run_key": record["run_key"]})
    if not rows:
        raise SuiteError(f"none of the {len(records)} runs in {folder / 'runs.csv'} is a run that study '{study.name}' defines now, "
                         f"computed {how_computed(execution)}: were they computed another way (--threads, --device, --pack, "
                         "--fused-optimizer) or under another version of the study file?")
    runs = pd.DataFrame(rows, columns=_columns(study, rows))
    runs["variant"] = pd.Categorical(runs["variant"], categories=list(study.variants), ordered=True)
    runs = _in_study_order(runs, study, ["dataset", "variant", "seed"])
    curves = runs[["run_id", "dataset", "variant", "seed"]].merge(curves[["run_id", "metric", "epoch", "value"]], on="run_id")
    curves = _in_study_order(curves, study, ["dataset", "variant", "seed", "metric", "epoch"])
    return study, Results(_at_tested_epoch(runs, curves), curves, len(specs), unmatched, None, None, source="runs.csv")


def how_computed(execution: Execution | None) -> str:
    e = execution or Execution()
    return (f"on {e.device} with {e.threads} thread{'s' if e.threads > 1 else ''}" + (", packed" if e.packed else "")
            + (", fused optimizer" if e.fused_optimizer else ""))


def _report_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        table = pd.read_csv(folder / "runs.csv", dtype={"run_key": str, "run_id": str, "git_commit": str, "data_fingerprint": str})
        curves = pd.read_csv(folder / "curves.csv", dtype={"run_id": str})
    except (OSError, ValueError) as err:  # (pandas' ParserError, EmptyDataError, and UnicodeDecodeError are ValueErrors)
        raise SuiteError(f"cannot read the runs of {folder}: {str(err).splitlines()[0][:160]}") from None
    advice = "not a table this suite wrote; rebuild it from the store (without --from-runs)"
    metrics = [m for m in (*FINAL_METRICS, *METRIC_ALIASES) if m in table.columns]
    for name, frame, needed, numeric, filled, whole in [
            ("runs.csv", table, ("run_key", "run_id", "run_name", "dataset", "variant", "seed", "epochs_trained", "start_time"),
             ("seed", *metrics), ("run_key", "run_id", "run_name", "dataset", "variant"), ("seed", "epochs_trained")),
            ("curves.csv", curves, ("run_id", "metric", "epoch", "value"), ("epoch", "value"), ("run_id", "metric"), ("epoch",))]:
        if lacking := [c for c in needed if c not in frame.columns]:
            raise SuiteError(f"{folder / name} has no column {', '.join(lacking)}: {advice}")
        if frame.empty:
            raise SuiteError(f"{folder / name} holds no rows: {advice}")
        if blank := next((c for c in (*filled, *whole) if frame[c].isna().any()), None):
            raise SuiteError(f"{folder / name}: column {blank} has an empty cell (line {int(frame[blank].isna().argmax()) + 2}): {advice}")
        for column in numeric:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                bad = next(v for v in frame[column] if pd.isna(pd.to_numeric(v, errors="coerce")) and pd.notna(v))
                raise SuiteError(f"{folder / name}: column {column} holds {str(bad)[:40]!r}, not a number: {advice}")
        for column in whole:
            if not (frame[column] % 1 == 0).all():
                bad = frame[column][frame[column] % 1 != 0].iloc[0]
                raise SuiteError(f"{folder / name}: column {column} holds '{bad:g}', not a whole number: {advice}")
    if pd.to_datetime(table["start_time"], errors="coerce", utc=True, format="ISO8601").isna().any():
        raise SuiteError(f"{folder / 'runs.csv'}: column start_time holds a value that is not a time: {advice}")
    return table, curves


def _tuned(study: Study, table: pd.DataFrame) -> Study:
    """With a `tune` block: the study plus its `@tuned` variants at the values a report's runs.csv recorded."""
    if study.tune is None:
        return study
    columns = {f"config.{path}": path for path in study.tune.space}
    missing = [c for c in columns if c not in table]
    if missing:
        raise SuiteError(f"runs.csv of study '{study.name}' has no column {missing[0]}: it cannot say the tuned values")
    tuned = {(d, v.removesuffix(TUNED)): {path: plain(group[c].iloc[0]) for c, path in columns.items()}
             for (d, v), group in table[table["variant"].str.endswith(TUNED)].groupby(["dataset", "variant"])}
    return with_tuned(study, tuned)


def plain(value):
    """A numpy scalar as the Python value a config field takes."""
    return value.item() if hasattr(value, "item") else value


def _row(spec, run) -> dict:
    return _row_of(spec, run.data.metrics, run.data.tags, run.info.run_id, run.info.run_name,
                   pd.Timestamp(run.info.start_time, unit="ms"))


def _row_of(spec, metrics: dict, tags: dict, run_id: str, run_name: str, start_time) -> dict:
    row = {
        "dataset": spec.dataset, "variant": spec.variant, "seed": spec.seed,
        **{axis: value for axis, value in spec.point},
        "diverged": bool(metrics.get("diverged", 0.0)),
        **{m: metrics.get(m, float("nan")) for m in FINAL_METRICS},
        **({alias: metrics.get(alias, metrics.get(name, float("nan"))) for alias, name in METRIC_ALIASES.items() if alias in FINAL_METRICS}
           if task_of(spec.dataset) == "regression" else {}),
        "run_id": run_id, "run_name": run_name, "run_key": spec.run_key,
        "git_commit": tags.get("suite.git_commit", ""), "git_dirty": tags.get("suite.git_dirty") == "True",
        "device": tags.get("suite.device", ""), "data_fingerprint": tags.get("suite.data_fingerprint", ""), "start_time": start_time,
        **{f"config.{k}": v for k, v in flatten(spec.config.canonical()).items()},
        **({"plugins": tags["suite.plugins"]} if tags.get("suite.plugins") else {}),  # (a study without plug-ins: no column)
    }
    return row


def _columns(study: Study, rows: list[dict]) -> list[str]:
    if rows:  # every row's columns, in first-seen order (a cnn variant's config fields are not an mlp baseline's)
        return list(dict.fromkeys(key for row in rows for key in row))
    return ["dataset", "variant", "seed", *study.grid_axes, "diverged", *FINAL_METRICS, "run_id", "run_name", "run_key"]


def _at_tested_epoch(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Add train/val metrics of the epoch whose weights were tested (the restored best, or the last)."""
    tested = runs[["run_id", "tested_epoch"]].rename(columns={"tested_epoch": "epoch"})
    picked = curves.merge(tested, on=["run_id", "epoch"]).pivot_table(index="run_id", columns="metric", values="value", observed=True)
    wanted = [m for m in ("train_loss", "train_acc", "val_loss", "val_acc") if m in picked.columns]
    return runs.merge(picked[wanted], left_on="run_id", right_index=True, how="left")


def _curves(client, runs: pd.DataFrame) -> pd.DataFrame:
    history = tracking.histories(client, runs["run_id"].tolist(), [m for m in CURVE_METRICS if m not in METRIC_ALIASES])
    curves = pd.DataFrame(history, columns=["run_id", "metric", "epoch", "value"])
    regression = runs.loc[runs["dataset"].map(task_of) == "regression", "run_id"]
    for alias, name in METRIC_ALIASES.items():  # the loss series under the name study files use too
        if alias in CURVE_METRICS:
            same = curves[(curves["metric"] == name) & curves["run_id"].isin(regression)].assign(metric=alias)
            curves = pd.concat([curves, same], ignore_index=True)
    ids = runs[["run_id", "dataset", "variant", "seed"]]
    return ids.merge(curves, on="run_id")
