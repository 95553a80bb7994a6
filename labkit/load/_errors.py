"""The package's exceptions and warning, and the argument check every kind of run shares."""

from __future__ import annotations


class LoadError(RuntimeError):
    """A load run could not start or finish."""


class GeneratorBottleneckWarning(UserWarning):
    """The load generator, not the app, probably limited this run."""


class SLOViolation(AssertionError):
    """A run missed one or more service-level objectives."""


def require_positive(**values: float) -> None:
    """Refuse a zero or negative size before anything starts, naming the argument."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
