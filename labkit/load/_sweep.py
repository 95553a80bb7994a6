"""Capacity: one run per load level, and the knee where more load stops paying."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from labkit.load._cpu import CpuReport
from labkit.load._errors import GeneratorBottleneckWarning
from labkit.load._progress import each_with_progress
from labkit.load._runner import RequestPath, closed_loop, open_loop
from labkit.load._stats import summary

if TYPE_CHECKING:
    import pandas as pd


def sweep(
    url: str,
    path: RequestPath = "/",
    *,
    workers: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    duration_s: float = 2.0,
    headers: Mapping[str, str] | None = None,
    app_pid: int | None = None,
    before_each: Callable[[], object] | None = None,
) -> pd.DataFrame:
    """Run one load per level — closed loop over `workers`, or open loop over `rates` —
    and summarize each: the data for a throughput/latency-vs-load curve.

    `before_each` runs before every level, e.g. to empty a cache so each level
    starts cold."""
    import pandas as pd

    levels: list[float]
    if workers is not None and rates is None:
        levels = list(workers)
    elif rates is not None and workers is None:
        levels = list(rates)
    else:
        raise ValueError(
            "sweep needs exactly one of workers=[…] (closed loop) or rates=[…] (open loop)")
    rows = []
    with warnings.catch_warnings():
        # One warning for the whole sweep, below, rather than one per level.
        warnings.simplefilter("ignore", GeneratorBottleneckWarning)
        for level in each_with_progress(levels, desc="sweep", unit="level"):
            if before_each is not None:
                before_each()
            if workers is not None:
                run = closed_loop(url, path, workers=int(level), duration_s=duration_s,
                                  headers=headers, app_pid=app_pid, progress=False)
            else:
                run = open_loop(url, path, rate=level, duration_s=duration_s, headers=headers,
                                app_pid=app_pid, progress=False)
            cpu: CpuReport = run.attrs["cpu"]
            rows.append({**summary(run), "generator_cores": cpu.generator_cores,
                         "app_cores": cpu.app_cores, "machine_busy": cpu.machine_busy,
                         "generator_bound": cpu.bottleneck() is not None})
    index = pd.Index(levels, name="workers" if workers else "offered_rps")
    frame = pd.DataFrame(rows, index=index)
    bound = frame.index[frame["generator_bound"]].tolist()
    if bound:
        warnings.warn(
            f"the generator was the likely bottleneck at {frame.index.name} = {bound}: "
            "read those points as lower bounds on the app's capacity.",
            GeneratorBottleneckWarning, stacklevel=2,
        )
    return frame


def find_knee(sweep_result: pd.DataFrame, fraction: float = 0.9) -> float:
    """The least load that already gets `fraction` of the sweep's best throughput.

    Past the knee, more load buys little more throughput but a longer queue, so the
    tail latency climbs: it is the most load worth offering, and a fair "capacity".
    """
    throughput = sweep_result["throughput_rps"]
    return throughput.index[throughput >= fraction * throughput.max()][0]
