"""The report's figures (drawn by `plots`, the one module that imports seaborn), saved as PNG in the report's folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import analysis, components
from .content import has_classes

FIG_DPI = 110


def save(made: list[tuple], folder: Path) -> list[tuple[str, str]]:
    """Write each (file name, caption, figure) as PNG; returns the (file name, caption) pairs."""
    from . import plots

    for name, _, fig in made:
        if fig is not None:  # (None: kept as it is)
            fig.savefig(folder / name, dpi=FIG_DPI, metadata={"Software": None})
            plots.plt.close(fig)
    return [(name, caption) for name, caption, _ in made]


CAPTIONS = {
    "training_loss.png": "Training loss of every 50th batch (the batch's own loss, before its update): mean over seeds per variant, "
                         "band = Student-t 95% CI.",
    "confusion.png": "Test confusion matrices over seeds: row = true class, column = predicted, in percent of the row.",
    "misclassified.png": "Misclassified test images (true → predicted), the first ones of each variant's seeds in order.",
}


def study_figures(study, results, summary, comparisons, folder: Path, kept=()) -> list[tuple[str, str]]:
    """Render and save every figure; returns (file name, caption) pairs. `kept`: figures already in `folder` that these
    results cannot draw (a report rebuilt from its runs.csv keeps its training loss figure)."""
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
        made.append(("training_loss.png", CAPTIONS["training_loss.png"], plots.step_curves(results.steps)))
    elif "training_loss.png" in kept:
        made.append(("training_loss.png", CAPTIONS["training_loss.png"], None))
    if task == "classification" and runs["train_eval_acc"].notna().any():
        made.append(("generalisation_gap.png", "Generalisation gap: accuracy on 5,000 training images minus test accuracy, both on the "
                     "tested weights (eval mode, no augmentation); bar = mean with Student-t 95% CI, points = seeds.",
                     plots.generalisation_gap(runs)))
    for axis in study.grid_axes:
        made.append((f"axis_{axis.replace('.', '_')}.png", f"{plots.label(metric)} against {axis}: mean with Student-t 95% CI, each seed a point.",
                     plots.axis_plot(runs, axis, metric)))
    if not comparisons.empty:
        made.append(("forest.png", f"Paired differences to the baseline '{study.baseline.split(',')[0] + ' of each slice' if study.baselines else study.baseline}' with each CI at its test's Holm-adjusted level, as in the comparisons table (green: better, red: worse, grey: inconclusive{', orange: degenerate' if has_classes(study) else ''}).",
                     plots.forest(comparisons, metric)))
    return save(made, folder)


def error_figures(runs: pd.DataFrame, errors: dict, folder: Path, kept=()) -> list[tuple[str, str]]:
    """Confusion matrices and a gallery of misclassified test images, per variant over seeds (runs that logged them);
    `kept`: those already in `folder`, from the predictions of a store these results were not read from."""
    from . import plots

    if "confusion.png" in kept:
        return [(name, CAPTIONS[name]) for name in ("confusion.png", "misclassified.png") if name in kept]

    examples = {}
    for (dataset, variant), group in runs.groupby(["dataset", "variant"], observed=True, sort=False):
        kept = [(image, components.class_name(dataset, int(t)), components.class_name(dataset, int(p))) for r in group["run_id"] if r in errors
                for image, t, p in zip(errors[r]["images"], errors[r]["true"], errors[r]["predicted"])
                if getattr(image, "ndim", 0) == 3]  # images (C, H, W): a plug-in's vector data has no picture
        if kept:
            examples[dataset, variant] = kept[:8]
    names = {d: list(found) for d in runs["dataset"].unique() if (found := components.class_names(d))}
    made = [("confusion.png", CAPTIONS["confusion.png"], plots.confusion_grid(analysis.confusions(runs, errors), names))]
    if examples:
        made.append(("misclassified.png", CAPTIONS["misclassified.png"], plots.gallery(examples)))
    return save(made, folder)
