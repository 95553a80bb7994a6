"""CPU used by the load generator and the app during a run, and when to blame the generator.

The generator shares the machine with the app, so every run measures both: a figure
made by a generator at its own limit says little about the app.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from labkit.load._errors import GeneratorBottleneckWarning


@dataclass(frozen=True)
class CpuReport:
    """CPU used during a run, in cores (1.0 = one core busy for the whole run)."""

    generator_cores: float
    app_cores: float | None
    machine_busy: float
    machine_cores: int

    def bottleneck(self) -> str | None:
        """Why the generator, not the app, probably limited the run — or None."""
        # One Python process's threads share a GIL, so about one core is its ceiling.
        if self.generator_cores >= 0.85:
            return (
                f"the load generator used {self.generator_cores:.2f} CPU cores, about all one "
                "Python process can use"
            )
        if (self.app_cores is not None and self.machine_busy >= 0.90
                and self.generator_cores > self.app_cores):
            return (
                f"the machine was {self.machine_busy:.0%} busy and the generator used more CPU "
                f"({self.generator_cores:.2f} cores) than the app ({self.app_cores:.2f})"
            )
        return None

    def __str__(self) -> str:
        app = "?" if self.app_cores is None else f"{self.app_cores:.2f}"
        return (
            f"generator {self.generator_cores:.2f} cores · app {app} cores · machine "
            f"{self.machine_busy:.0%} busy of {self.machine_cores} cores"
        )


@dataclass(frozen=True)
class _Snapshot:
    epoch_s: float  # time.time(): comparable with the request logs' start times
    cpu_s: dict[str, float]  # CPU seconds so far, per tree (generator, app)
    machine: psutil._common.scputimes


class CpuMeter:
    """CPU seconds of the generator and the app between start() and stop(), sampled so
    that children that exit early (Locust's forked workers) still count."""

    def __init__(
        self, generator_pid: int | Sequence[int], app_pid: int | None, generator_children: bool
    ) -> None:
        # The kernel's children include the app itself: counted as the generator only
        # when the generator is a subprocess (Locust). A distributed Locust run is
        # several: its master and its workers.
        generators = [generator_pid] if isinstance(generator_pid, int) else list(generator_pid)
        self._trees = {"generator": generators, "app": [] if app_pid is None else [app_pid]}
        self._children = {"generator": generator_children, "app": True}
        self._seen: dict[str, dict[int, float]] = {name: {} for name in self._trees}
        self._snapshots: list[_Snapshot] = []

    def start(self) -> None:
        self.sample()

    def sample(self) -> None:
        for name, pids in self._trees.items():
            for proc in (p for pid in pids for p in _processes(pid, self._children[name])):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    self._seen[name][proc.pid] = times.user + times.system
        self._snapshots.append(_Snapshot(
            time.time(), {name: sum(seen.values()) for name, seen in self._seen.items()},
            psutil.cpu_times()))

    def stop(self, busy_from_epoch_s: float | None = None,
             busy_until_epoch_s: float | None = None) -> CpuReport:
        """CPU from start() to now; or, given when the load ran, over the samples that
        span just that: Locust's processes spend seconds importing before they send."""
        self.sample()
        first, last = self._snapshots[0], self._snapshots[-1]
        if busy_from_epoch_s is not None:
            first = max((s for s in self._snapshots if s.epoch_s <= busy_from_epoch_s),
                        key=lambda s: s.epoch_s, default=first)
        if busy_until_epoch_s is not None:
            last = min((s for s in self._snapshots if s.epoch_s >= busy_until_epoch_s),
                       key=lambda s: s.epoch_s, default=last)
        wall = max(last.epoch_s - first.epoch_s, 1e-9)
        total = sum(last.machine) - sum(first.machine)
        idle = (last.machine.idle + getattr(last.machine, "iowait", 0.0)) - (
            first.machine.idle + getattr(first.machine, "iowait", 0.0)
        )
        used = {name: last.cpu_s[name] - first.cpu_s[name] for name in self._trees}
        return CpuReport(
            generator_cores=used["generator"] / wall,
            app_cores=used["app"] / wall if self._trees["app"] else None,
            machine_busy=1 - idle / total if total > 0 else 0.0,
            machine_cores=psutil.cpu_count() or 1,
        )


def _processes(pid: int, children: bool) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return []


def warn_if_generator_bound(cpu: CpuReport) -> None:
    """Warn, at the caller of the public run function, when `cpu` blames the generator."""
    reason = cpu.bottleneck()
    if reason:
        warnings.warn(
            f"{reason}: the generator, not the app, is probably the bottleneck, so these "
            "figures understate what the app can do. Use fewer workers or a lower rate, "
            "run_locust(processes=…), or generate load from another machine.",
            GeneratorBottleneckWarning,
            stacklevel=3,
        )
