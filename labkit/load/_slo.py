"""Service-level objectives: check a run against targets, and say why it missed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.load._errors import SLOViolation
from labkit.load._stats import span_s, summary

if TYPE_CHECKING:
    import pandas as pd

_OBJECTIVES = {
    # name: (label, unit, True if the measured value must be at least the target)
    "success_rate": ("success rate", "%", True),
    "min_throughput_rps": ("throughput", "req/s", True),
    "p50_ms": ("p50 latency", "ms", False),
    "p90_ms": ("p90 latency", "ms", False),
    "p99_ms": ("p99 latency", "ms", False),
    "p999_ms": ("p99.9 latency", "ms", False),
    "max_ms": ("max latency", "ms", False),
}


def slo_report(
    run: pd.DataFrame,
    *,
    success_rate: float | None = None,
    min_throughput_rps: float | None = None,
    p50_ms: float | None = None,
    p90_ms: float | None = None,
    p99_ms: float | None = None,
    p999_ms: float | None = None,
    max_ms: float | None = None,
) -> tuple[bool, str]:
    """Check a run against objectives; return (all met, a table a person can read)."""
    targets = {
        "success_rate": success_rate, "min_throughput_rps": min_throughput_rps,
        "p50_ms": p50_ms, "p90_ms": p90_ms, "p99_ms": p99_ms, "p999_ms": p999_ms,
        "max_ms": max_ms,
    }
    given = {name: value for name, value in targets.items() if value is not None}
    if not given:
        raise ValueError("name at least one objective, e.g. p99_ms=100 or success_rate=0.99")
    stats = summary(run)
    lines, met_all = [], True
    for name, target in given.items():
        label, unit, at_least = _OBJECTIVES[name]
        measured = stats["throughput_rps" if name == "min_throughput_rps" else
                         "p99.9_ms" if name == "p999_ms" else name]
        met = measured >= target if at_least else measured <= target
        met_all &= met
        rule = "≥" if at_least else "≤"
        line = (f"  {'✓' if met else '✗'} {label:<14} {_fmt(measured, unit):>12}   "
                f"must be {rule} {_fmt(target, unit)}")
        if not met:
            line += f"   ({_why(run, name, target)})"
        lines.append(line)
    head = (f"{'SLO met' if met_all else 'SLO NOT MET'} by {int(stats['requests'])} requests over "
            f"{span_s(run):.1f}s ({_describe(run)}):")
    return met_all, "\n".join([head, *lines])


def assert_slo(run: pd.DataFrame, **objectives: float) -> pd.Series:
    """Raise ``SLOViolation`` listing every missed objective; return the summary if all
    were met. Objectives as in ``slo_report``:
    ``assert_slo(run, p99_ms=100, success_rate=0.99)``."""
    met, report = slo_report(run, **objectives)
    if not met:
        raise SLOViolation(report)
    return summary(run)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.2%}"
    return f"{value:,.1f} {unit}"


def _why(run: pd.DataFrame, objective: str, target: float) -> str:
    if objective == "success_rate":
        failed = run.loc[~run["ok"], "error"].value_counts().head(3)
        return "failures: " + ", ".join(f"{n}× {error}" for error, n in failed.items())
    if objective == "min_throughput_rps":
        return "see the CPU report: was the generator the limit?"
    slow = run[run["latency_ms"] > target]
    return (f"{len(slow)} requests over {target:g} ms, due between "
            f"{slow['start_s'].min():.2f}s and {slow['start_s'].max():.2f}s")


def _describe(run: pd.DataFrame) -> str:
    mode = run.attrs.get("mode")
    if mode == "closed":
        return f"closed loop, {run.attrs['workers']} workers"
    if mode == "open":
        return f"open loop, {run.attrs['rate']:g} req/s offered"
    return mode or "requests"
