"""Pictures of load runs: latency distributions, time lines, capacity curves.

Every function takes what ``labkit.load`` returns — one run's DataFrame, or several as
``{"closed": a, "open": b}`` to compare them on the same axes — and returns a matplotlib
``Figure``, which Jupyter shows inline. ``save(fig, "name")`` also writes it as PNG
under ``out/`` (or $LABKIT_OUT), for a report or a CI artifact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from labkit import load

Runs: TypeAlias = pd.DataFrame | Mapping[str, pd.DataFrame]
MARKED_PERCENTILES = (50, 90, 99, 99.9)


def save(fig: Figure, name: str, out_dir: Path | str | None = None) -> Path:
    """Write `fig` as ``<out_dir>/<name>.png`` and return the path."""
    directory = Path(out_dir or os.environ.get("LABKIT_OUT", "out"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def latency_histogram(runs: Runs, *, bins: int = 60, title: str = "Latency distribution") -> Figure:
    """How many requests took how long, on a log time axis so the tail stays visible.

    Dashed lines mark each run's mean, solid ones its p99: when the two are far
    apart, the mean is describing requests that hardly anyone had.
    """
    named = _named(runs)
    fig, ax = plt.subplots(figsize=(8, 4))
    everything = pd.concat([run["latency_ms"] for run in named.values()])
    edges = np.geomspace(max(everything.min(), 0.01), everything.max() * 1.05, bins)
    for (name, run), color in zip(named.items(), _colors()):
        ax.hist(run["latency_ms"], bins=edges.tolist(), alpha=0.5, color=color, label=name)
        ax.axvline(run["latency_ms"].mean(), color=color, linestyle="--", linewidth=1)
        ax.axvline(load.summary(run)["p99_ms"], color=color, linewidth=1.5)
    ax.set(xscale="log", yscale="log", xlabel="latency (ms, log scale)",
           ylabel="requests (log scale)", title=f"{title}  (dashed: mean · solid: p99)")
    _legend(ax, named)
    return fig


def percentile_curve(runs: Runs, *, title: str = "Latency by percentile") -> Figure:
    """Latency at every percentile, stretched toward the tail (HdrHistogram's plot).

    The x axis is 1 / (1 - percentile) on a log scale, so 90%, 99%, 99.9% are equally
    far apart: the slowest requests, which averages hide, get most of the picture.
    """
    named = _named(runs)
    fig, ax = plt.subplots(figsize=(8, 4))
    for (name, run), color in zip(named.items(), _colors()):
        latency = np.sort(run["latency_ms"].to_numpy())
        fraction_below = np.arange(latency.size) / latency.size  # 0 … (n-1)/n, never 1
        ax.plot(1 / (1 - fraction_below), latency, color=color, label=name, linewidth=1.8)
    ticks = [100 / (100 - p) for p in (0, *MARKED_PERCENTILES)]
    ax.set_xscale("log")
    ax.set_xticks(ticks, ["0%", *[f"{p:g}%" for p in MARKED_PERCENTILES]])
    ax.minorticks_off()
    ax.set(ylabel="latency (ms)", xlabel="percentile", title=title)
    ax.grid(alpha=0.3)
    _legend(ax, named)
    return fig


def over_time(runs: Runs, *, bucket_s: float = 0.25, title: str = "Over time") -> Figure:
    """Top: every request's latency at the time it was due. Bottom: responses per second.

    Accepts runs (one row per request) or per-second time lines such as
    ``load.timeline()`` or ``LocustRun.history``, which are drawn as p50/p99 lines.
    """
    named = _named(runs)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [3, 2]})
    for (name, frame), color in zip(named.items(), _colors()):
        if "latency_ms" in frame:
            top.scatter(frame["start_s"], frame["latency_ms"], s=4, alpha=0.5, color=color,
                        label=f"{name}: one dot per request", rasterized=True)
            line = load.timeline(frame, bucket_s)
        else:
            line = frame
            top.plot(line.index, line["p50_ms"], color=color, linestyle="--",
                     label=f"{name}: p50")
            top.plot(line.index, line["p99_ms"], color=color, label=f"{name}: p99")
        bottom.step(line.index, line["rps"], where="post", color=color, label=name)
    top.set(yscale="log", ylabel="latency (ms, log)")
    bottom.set(xlabel="time since the run started (s)", ylabel="responses / s")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    # Above the plot, not on it: a stall's slow tail can land in any corner. The
    # constrained layout puts the title above the legend, so neither covers the other.
    top.legend(fontsize=9, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2,
               frameon=False, markerscale=3)
    return fig


def capacity(sweeps: pd.DataFrame | Mapping[str, pd.DataFrame], *,
             title: str | None = None) -> Figure:
    """Throughput (solid) and p99 (dashed) against load, from ``load.sweep()``, with each
    sweep's knee marked; pass ``{"cold": a, "warm": b}`` to compare sweeps."""
    named = dict(sweeps) if isinstance(sweeps, Mapping) else {"": sweeps}
    level = next(iter(named.values())).index.name or "load"
    fig, left = plt.subplots(figsize=(8, 5.5), layout="constrained")
    right = left.twinx()
    entries: list[list[Artist]] = []  # per sweep, what its legend column lists
    for (name, sweep), color in zip(named.items(), _colors()):
        prefix = f"{name}: " if name else ""
        knee = load.find_knee(sweep)
        left.axvline(knee, color=color, linestyle=":", linewidth=1.5)
        column: list[Artist] = [
            *left.plot(sweep.index, sweep["throughput_rps"], "o-", color=color,
                       label=f"{prefix}throughput"),
            *right.plot(sweep.index, sweep["p99_ms"], "s--", color=color, alpha=0.7,
                        label=f"{prefix}p99 latency"),
            # The knee's figures go in the legend, next to its star: on the axes they
            # would cover some of the data, wherever they stood.
            *left.plot([knee], [sweep.loc[knee, "throughput_rps"]], "*", color=color,
                       markersize=16, linestyle="none",
                       label=f"{prefix}knee at {level.replace('_', ' ')} = {knee:g}: "
                             f"{sweep.loc[knee, 'throughput_rps']:,.0f} req/s, "
                             f"p99 {sweep.loc[knee, 'p99_ms']:,.1f} ms"),
        ]
        if "generator_bound" in sweep and sweep["generator_bound"].any():
            bound = sweep[sweep["generator_bound"]]
            column.append(left.scatter(bound.index, bound["throughput_rps"], s=160,
                                       facecolors="none", edgecolors="orange",
                                       label=f"{prefix}generator-bound"))
        entries.append(column)
    levels = np.concatenate([sweep.index.to_numpy(dtype=float) for sweep in named.values()])
    if levels.min() > 0 and levels.max() / levels.min() >= 8:
        left.set_xscale("log", base=2)  # levels like 1, 2, 4 … 32 spread evenly
    left.set_xticks(sorted(set(levels)))
    left.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    left.minorticks_off()
    label = level.replace("_", " ")
    left.set(xlabel=label, ylabel="throughput (req/s, solid)",
             title=title or f"Capacity: throughput and p99 against {label}")
    right.set_ylabel("p99 latency (ms, dashed)")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    # Below the plot, not on it: curves of any shape stay uncovered. One column per
    # sweep (matplotlib fills columns first, so shorter columns are padded).
    rows = max(len(column) for column in entries)
    blank = Line2D([], [], linestyle="none")
    padded = [column + [blank] * (rows - len(column)) for column in entries]
    handles = [artist for column in padded for artist in column]
    fig.legend(handles, [str(artist.get_label()) for artist in handles],
               loc="outside lower center", ncols=len(entries), fontsize=8, frameon=False)
    left.grid(alpha=0.3)
    return fig


def spread(samples: Mapping[str, pd.Series], *, ylabel: str, title: str,
           zoom: int = 2) -> Figure:
    """Every sample as a dot over its box, one column per name, in the order given.

    Left, all of them on a log scale: they may differ by orders of magnitude. Right, the
    first `zoom` (pass them cheapest first) on a linear scale of their own: at the
    bottom of a log scale, values a few ms apart look alike, and the comparison most
    often asked is between the cheapest two.
    """
    if not samples:
        raise ValueError("nothing to plot: pass a dict of name → samples")
    names = list(samples)
    panels = [names, names[:zoom]] if len(names) > zoom else [names]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.5 + 1.3 * sum(map(len, panels)), 3.8),
                             layout="constrained", squeeze=False,
                             gridspec_kw={"width_ratios": [len(shown) for shown in panels]})
    colors = dict(zip(names, _colors()))
    jitter = np.random.default_rng(0)
    for ax, shown in zip(axes[0], panels):
        values = [samples[name].to_numpy(dtype=float) for name in shown]
        boxes = ax.boxplot(values, showfliers=False, widths=0.5, patch_artist=True,
                           medianprops={"color": "black"})
        for box, name in zip(boxes["boxes"], shown):
            box.set(facecolor=colors[name], alpha=0.25)
        for position, (name, points) in enumerate(zip(shown, values), start=1):
            ax.scatter(position + jitter.uniform(-0.15, 0.15, points.size), points, s=8,
                       alpha=0.6, color=colors[name], zorder=3)
        ax.set_xticks(range(1, len(shown) + 1),
                      [f"{name}\nmedian {np.median(samples[name]):.3g}" for name in shown])
        ax.grid(axis="y", which="both", alpha=0.3)
    whole = axes[0][0]
    whole.set_yscale("log")
    whole.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    whole.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:g}"))
    whole.yaxis.set_minor_locator(NullLocator())
    whole.set(ylabel=f"{ylabel} (log scale)", title="all" if len(panels) > 1 else None)
    if len(panels) > 1:
        close = axes[0][1]
        close.set_ylim(bottom=0)
        close.set(ylabel=ylabel, title=f"the cheapest {zoom}, linear scale")
    fig.suptitle(title)
    return fig


def _named(runs: Runs) -> dict[str, pd.DataFrame]:
    if isinstance(runs, pd.DataFrame):
        return {runs.attrs.get("label") or runs.attrs.get("mode") or "run": runs}
    if not runs:
        raise ValueError("nothing to plot: pass a run, or a dict of name → run")
    return dict(runs)


def _colors() -> list[str]:
    return [f"C{i}" for i in range(10)]


def _legend(ax: plt.Axes, named: Mapping[str, pd.DataFrame]) -> None:
    if len(named) > 1:
        ax.legend(fontsize=9)
