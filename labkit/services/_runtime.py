"""The process-wide cache of started services, and the choice of a backend for each."""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from labkit.services._base import Endpoint, Handle, ServiceError, ServiceSpec, current_owner
from labkit.services._docker import ImageUnavailable, docker_host
from labkit.services._external import given_url
from labkit.services._registry import BACKENDS, SERVICES, backend, spec_for
from labkit.services._state import up_urls
from labkit.services._tenants import admin_url, private_per_tenant

AUTO_DOCKER = "engine answers"
_RUNNING: dict[str, Handle] = {}
_LOCK = threading.RLock()  # guards _RUNNING and _STARTING, never held during a start
_STARTING: dict[str, threading.Lock] = {}


def specs() -> dict[str, ServiceSpec]:
    """Every service labkit knows, by name."""
    return dict(SERVICES)


def backend_for(name: str) -> tuple[str, str]:
    """(backend, reason) for a service, without starting anything."""
    spec = spec_for(name)
    wanted = (os.environ.get(spec.backend_env) or os.environ.get("LABKIT_BACKEND") or "auto")
    wanted = wanted.lower()
    if wanted != "auto":
        backend(wanted)  # an unknown name is an error that lists the known ones
        if wanted == "external":
            given = spec.url_from_env()
            return "external", given[0] if given else spec.url_env
        return wanted, "LABKIT_BACKEND"
    # An admin URL says "share this server": it wins over a plain URL for the same
    # service. One in the environment wins over this project's `labkit up`, as a URL does.
    admin = admin_url(name)
    if admin is not None and admin[0] != "labkit up":
        return "tenant", f"{admin[0]} is set"
    given = spec.url_from_env()
    if given:
        return "external", given[0]
    if private_per_tenant(name) and (BACKENDS["local"].available(spec)
                                     or BACKENDS["docker"].available(spec)):
        return "tenant", f"labkit up: a private {name} server per process"
    if admin is not None:
        return "tenant", "labkit up: this process is a tenant of its shared server"
    if up_urls().get(name):
        return "external", "labkit up"
    if BACKENDS["docker"].available(spec):
        return "docker", AUTO_DOCKER
    if BACKENDS["local"].available(spec):
        return "local", "binaries found"
    raise ServiceError(
        f"no backend can provide {name}: set {spec.url_env}=…, or start Docker "
        f"(engine at {docker_host()} did not answer), or install "
        f"{', '.join(b.name for b in spec.binaries) or 'its server'} for LABKIT_BACKEND=local. "
        "`labkit doctor` shows what is missing."
    )


def check(name: str) -> tuple[str, str]:
    """Like `backend_for`, but also verify that backend can serve now (doctor, setup()).

    Raises ServiceError with the fix when, say, LABKIT_BACKEND=docker but no engine answers.
    """
    spec = spec_for(name)
    chosen, reason = backend_for(name)
    note = backend(chosen).check(spec)
    if note and reason == AUTO_DOCKER and BACKENDS["local"].available(spec):
        note += ", else local"
    return chosen, reason + note


def start(name: str, backend_name: str | None = None) -> Handle:
    """Start a new, private instance of `name` (not cached: the caller stops it).

    For comparing backends and start-up costs; `get` is what tests and lessons use.
    """
    spec = spec_for(name)
    return backend(backend_name or backend_for(name)[0]).start(spec, current_owner())


def handle(name: str) -> Handle:
    """The running service `name`, started on first use and reused for the process.

    Each service starts under its own lock: a notebook that starts RabbitMQ in the
    background (``setup(start=…)``) can use PostgreSQL meanwhile, and two threads
    asking for the same service get one server.
    """
    with _LOCK:
        if name in _RUNNING:
            return _RUNNING[name]
        starting = _STARTING.setdefault(name, threading.Lock())
    with starting:
        with _LOCK:
            if name in _RUNNING:
                return _RUNNING[name]
        started = _start(name)
        with _LOCK:
            _RUNNING[name] = started
        _stop_on_sigterm()
        return started


