"""Servers a test module runs itself, with admin rights: a superuser, Redis's default
user, RabbitMQ's administrator and HTTP management API (how a tenant's vhost is made).

Not the `postgres`, `redis` and `rabbitmq` fixtures: under `labkit up` (as in CI) those are
themselves tenants, whose role may not create databases and whose Redis user may not
manage ACLs. For the tenant and classroom tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from labkit import services


@contextmanager
def local_servers(*names: str) -> Iterator[dict[str, services.Handle]]:
    """Start `names` on the local backend (RabbitMQ with its management API), stop them
    after; what started before a failed start is stopped too."""
    with ExitStack() as stack:
        handles = {}
        previous = os.environ.get("LABKIT_RABBITMQ_MANAGEMENT")
        os.environ["LABKIT_RABBITMQ_MANAGEMENT"] = "1"
        try:
            for name in names:
                handles[name] = services.start(name, "local")
                stack.callback(_stop, handles[name])
        finally:
            if previous is None:
                os.environ.pop("LABKIT_RABBITMQ_MANAGEMENT")
            else:
                os.environ["LABKIT_RABBITMQ_MANAGEMENT"] = previous
        yield handles


def _stop(handle: services.Handle) -> None:
    """Stop a server; one that does not stop cleanly fails with its log's tail (once, in
    CI, a module's RabbitMQ stopped answering mid-module and needed a SIGKILL to stop:
    its log, read before stop() deletes the work dir, says why next time)."""
    workdir = Path(handle.record.workdir)  # type: ignore[attr-defined]  # a LocalHandle
    tail = "".join(log.read_text(errors="replace")[-4000:]
                   for log in sorted((workdir / "log").glob("*.log")))
    try:
        handle.stop()
    except Exception as exc:
        raise AssertionError(f"{handle.endpoint.service} did not stop cleanly ({exc}); "
                             f"its log ended:\n{tail or '(no log)'}") from exc
