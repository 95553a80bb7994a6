"""Periodic jobs the serving shop runs beside its requests: the outbox relay, and more.

    >>> jobs = BackgroundJobs([PeriodicJob("outbox-relay", 0.5, relay.run_pass, relay.close)])
    >>> jobs.start()          # one daemon thread per job (the app's lifespan does this)
    >>> jobs.stats["outbox-relay"].passes
    12
    >>> jobs.stop()           # each job finishes its pass, closes, and its thread ends

Each job runs on a thread of its own, so a slow one (a relay waiting on a frozen
broker) never delays another. A pass that raises is logged, not fatal: the job waits
longer after each failure in a row (its interval doubled, up to `max_backoff`) and
goes back to its interval after the first pass that succeeds. So after an outage,
work resumes within `max_backoff` seconds of the dependency coming back, while during
it a dead broker or database is not hammered twice a second.

A job's `close` runs on the job's own thread when it stops: clients such as pika's
BlockingConnection belong to the thread that opened them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """`run()` every `interval` seconds; 0 means the job is off and never started."""

    name: str
    interval: float
    run: Callable[[], object]
    close: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ValueError(
                f"job {self.name!r} has interval {self.interval} s: give seconds between "
                "passes (> 0), or 0 to turn the job off"
            )


@dataclass
class JobStats:
    """What a job has done since it started: for logs, health pages and tests."""

    passes: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    last_result: object = None
    last_error: str | None = None
    last_success_at: float | None = None  # time.monotonic()


@dataclass(frozen=True)
class _Running:
    thread: threading.Thread
    stop: threading.Event


class BackgroundJobs:
    """A small list of periodic jobs, each on its own thread; see the module docstring.

    `start` and `stop` may be called again (a test app outlives several servers), and
    are idempotent: starting twice runs each job once.
    """

    def __init__(self, jobs: Iterable[PeriodicJob] = (), max_backoff: float = 2.0) -> None:
        if max_backoff <= 0:
            raise ValueError(f"max_backoff must be > 0 seconds, got {max_backoff}")
        self.jobs: list[PeriodicJob] = list(jobs)
        self.max_backoff = max_backoff
        self.stats: dict[str, JobStats] = {job.name: JobStats() for job in self.jobs}
        self._running: dict[str, _Running] = {}
        # Threads told to stop that were still in a pass when `stop` gave up waiting.
        self._stopping: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def add(self, job: PeriodicJob) -> None:
        """One more job; it starts with the next `start` (or now, if running)."""
        with self._lock:
            if any(known.name == job.name for known in self.jobs):
                raise ValueError(f"a background job named {job.name!r} is already registered")
            self.jobs.append(job)
            self.stats[job.name] = JobStats()
            was_running = bool(self._running)
        if was_running:
            self.start()

    @property
    def running(self) -> list[str]:
        """Names of the jobs whose threads are alive (stopping ones included)."""
        with self._lock:
            runs = [*self._running.items(), *self._stopping.items()]
        return sorted({name for name, run in runs if run.thread.is_alive()})

    def start(self) -> Self:
        """Start every job that is on (interval > 0) and not running yet."""
        with self._lock:
            for job in self.jobs:
                if job.interval == 0 or job.name in self._running:
                    continue
                previous = self._stopping.pop(job.name, None)
                if previous is not None and previous.thread.is_alive():
                    # Its job's clients (a pika connection) belong to that thread: a
                    # second thread on them now would corrupt both.
                    self._stopping[job.name] = previous
                    log.warning(
                        "background job %s not started: its previous thread is still "
                        "finishing a pass (start again once it has)",
                        job.name,
                    )
                    continue
                stop = threading.Event()
                thread = threading.Thread(
                    target=self._loop, args=(job, stop), name=f"shop-{job.name}", daemon=True
                )
                self._running[job.name] = _Running(thread, stop)
                thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every job to stop, then wait up to `timeout` s in all for their threads.

        A job stuck past that (a publish on a frozen broker waits for the heartbeat to
        give up) is left to end on its own: its thread is a daemon and does not keep
        the process alive.
        """
        with self._lock:
            running, self._running = self._running, {}
        for run in running.values():
            run.stop.set()
        deadline = time.monotonic() + timeout
        for name, run in running.items():
            run.thread.join(max(0.0, deadline - time.monotonic()))
            if run.thread.is_alive():
                log.warning("background job %s did not stop within %.0f s", name, timeout)
                with self._lock:
                    self._stopping[name] = run

    def _loop(self, job: PeriodicJob, stop: threading.Event) -> None:
        stats = self.stats[job.name]
        try:
            while not stop.is_set():
                stop.wait(self._run_once(job, stats))
        finally:
            if job.close is not None:
                try:
                    job.close()
                except Exception as exc:  # noqa: BLE001 (closing is best effort at shutdown)
                    log.warning("background job %s did not close cleanly: %s", job.name, exc)

    def _run_once(self, job: PeriodicJob, stats: JobStats) -> float:
        """One pass; the seconds to wait before the next."""
        stats.passes += 1
        try:
            stats.last_result = job.run()
        except Exception as exc:  # noqa: BLE001 (a failing pass is logged and retried, never fatal)
            stats.failures += 1
            stats.failures_in_a_row += 1
            # Some clients' errors have no message (pika's AMQPConnectionError): then repr.
            stats.last_error = f"{type(exc).__name__}: {str(exc) or repr(exc)}"
            doubled = job.interval * 2 ** min(stats.failures_in_a_row, 30)
            delay = max(job.interval, min(doubled, self.max_backoff))
            # Once per outage, not twice a second: the first failure, then every tenth.
            if stats.failures_in_a_row % 10 == 1:
                log.warning(
                    "background job %s failed (%d in a row), retrying in %.1f s: %s",
                    job.name,
                    stats.failures_in_a_row,
                    delay,
                    stats.last_error,
                )
            return delay
        if stats.failures_in_a_row:
            log.warning(
                "background job %s works again after %d failed passes",
                job.name,
                stats.failures_in_a_row,
            )
        stats.failures_in_a_row = 0
        stats.last_success_at = time.monotonic()
        return job.interval
