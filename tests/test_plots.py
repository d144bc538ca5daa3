"""Figures draw the same Student-t intervals the tables give (checked against scipy)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats as sps

from suite.report import plots


def t95(values):
    a = np.asarray(values, dtype=float)
    return sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))


def test_t_interval_matches_scipy_and_is_empty_below_two_values():
    values = [0.91, 0.88, 0.93, 0.90, 0.86]
    assert plots.t_interval(values) == pytest.approx(t95(values))
    assert all(np.isnan(plots.t_interval([0.9])))


def test_grid_axis_band_is_the_t_interval_at_each_value():
    acc = {32: [0.950, 0.955, 0.948, 0.960, 0.952], 64: [0.965, 0.962, 0.970, 0.961, 0.968], 128: [0.97, 0.975, 0.972, 0.978, 0.971]}
    runs = pd.DataFrame([{"dataset": "mnist", "model.hidden": [w], "test_acc": a} for w, values in acc.items() for a in values])
    fig = plots.axis_plot(runs, "model.hidden", "test_acc")
    band = next(c for c in fig.axes[0].collections if isinstance(c, PolyCollection))
    vertices = band.get_paths()[0].vertices
    for width, values in acc.items():
        at = vertices[np.isclose(vertices[:, 0], width), 1]
        assert (at.min(), at.max()) == pytest.approx(tuple(100 * v for v in t95(values)))
    assert fig.axes[0].get_xscale() == "log"  # widths double: a log axis
    plots.plt.close(fig)


def test_accuracy_bands_stay_within_0_and_100_percent():
    two_left = [99.0, 60.0]  # two runs left at a late epoch: t(1) makes the interval huge
    assert plots.t_interval(two_left)[1] > 100
    assert plots.interval_for("val_acc")(two_left) == (0.0, 100.0)
    assert plots.interval_for("val_loss") is plots.t_interval


def test_learning_curve_legend_sits_beside_the_plots():
    rows = [{"run_id": f"{v}{seed}", "dataset": "mnist", "variant": f"hidden={v}", "seed": seed, "metric": m, "epoch": e,
             "value": 0.9 + 0.001 * e + 0.0001 * seed}
            for v in (32, 64, 128, 256, 512, 1024, 2048) for seed in range(3) for m in ("train_acc", "val_acc") for e in range(1, 11)]
    fig = plots.learning_curves(pd.DataFrame(rows))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1 and len(legends[0].get_texts()) == 7
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
    assert box.x1 <= fig.bbox.x1  # and still inside the figure
    plots.plt.close(fig)


def test_the_ui_url_reports_link_to_is_an_http_address(monkeypatch):
    """Reports put it into every run link: a javascript: or typo'd value is one line, not a report of broken links."""
    from suite.errors import SuiteError
    from suite.report import ui_url

    monkeypatch.delenv("SUITE_UI_URL", raising=False)
    assert ui_url(None) is None and ui_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    for bad in ("javascript:alert(1)", "127.0.0.1:5000", "http://", "http://host:5000/\nx", "http://a b", "http://[::1:5000"):  # (http:// made
        with pytest.raises(SuiteError, match="the MLflow UI's URL is http\\(s\\)://HOST:PORT, not "):   # links to http:/#/...)
            ui_url(bad)
    monkeypatch.setenv("SUITE_UI_URL", "ftp://x")
    with pytest.raises(SuiteError, match=r"\$SUITE_UI_URL"):
        ui_url(None)
