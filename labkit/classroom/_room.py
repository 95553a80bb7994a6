"""A classroom: learners as tenants of the room's shared servers.

Each learner gets a tenant (a database and role, a vhost and user, a Redis ACL user
confined to its key prefix) owned by the room, not by the trainer's process: it
outlives the command that made it, the sweep of dead owners leaves it, and only
`revoke` drops it. The learner sees their tenant's URLs (LABKIT_*_URL); the admin URLs
stay with the trainer.

The room's state (each learner's tenant, credentials and board token) lives in one
file readable by its owner only, under labkit's state dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit import services
from labkit.classroom import _progress, reporting
from labkit.classroom._progress import ProgressRow
from labkit.services import TenantAdmin, TenantError, TenantOwner

ROOM_ENV = "LABKIT_CLASSROOM_ROOM"
DEFAULT_ROOM = "room"
# Safe as a part of a PostgreSQL role, a vhost, a key prefix, a URL path and a file
# name, with no quoting: lowercase letters, digits, '_' and '-', a letter first.
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# The services a learner gets, in the order they are made (and dropped in reverse).
LEARNER_SERVICES = ("postgres", "redis", "rabbitmq", "aws")
# How long `status` waits for each of a learner's services before calling it down.
PROBE_TIMEOUT_SECONDS = 5


class ClassroomError(services.ServiceError):
    """A learner could not be provisioned, revoked or found. The message says how to fix it."""


class RosterError(ClassroomError):
    """A roster or a learner name was refused; the message names the line and the rule."""


def validate_name(name: str, what: str = "learner name") -> str:
    """`name` if it is a valid learner (or room) name, else RosterError saying the rule."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RosterError(
            f"a {what} is 1-32 of lowercase letters, digits, '_' and '-', starting with a "
            f"letter (e.g. alice, bob_2, li-na), got {name!r}: rename it"
        )
    return name


def tenant_name(room: str, learner: str) -> str:
    """The tenant of `learner` in `room`: the same in every process, so provisioning
    again finds it, and different across rooms on the same servers. Readable (the
    learner's letters and digits) then 8 hex digits of a hash that keeps 'li-na' and
    'lina' apart."""
    readable = re.sub(r"[^a-z0-9]", "", learner)[:16]
    digest = hashlib.sha256(f"{room}/{learner}".encode()).hexdigest()[:8]
    return services.validate_tenant_name(f"lkt_{readable}{digest}")


@dataclass(frozen=True)
class Learner:
    """A learner's own view of the room: the environment their kernels get.

    `env` holds their tenant's LABKIT_<SERVICE>_URL (and the names other tools read:
    DATABASE_URL, REDIS_URL, AMQP_URL, …), LABKIT_<SERVICE>_BACKEND=external so labkit
    uses exactly those, and LABKIT_CLASSROOM_URL/TOKEN where a board runs. Never an
    admin URL.
    """

    name: str
    env: dict[str, str]
    tenant: str = ""
    created: str = ""


@dataclass(frozen=True)
class LearnerStatus:
    """One learner's line in `Classroom.status`: each service "ok" or why it is not."""

    name: str
    tenant: str
    created: str
    services: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(state == "ok" for state in self.services.values())


