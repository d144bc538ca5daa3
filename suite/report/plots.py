"""Figures of a report: each function takes tidy DataFrames and returns a matplotlib Figure.

Accuracies are drawn in percent. Every interval drawn is the Student-t 95% interval of the
mean over seeds (`stats.mean_ci`, the one the tables give), final metrics and learning-curve
bands alike: with 5 seeds a percentile bootstrap is too narrow, and seaborn's would be redrawn
at random on every rebuild. Only this module imports seaborn.
"""

from __future__ import annotations

import textwrap
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..analysis.stats import mean_ci  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

LABELS = {
    "test_acc": "test accuracy (%)", "val_acc": "validation accuracy (%)", "train_acc": "training accuracy (%)",
    "test_loss": "test loss", "val_loss": "validation loss", "train_loss": "training loss",
    "test_mse": "test MSE", "val_mse": "validation MSE", "epochs_trained": "epochs trained",
    "train_seconds": "training time (s)", "gap": "train - test accuracy (pp)",
}


def t_interval(values) -> tuple[float, float]:
    """seaborn `errorbar`: the Student-t 95% interval of the mean (NaN, drawn as nothing, below two values)."""
    ci = mean_ci(values)
    return ci.low, ci.high


def interval_for(metric: str):
    """`t_interval`, cut to the values the metric can take: an accuracy band stays within 0-100%.

    With two or three runs left at an epoch (the others stopped early) t's interval is wide
    enough to leave that range; the cut marks the limit of what the runs can say.
    """
    if not metric.endswith("_acc"):
        return t_interval
    return lambda values: tuple(float(np.clip(v, 0, 100)) for v in t_interval(values))


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def scaled(values, metric: str):
    """Accuracies as percent, other metrics unchanged."""
    return values * 100 if metric.endswith("_acc") or metric == "gap" else values