def _start(name: str) -> Handle:
    spec = spec_for(name)
    chosen, reason = backend_for(name)
    try:
        return backend(chosen).start(spec, current_owner())
    except ImageUnavailable as exc:
        if reason != AUTO_DOCKER or not BACKENDS["local"].available(spec):
            raise
        # auto promised "whatever works here": an engine without images and no
        # registry (offline venue) is not a reason to stop when binaries exist.
        print(f"labkit: {exc}\nlabkit: using local binaries for {name} instead.")
        return BACKENDS["local"].start(spec, current_owner())


def get(name: str) -> Endpoint:
    """The endpoint of service `name` (postgres, redis, rabbitmq, …), started if needed."""
    return handle(name).endpoint


def given(name: str) -> Endpoint | None:
    """The endpoint of a server that outlives this process (a URL, `labkit up`), or None.

    Starts nothing, whatever LABKIT_BACKEND says: what `labkit env` prints must still
    answer after it exits.
    """
    spec = spec_for(name)
    if given_url(spec) is None:
        return None
    return BACKENDS["external"].start(spec, current_owner()).endpoint


def environ(*names: str) -> dict[str, str]:
    """Environment variables naming services `names` (all running ones if none given).

    Per service: ``LABKIT_<SERVICE>_URL`` (a plain URL labkit reads back as external),
    then the names the service's own tools read: ``DATABASE_URL`` and ``PGHOST``,
    ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` for postgres; ``REDIS_URL``;
    ``AMQP_URL``; ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` for aws; ``KAFKA_BOOTSTRAP_SERVERS`` for kafka. Services are
    started if needed.
    """
    variables: dict[str, str] = {}
    for name in names or tuple(running()):
        variables.update(spec_for(name).environ(get(name)))
    return variables


def export(*names: str) -> dict[str, str]:
    """Start services `names` and put their `environ` into os.environ; returns what was set.

    For an application that reads its settings when it is imported: call this first,
    e.g. in your conftest.py, before importing the app::

        # conftest.py
        from labkit import services

        def pytest_configure(config):
            services.export("postgres", "redis")   # DATABASE_URL, REDIS_URL, PG*…

        # then, in tests, `from myapp.main import app` reads DATABASE_URL as in production
    """
    variables = environ(*names)
    os.environ.update(variables)
    return variables


def running() -> dict[str, Endpoint]:
    """The services this process started (or was given), by name."""
    with _LOCK:
        return {name: h.endpoint for name, h in _RUNNING.items()}


def stop(name: str) -> None:
    """Stop service `name` if this process runs it; a later `get` starts a new one."""
    with _LOCK:
        h = _RUNNING.pop(name, None)
    if h is not None:
        h.stop()


def stop_all() -> None:
    """Stop every service this process started (registered to run at exit)."""
    for name in list(_RUNNING):
        try:
            stop(name)
        except Exception as exc:  # noqa: BLE001 (at exit, report and go on stopping the others)
            print(f"labkit: could not stop {name}: {exc}")


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop this process's services, as a normal exit does (atexit).

    SIGTERM is what `timeout`, a cancelled CI job and Jupyter's shutdown of a busy kernel
    send; by default it ends Python without running atexit, leaving every server behind
    until the next sweep. Installed only where the application set no handler (SIG_DFL)
    and only from the main thread (Python allows no other); an application's own handler
    is left alone, and if it exits normally atexit stops the services anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return  # the application's choice (its handler, or SIG_IGN), or ours already
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    """Stop the services, then die of SIGTERM as the default disposition would.

    No SystemExit: IPython catches it in a cell and the kernel would not exit. Re-raising
    the signal under SIG_DFL gives the status callers expect (-15, or 143 in a shell).
    If the application installed a handler after ours, ours is no longer called.
    """
    stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def paused(name: str) -> Iterator[Endpoint]:
    """Freeze a service for the block: a real outage, not a mock.

    Clients see what they see when a server hangs: connects and queries time out.
    """
    h = handle(name)
    h.pause()
    try:
        yield h.endpoint
    finally:
        h.resume()


atexit.register(stop_all)