class Classroom:
    """The learners of one room on its shared servers, made and dropped by the trainer.

        >>> room = Classroom.from_env()          # admin URLs: LABKIT_*_ADMIN_URL or `labkit up`
        >>> alice = room.provision("alice")      # again: the same tenant and credentials
        >>> alice.env["LABKIT_POSTGRES_URL"]
        'postgresql://lkt_alice3f9a1c2b:…@127.0.0.1:5432/lkt_alice3f9a1c2b'
        >>> room.revoke("alice")                 # the tenant is gone on every server
    """

    def __init__(self, admin: TenantAdmin, name: str = DEFAULT_ROOM,
                 board_url: str | None = None, state_path: Path | None = None) -> None:
        self.name = validate_name(name, "room name")
        self.admin = admin
        self.board_url = board_url
        self.owner = TenantOwner.classroom(self.name)
        self.services = tuple(s for s in LEARNER_SERVICES if s in admin.services)
        if not self.services:
            raise ClassroomError(
                "a classroom needs the admin URL of at least one shared server: set "
                + ", ".join(services.ADMIN_ENV.values())
                + " (or run `labkit up` in this project)"
            )
        self.state_path = state_path or services.state_dir() / "classroom" / f"{self.name}.json"
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, name: str | None = None) -> Classroom:
        """The room named `name` (else LABKIT_CLASSROOM_ROOM, else "room") on the servers
        of LABKIT_*_ADMIN_URL, else those `labkit up` runs for this project, with the
        board at LABKIT_CLASSROOM_URL if one is set."""
        return cls(TenantAdmin.from_env(), name or os.environ.get(ROOM_ENV) or DEFAULT_ROOM,
                   board_url=os.environ.get(reporting.URL_ENV) or None)

    # -- the room's state file ----------------------------------------------------------

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The room's state, read and written back under a lock that threads (a hub's
        spawns) and processes (two trainer commands) take in turn."""
        self.state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.state_path.with_suffix(".lock")
        with self._lock, open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state: dict[str, Any] = {"room": self.name, "learners": {}}
            if self.state_path.exists():
                state = json.loads(self.state_path.read_text())
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                services.write_private(self.state_path, json.dumps(state, indent=1) + "\n")

    def _read(self) -> dict[str, Any]:
        with self._state() as state:
            return state

    # -- provisioning -------------------------------------------------------------------

    def provision(self, name: str) -> Learner:
        """The learner `name`, made on every server of the room if they are not yet.

        Idempotent: a learner whose tenant exists keeps it and their credentials, so a
        running kernel, a join token already handed out and a board token stay valid
        when the trainer provisions the roster again to add late arrivals. A tenant
        found incomplete (a server was reset) is dropped and made anew. If a server
        fails, what was made for this learner is dropped again, and the error names the
        learner and the service.
        """
        return self.provision_many([name])[0]

    def provision_roster(self, path: str | Path) -> list[Learner]:
        """Every learner named in the roster file at `path`: one name per line, blank lines
        and '#' comments ignored. The whole file is checked before anyone is made."""
        return self.provision_many(read_roster(path))

    def provision_many(self, names: Iterable[str]) -> list[Learner]:
        wanted = list(names)
        for name in wanted:
            validate_name(name)
        with self._state() as state:  # listed under the lock: a concurrent spawn's is seen
            existing = self._existing(wanted)
            return [self._provision(state, name, existing) for name in wanted]

    def _existing(self, names: list[str]) -> dict[str, tuple[TenantOwner, tuple[str, ...]]]:
        """The tenants on the room's servers, with the services each is on."""
        found: dict[str, tuple[TenantOwner, tuple[str, ...]]] = {}
        for service in self.services:
            try:
                listed = services.list_tenants(self.admin, (service,))
            except TenantError as exc:
                raise ClassroomError(
                    f"nobody was provisioned ({', '.join(names)}): {service} did not list "
                    f"its tenants ({exc})"
                ) from None
            for tenant, (owner, on) in listed.items():
                previous = found.get(tenant, (owner, ()))
                found[tenant] = (previous[0], (*previous[1], *on))
        return found

    def _provision(self, state: dict[str, Any], name: str,
                   existing: dict[str, tuple[TenantOwner, tuple[str, ...]]]) -> Learner:
        tenant = tenant_name(self.name, name)
        found = existing.get(tenant)
        if found is not None and found[0] != self.owner:
            raise ClassroomError(
                f"learner {name!r}: tenant {tenant} exists on the servers but belongs to "
                f"{found[0].tag!r}, not to room {self.name!r}: revoke it from its owner"
            )
        recorded = state["learners"].get(name)
        complete = found is not None and set(found[1]) == set(self.services)
        if recorded is not None and complete:
            return self._learner(name, recorded)
        if found is not None:  # half there, or its credentials were lost with the state
            self._drop(name, tenant)
        made: dict[str, services.Endpoint] = {}
        try:
            for service in self.services:
                made[service] = self._create(name, tenant, service)
        except BaseException:
            try:
                services.drop_tenant(tenant, self.owner, self.admin, tuple(made))
            except TenantError as exc:
                print(f"labkit: learner {name!r}: could not undo the partial tenant: {exc}")
            raise
        env: dict[str, str] = {}
        for service, endpoint in made.items():
            env.update(services.specs()[service].environ(endpoint))
            env[f"LABKIT_{service.upper()}_BACKEND"] = "external"
        if "aws" in made:
            env["LABKIT_AWS_PREFIX"] = str(made["aws"].extra["prefix"])
        recorded = {"tenant": tenant, "created": _now(), "env": env,
                    "token": secrets.token_urlsafe(24)}
        state["learners"][name] = recorded
        return self._learner(name, recorded)

    def _create(self, name: str, tenant: str, service: str) -> services.Endpoint:
        try:
            made = services.create_tenant(self.admin, tenant, (service,), owner=self.owner)
        except TenantError as exc:
            raise ClassroomError(
                f"learner {name!r} was not provisioned: {service} failed ({exc}). Nothing "
                "of this learner was left on the other servers; fix that server and "
                "provision again"
            ) from None
        return made[service]

    def _learner(self, name: str, recorded: dict[str, Any]) -> Learner:
        env = dict(recorded["env"])
        if self.board_url:
            env[reporting.URL_ENV] = self.board_url
            env[reporting.TOKEN_ENV] = recorded["token"]
        return Learner(name=name, env=env, tenant=recorded["tenant"],
                       created=recorded["created"])

    # -- what the room holds ------------------------------------------------------------

    def learners(self) -> list[Learner]:
        """Every provisioned learner, by name."""
        state = self._read()
        return [self._learner(name, state["learners"][name]) for name in sorted(state["learners"])]

    def learner(self, name: str) -> Learner:
        recorded = self._read()["learners"].get(validate_name(name))
        if recorded is None:
            raise ClassroomError(f"no learner {name!r} in room {self.name!r}: provision them "
                                 f"first (labkit classroom provision {name})")
        return self._learner(name, recorded)

    def learner_of_token(self, token: str) -> str | None:
        """The learner whose board token `token` is, or None: how a board knows who
        writes, so that a learner writes only their own progress."""
        for name, recorded in self._read()["learners"].items():
            if secrets.compare_digest(recorded["token"].encode(), token.encode()):
                return str(name)
        return None

    def revoke(self, name: str) -> None:
        """Drop the learner's tenant on every server and forget their credentials.
        Their recorded progress stays: it is the trainer's record of the day."""
        validate_name(name)
        with self._state() as state:
            self._drop(name, tenant_name(self.name, name))
            state["learners"].pop(name, None)

    def _drop(self, name: str, tenant: str) -> None:
        try:
            services.drop_tenant(tenant, self.owner, self.admin, self.services)
        except TenantError as exc:
            raise ClassroomError(f"learner {name!r} was not fully revoked: {exc}; "
                                 "revoke again once the server answers") from None

    def status(self) -> list[LearnerStatus]:
        """Each learner's services, tried with the learner's own credentials."""
        return [LearnerStatus(learner.name, learner.tenant, learner.created,
                              {service: _probe(service, learner.env)
                               for service in self.services})
                for learner in self.learners()]

    # -- progress -----------------------------------------------------------------------

    def record(self, learner: str, lesson: str, exercise: str, outcome: str,
               attempts: int = 1, seconds: float | None = None) -> None:
        """Record one `%%check` of `learner` (as the board authenticated them)."""
        _progress.record(self.admin, self.name, validate_name(learner), lesson, exercise,
                         outcome, attempts, seconds)

    def progress(self) -> list[ProgressRow]:
        """Every learner × exercise row of this room, by learner, lesson, exercise."""
        return _progress.rows(self.admin, self.name)