def _facets(n: int, width: float = 6.0, height: float = 4.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


@contextmanager
def _seeded_jitter():
    """seaborn's stripplot jitters its points with NumPy's global generator: seeded here (and put back after), so that
    a report rebuilt from the same runs draws the same figures, byte for byte."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(state)


def final_metric(runs: pd.DataFrame, summary: pd.DataFrame, metric: str, title: str):
    """Every seed as a point; the mean and its 95% CI drawn over them."""
    datasets = list(summary["dataset"].unique())
    fig, axes = _facets(len(datasets), width=max(5.0, 0.9 * runs["variant"].nunique() + 2.5))
    for ax, dataset in zip(axes, datasets):
        part = runs[runs["dataset"] == dataset].assign(value=lambda d: scaled(d[metric], metric))
        with _seeded_jitter():
            sns.stripplot(data=part, x="variant", y="value", hue="diverged", palette={False: "tab:blue", True: "tab:red"},
                          alpha=0.55, size=6, jitter=0.12, ax=ax, legend=bool(part["diverged"].any()))
        s = summary[summary["dataset"] == dataset]
        x = np.arange(len(s))
        mean = scaled(s["mean"].to_numpy(), metric)
        err = np.vstack([mean - scaled(s["ci_low"].to_numpy(), metric), scaled(s["ci_high"].to_numpy(), metric) - mean])
        ax.errorbar(x, mean, yerr=err, fmt="D", color="black", capsize=6, markersize=7, label="mean, 95% CI")
        ax.set(title=f"{dataset}", xlabel="variant", ylabel=label(metric))
        ax.tick_params(axis="x", rotation=30 if len(s) > 4 else 0)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 11)), fontsize="medium")
    fig.tight_layout()
    return fig


def learning_curves(curves: pd.DataFrame, task: str = "classification"):
    """Mean over seeds with a Student-t 95% band, per variant: training (left) and validation (right)."""
    metrics = ["train_acc", "val_acc"] if task == "classification" else ["train_loss", "val_loss"]
    datasets = list(curves["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(13.5, 4.2 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        for ax, metric in zip(row, metrics):
            part = curves[(curves["dataset"] == dataset) & (curves["metric"] == metric)]
            part = part.assign(value=scaled(part["value"], metric))
            single = part["epoch"].nunique() == 1  # a band needs two epochs; draw error bars instead
            sns.lineplot(data=part, x="epoch", y="value", hue="variant", errorbar=interval_for(metric), marker="o", ax=ax,
                         err_style="bars" if single else "band", err_kws={"capsize": 6} if single else None)
            ax.set(title=f"{dataset}: {label(metric)}", xlabel="epoch", ylabel=label(metric))
            if part["epoch"].nunique() <= 12:
                ax.set_xticks(sorted(part["epoch"].unique()))
            ax.get_legend().remove()
        # one legend per row, beside the plots: inside, seven variants cover the late epochs
        handles, labels = row[-1].get_legend_handles_labels()
        row[-1].legend(handles, labels, title="variant", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def step_curves(steps: pd.DataFrame):
    """The training loss every few batches, mean over seeds with a t band, per variant; one panel per dataset."""
    datasets = list(steps["dataset"].unique())
    fig, axes = _facets(len(datasets), width=7.0)
    for ax, dataset in zip(axes, datasets):
        part = steps[steps["dataset"] == dataset]
        sns.lineplot(data=part, x="step", y="value", hue="variant", errorbar=t_interval, ax=ax)
        ax.set(title=f"{dataset}: training loss per batch", xlabel="batch (step)", ylabel="training loss")
        ax.legend(title="variant", fontsize="small", loc="upper right")
    fig.tight_layout()
    return fig


def generalisation_gap(runs: pd.DataFrame):
    """Accuracy on training images minus test accuracy, both measured on the tested weights, per run."""
    datasets = list(runs["dataset"].unique())
    fig, axes = _facets(len(datasets), width=max(5.0, 0.9 * runs["variant"].nunique() + 2.5))
    data = runs.assign(gap=100 * (runs["train_eval_acc"] - runs["test_acc"]))
    for ax, dataset in zip(axes, datasets):
        part = data[data["dataset"] == dataset]
        sns.barplot(data=part, x="variant", y="gap", errorbar=t_interval, color="lightsteelblue", ax=ax)
        with _seeded_jitter():
            sns.stripplot(data=part, x="variant", y="gap", color="tab:blue", size=5, jitter=0.12, ax=ax)
        ax.axhline(0, color="grey", linewidth=1)
        ax.set(title=f"{dataset}: generalisation gap", xlabel="variant", ylabel=label("gap"))
        ax.tick_params(axis="x", rotation=30 if part["variant"].nunique() > 4 else 0)
    fig.tight_layout()
    return fig


def is_geometric(values) -> bool:
    """Positive numbers whose successive ratios are roughly constant (and > 1.5): plot on a log axis."""
    v = np.sort(np.asarray([x for x in values if x is not None], dtype=float))
    if len(v) < 3 or (v <= 0).any():
        return False
    ratios = v[1:] / v[:-1]
    return bool(ratios.min() > 1.5 and ratios.max() / ratios.min() < 1.6)


def axis_plot(runs: pd.DataFrame, axis: str, metric: str):
    """The metric against one grid axis: each seed as a point, mean with a 95% CI."""
    datasets = list(runs["dataset"].unique())
    fig, axes = _facets(len(datasets))
    if runs[axis].map(lambda v: isinstance(v, list) and len(v) == 1).all():  # e.g. model.hidden: [[32], [64], ...]
        runs = runs.assign(**{axis: runs[axis].map(lambda v: v[0])})
    numeric = pd.to_numeric(runs[axis], errors="coerce")
    for ax, dataset in zip(axes, datasets):
        part = runs[runs["dataset"] == dataset].assign(value=lambda d: scaled(d[metric], metric))
        if numeric.notna().all():
            part = part.assign(x=pd.to_numeric(part[axis]))
            sns.lineplot(data=part, x="x", y="value", errorbar=interval_for(metric), marker="o", ax=ax, label="mean, 95% CI")
            sns.scatterplot(data=part, x="x", y="value", alpha=0.4, ax=ax, label="one seed")
            if is_geometric(part["x"].unique()):
                ax.set_xscale("log", base=2 if np.allclose(np.log2(part["x"].unique()) % 1, 0) else 10)
                ticks = sorted(part["x"].unique())
                ax.set_xticks(ticks, [f"{v:g}" for v in ticks])  # 32, not 2^5
                ax.minorticks_off()
        else:
            part = part.assign(x=part[axis].map(lambda v: "none" if v is None else str(v)))
            sns.pointplot(data=part, x="x", y="value", errorbar=interval_for(metric), ax=ax, capsize=0.1)
        ax.set(title=f"{dataset}: {label(metric)} against {axis}", xlabel=axis, ylabel=label(metric))
    fig.tight_layout()
    return fig


def forest(comparisons: pd.DataFrame, metric: str):
    """Paired difference to the baseline with its CI at the test's Holm level, one line per variant."""
    datasets = list(comparisons["dataset"].unique())
    fig, axes = _facets(len(datasets), width=8.0, height=1.4 + 0.55 * max(1, comparisons.groupby("dataset").size().max()))
    colours = {"better": "tab:green", "worse": "tab:red", "inconclusive": "tab:grey", "degenerate": "tab:orange"}
    for ax, dataset in zip(axes, datasets):
        part = comparisons[comparisons["dataset"] == dataset].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        mean = scaled(part["mean_diff"].to_numpy(dtype=float), metric)
        low, high = scaled(part["ci_low"].to_numpy(dtype=float), metric), scaled(part["ci_high"].to_numpy(dtype=float), metric)
        for yi, m, lo, hi, verdict in zip(y, mean, low, high, part["verdict"]):
            ax.errorbar(m, yi, xerr=[[m - lo], [hi - m]], fmt="o", color=colours[verdict], capsize=5, label=verdict)
        ax.axvline(0, color="black", linewidth=1)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6))  # legible under long variant names
        ax.set_yticks(y, [f"{v} (n={n})" for v, n in zip(part["variant"], part["n_pairs"])])
        unit = " (pp)" if metric.endswith("_acc") else ""
        ax.set(title=f"{dataset}: difference to {part['baseline'].iloc[0]}", xlabel=f"{metric} difference{unit}, paired by seed, CI at Holm level")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def search_history(trials: pd.DataFrame, objective: str, direction: str):
    """Each completed trial's objective in trial order, with the best so far as a step line."""
    done = trials[trials["state"] == "COMPLETE"].sort_values("trial")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = scaled(done["value"], objective)
    best = values.cummax() if direction == "maximize" else values.cummin()
    ax.scatter(done["trial"], values, color="tab:blue", alpha=0.7, label="trial")
    ax.step(done["trial"], best, where="post", color="tab:red", label="best so far")
    pruned = trials[trials["state"] == "PRUNED"]
    if len(pruned):
        ax.scatter(pruned["trial"], [values.min()] * len(pruned), marker="x", color="grey", label="pruned (no final value)")
    ax.set(title="Optimisation history", xlabel="trial", ylabel=label(objective))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # trials are whole numbers
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def importances(values: dict):
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(values)))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set(title="Parameter importances", xlabel="importance (PED-ANOVA, sums to 1)")
    fig.tight_layout()
    return fig


