"""labkit.plots draws real runs and writes them as PNG files."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

from labkit import load, plots

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)
        with load.serve_app("labkit.load_demo:app") as app:
            closed = load.closed_loop(app.url, "/ping", workers=2, requests=200)
            opened = load.open_loop(app.url, "/ping", rate=100, duration_s=1.0)
            sweep = load.sweep(app.url, "/work?cpu_ms=3", workers=[1, 2, 4], duration_s=0.5)
    return {"closed": closed, "open": opened}, sweep


@pytest.mark.parametrize("draw", [plots.latency_histogram, plots.percentile_curve,
                                  plots.over_time])
def test_run_plots_label_every_run_and_save_as_png(runs, draw, tmp_path):
    named, _ = runs

    fig = draw(named)
    path = plots.save(fig, draw.__name__, tmp_path)

    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("closed" in label for label in labels)
    assert any("open" in label for label in labels)
    assert fig.axes[0].get_xlabel() or fig.axes[-1].get_xlabel()
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_over_time_draws_a_locust_style_timeline(runs):
    named, _ = runs
    line = load.timeline(named["open"], bucket_s=0.5)

    fig = plots.over_time({"per second": line})

    assert [label for label in fig.axes[0].get_legend_handles_labels()[1]] == [
        "per second: p50", "per second: p99"]


def test_capacity_marks_the_knee(runs, tmp_path):
    _, sweep = runs

    fig = plots.capacity(sweep)

    knee = load.find_knee(sweep)
    assert any(label.startswith(f"knee at workers = {knee:g}:") for label in _legend_labels(fig))
    assert plots.save(fig, "capacity", tmp_path).read_bytes()[:8] == PNG_MAGIC


def test_capacity_compares_sweeps_with_a_knee_each(runs):
    _, sweep = runs

    fig = plots.capacity({"cold": sweep, "warm": sweep})

    knees = [label for label in _legend_labels(fig) if "knee at workers" in label]
    assert [knee.split(":")[0] for knee in knees] == ["cold", "warm"]


def test_over_time_title_and_legend_do_not_overlap(runs):
    named, _ = runs

    title = "A title as long as a lesson's title, or longer"
    per_second = load.timeline(named["open"], bucket_s=0.5)

    fig = plots.over_time({**named, "per second": per_second}, title=title)  # 2 legend rows

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    suptitle = next(text for text in fig.texts if text.get_text() == title)
    assert not legend.overlaps(suptitle.get_window_extent(renderer))
    assert not legend.overlaps(fig.axes[0].get_window_extent(renderer))


def test_capacity_writes_nothing_over_its_data(runs):
    _, sweep = runs

    fig = plots.capacity({"cold": sweep, "warm": sweep})

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    plot_area = fig.axes[0].get_window_extent(renderer)
    assert all(not ax.texts and ax.get_legend() is None for ax in fig.axes)
    assert not any(legend.get_window_extent(renderer).overlaps(plot_area)
                   for legend in fig.legends)


def test_spread_shows_the_cheapest_apart_on_their_own_linear_scale():
    rng = np.random.default_rng(1)
    samples = {name: pd.Series(rng.normal(median, median / 10, 30)) for name, median in
               [("savepoint", 3.6), ("delete", 4.5), ("truncate", 20.0), ("template", 300.0)]}

    fig = plots.spread(samples, ylabel="ms added per test", title="isolation")

    whole, close = fig.axes
    assert whole.get_yscale() == "log" and close.get_yscale() == "linear"
    assert [label.get_text().split()[0] for label in close.get_xticklabels()] == [
        "savepoint", "delete"]
    # the two cheapest fill their panel, rather than the bottom of a scale made for 300 ms
    assert close.get_ylim()[1] < 2 * max(samples["delete"])


def _legend_labels(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_save_defaults_to_labkit_out(monkeypatch, tmp_path, runs):
    monkeypatch.setenv("LABKIT_OUT", str(tmp_path / "figures"))

    path = plots.save(plots.latency_histogram(runs[0]["open"]), "one")

    assert path == tmp_path / "figures" / "one.png"