def read_roster(path: str | Path) -> list[str]:
    """The learner names in a roster file, or RosterError naming each bad line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not NAME.fullmatch(name):
            problems.append(f"line {number}: {name!r} is not a learner name (1-32 of "
                            "lowercase letters, digits, '_' and '-', a letter first)")
        elif name in seen:
            problems.append(f"line {number}: {name!r} is already on line {seen[name]}")
        else:
            seen[name] = number
            names.append(name)
    if problems:
        raise RosterError(f"the roster {path} was refused, nobody was provisioned: "
                          + "; ".join(problems) + ". Fix these lines and provision again")
    return names


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _probe(service: str, env: dict[str, str]) -> str:
    """"ok" if the learner's credentials for `service` work now, else the reason."""
    url = env.get(f"LABKIT_{service.upper()}_URL", "")
    try:
        if service == "postgres":
            import psycopg

            endpoint = services.specs()["postgres"].from_url(url)
            with psycopg.connect(host=endpoint.host, port=endpoint.port,
                                 user=endpoint.username, password=endpoint.password,
                                 dbname=endpoint.database, connect_timeout=PROBE_TIMEOUT_SECONDS):
                pass
        elif service == "redis":
            import redis

            with redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_SECONDS,
                                      socket_connect_timeout=PROBE_TIMEOUT_SECONDS) as client:
                client.ping()
        elif service == "rabbitmq":
            import pika

            parameters = pika.URLParameters(url)
            parameters.connection_attempts = 1
            parameters.socket_timeout = PROBE_TIMEOUT_SECONDS
            pika.BlockingConnection(parameters).close()
        else:
            return "ok"  # the AWS emulator checks no credentials: nothing to try
    except Exception as exc:  # noqa: BLE001 (every client's failure is a line in the table)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return "ok"