def search_slices(trials: pd.DataFrame, objective: str, log: dict):
    """The objective against each searched parameter, one panel each; colour = trial number."""
    done = trials[trials["state"] == "COMPLETE"]
    fig, axes = _facets(len(log), width=5.0)
    for ax, path in zip(axes, log):
        points = ax.scatter(done[path], scaled(done["value"], objective), c=done["trial"], cmap="viridis", alpha=0.8)
        if log[path]:
            ax.set_xscale("log")
        ax.set(title=path, xlabel=path, ylabel=label(objective))
    fig.colorbar(points, ax=axes[-1], label="trial")
    fig.tight_layout()
    return fig


def confusion_grid(matrices: dict, names: dict | None = None):
    """One heatmap per (dataset, variant): the test confusion matrix over seeds, each row in percent of its true class;
    `names`: per dataset, its classes' names for the axes (else the labels)."""
    keys = list(matrices)
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    axes = grid.flatten()
    for ax, key in zip(axes, keys):
        matrix, seeds = matrices[key]
        share = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        labels = (names or {}).get(key[0])
        labels = labels if labels and len(labels) == len(share) else "auto"
        sns.heatmap(share, ax=ax, vmin=0, vmax=100, cmap="Blues", cbar=False, annot=len(share) <= 10, fmt=".0f",
                    annot_kws={"size": 7}, square=True, xticklabels=labels, yticklabels=labels)
        if labels != "auto":
            ax.tick_params(labelsize=7)
        ax.set_title(f"{key[1]} ({key[0]}, {seeds} seeds)", fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def gallery(examples: dict, per_row: int = 8):
    """Misclassified test images: one row per (dataset, variant), each image titled 'true -> predicted'."""
    keys = list(examples)
    fig, axes = plt.subplots(len(keys), per_row, figsize=(1.3 * per_row, 1.55 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        for i, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i < len(examples[key]):
                image, true, predicted = examples[key][i]
                image = np.asarray(image)
                image = image.transpose(1, 2, 0) if image.ndim == 3 and image.shape[0] in (1, 3) else image
                ax.imshow(image.squeeze(), cmap="gray" if image.squeeze().ndim == 2 else None)
                title = f"{true} → {predicted}"
                ax.set_title(title, fontsize=8 if len(title) <= 16 else 7)  # (class names: 'ankle boot → sneaker')
            else:
                ax.axis("off")
        row[0].set_ylabel(f"{key[1]}\n({key[0]})", fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
