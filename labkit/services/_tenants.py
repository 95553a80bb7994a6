"""Tenants: isolated slices of shared servers, made and dropped with admin access.

    >>> from labkit import services
    >>> with services.create_tenant() as tenant:        # admin URLs from LABKIT_*_ADMIN_URL
    ...     tenant["postgres"].url, tenant["redis"].extra["key_prefix"]
    ('postgresql+psycopg://lkt_3f9a1c2b7e:…@127.0.0.1:5432/lkt_3f9a1c2b7e', 'lkt_3f9a1c2b7e:')

Starting a PostgreSQL, a Redis and a RabbitMQ for every process costs seconds and
hundreds of megabytes; a tenant costs milliseconds and a few megabytes on servers that
already run. What a tenant gets, per service:

- postgres: its own database, copied from a template, owned by its own login role;
  other roles may not connect to it (CONNECT is revoked from PUBLIC);
- redis: an ACL user restricted to the keys and channels ``<tenant>:*``, refused every
  command that reaches past them (FLUSHDB, FLUSHALL, KEYS, SCAN, RANDOMKEY, DBSIZE,
  SELECT, INFO, CONFIG, …): `Endpoint.extra["key_prefix"]` is what its keys start with;
- rabbitmq: its own vhost and a user allowed in no other;
- aws: a bucket/queue name prefix (`Endpoint.extra["prefix"]`) on the emulator; moto
  checks no credentials, so this one is a convention that `drop` cleans up after, not
  a wall.

Each object is tagged with its owner (pid, process start time, host): a COMMENT on
the database and role, the vhost's description, a hash in Redis (``labkit:tenants``,
outside every tenant's prefix) and a marker bucket on the emulator. `sweep_tenants`
drops the tenants whose owner died, as `sweep_local` does for servers. Tenant names are
generated or checked against one strict pattern, and a drop first checks that the
object carries this tenant's own tag, so no name can make it drop another's objects.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from labkit.services import _aws, _postgres, _rabbitmq, _redis
from labkit.services._base import (
    Endpoint,
    Handle,
    Owner,
    ServiceError,
    ServiceSpec,
    current_owner,
    owner_alive,
    random_secret,
    redact,
)
from labkit.services._ownership import sweep_local
from labkit.services._state import up_admin, up_private

if TYPE_CHECKING:
    import psycopg
    import redis as redis_lib

TENANT_PREFIX = "lkt_"
TENANT_NAME = re.compile(r"lkt_[a-z0-9]{4,30}")
TAG = "labkit-tenant"
TEMPLATE_DATABASE = "labkit_tenant_template"
REDIS_REGISTRY = "labkit:tenants"
ADMIN_ENV = {
    "postgres": "LABKIT_POSTGRES_ADMIN_URL",
    "redis": "LABKIT_REDIS_ADMIN_URL",
    "rabbitmq": "LABKIT_RABBITMQ_ADMIN_URL",
    "aws": "LABKIT_AWS_ADMIN_URL",
}
# How long a CREATE DATABASE waits for the template's last session to leave.
TEMPLATE_BUSY_SECONDS = 10.0
# Commands that reach past a key prefix: they enumerate, empty or reconfigure the
# whole server. -@dangerous covers FLUSHDB, FLUSHALL, KEYS, INFO, CONFIG, CLIENT KILL,
# ACL, SWAPDB, DEBUG, MONITOR, SHUTDOWN; the rest are named.
REDIS_DENIED = ("-@dangerous", "-scan", "-randomkey", "-dbsize", "-select", "-function",
                "-script|flush", "-script|kill", "-pubsub")


class TenantError(ServiceError):
    """A tenant could not be made, dropped or swept. The message says how to fix it."""


def validate_tenant_name(name: str) -> str:
    """`name` if it is a tenant name (``lkt_`` and 4-30 of a-z, 0-9), else TenantError.

    Every name that reaches SQL, an ACL rule, a key pattern or a URL path passes here:
    the pattern leaves no room for quoting, globbing or path tricks.
    """
    if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
        raise TenantError(
            f"a tenant name is {TENANT_PREFIX!r} then 4-30 lowercase letters or digits "
            f"(e.g. {TENANT_PREFIX}alice1), got {name!r}: pick such a name, or pass none "
            "to have one generated"
        )
    return name


def new_tenant_name() -> str:
    return f"{TENANT_PREFIX}{secrets.token_hex(5)}"


@dataclass(frozen=True)
class TenantOwner:
    """Who a tenant belongs to: a process (it lives as long as that process does), or a
    classroom (`room`), whose learners' tenants outlive the trainer's process and go
    only when the trainer revokes them."""

    pid: int
    started: float
    host: str
    room: str = ""

    @classmethod
    def current(cls) -> TenantOwner:
        me = current_owner()
        return cls(pid=me.pid, started=me.started, host=socket.gethostname())

    @classmethod
    def classroom(cls, room: str) -> TenantOwner:
        """The owner of a classroom's learners' tenants: the same in every process."""
        return cls(pid=0, started=0.0, host="", room=room)

    @property
    def tag(self) -> str:
        """What every object of the tenant carries (a comment, a description, a hash)."""
        if self.room:
            return f"{TAG} {json.dumps({'classroom': self.room})}"
        owner = {"pid": self.pid, "started": self.started, "host": self.host}
        return f"{TAG} {json.dumps(owner, sort_keys=True)}"

    @classmethod
    def from_tag(cls, tag: str | None) -> TenantOwner | None:
        """The owner in `tag`, or None if `tag` is not a labkit tenant's."""
        if not tag or not tag.startswith(TAG + " "):
            return None
        try:
            fields = json.loads(tag[len(TAG) + 1:])
            if "classroom" in fields:
                return cls.classroom(str(fields["classroom"]))
            return cls(pid=int(fields["pid"]), started=float(fields["started"]),
                       host=str(fields["host"]))
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def alive(self) -> bool:
        """Whether the owner still runs. A classroom always does (its trainer revokes its
        tenants); another host's owners are taken as alive: this machine cannot see their
        processes, so it never sweeps their tenants."""
        if self.room or self.host != socket.gethostname():
            return True
        return owner_alive(self.pid, self.started)


@dataclass(frozen=True)
class TenantAdmin:
    """Admin URLs of the shared servers tenants are made on.

    - postgres: a role with CREATEDB and CREATEROLE (or a superuser),
      ``postgresql://admin:…@host:5432/postgres``;
    - redis: a user allowed ACL, SCAN, UNLINK and HSET, ``redis://admin:…@host:6379/0``;
    - rabbitmq: the HTTP management API as a user tagged administrator,
      ``http://admin:…@host:15672`` (AMQP's port is read from it, or given as
      ``?amqp_port=N`` where it is published elsewhere, as a container's is);
    - aws: the emulator's URL, ``http://host:4566``.
    """

    postgres: str | None = None
    redis: str | None = None
    rabbitmq: str | None = None
    aws: str | None = None

    @classmethod
    def from_env(cls) -> TenantAdmin:
        """The admin URLs in LABKIT_POSTGRES_ADMIN_URL, LABKIT_REDIS_ADMIN_URL, … , else
        those this project's `labkit up` recorded (see `admin_url`)."""
        return cls(**{service: found[1] if (found := admin_url(service)) else None
                      for service in ADMIN_ENV})

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(service for service in ADMIN_ENV if getattr(self, service))

    def url(self, service: str) -> str:
        url: str | None = getattr(self, service, None)
        if not url:
            raise TenantError(
                f"a {service} tenant needs the server's admin URL: set {ADMIN_ENV[service]} "
                f"(or TenantAdmin({service}=…)), e.g. {ADMIN_ENV[service]}="
                f"{_ADMIN_EXAMPLES[service]}"
            )
        return url


def admin_url(service: str) -> tuple[str, str] | None:
    """(origin, admin URL) of the shared server `service`'s tenants are made on, or None.

    LABKIT_<SERVICE>_ADMIN_URL first (a workshop server, a CI service container), then
    this project's `labkit up`, which records the admin access to the servers it runs
    in its private state file: every kernel and pytest run of the checkout becomes a
    tenant of them without any setting.
    """
    variable = ADMIN_ENV.get(service)
    if variable is None:
        return None
    if os.environ.get(variable):
        return variable, os.environ[variable]
    url = up_admin().get(service)
    return ("labkit up", url) if url else None


_ADMIN_EXAMPLES = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "http://admin:secret@127.0.0.1:15672",
    "aws": "http://127.0.0.1:4566",
}


class _Provider(Protocol):
    """One service's side of tenants: made, dropped and listed with its admin access."""

    def check(self) -> None: ...

    def create(self, name: str, owner: TenantOwner) -> Endpoint: ...

    def drop(self, name: str, owner: TenantOwner) -> None: ...

    def owners(self) -> dict[str, TenantOwner]: ...


def _refuse_foreign(service: str, what: str, name: str, tag: str | None,
                    owner: TenantOwner) -> bool:
    """True if the object exists and is `owner`'s; False if it is gone; raise if not ours."""
    found = TenantOwner.from_tag(tag)
    if found == owner:
        return True
    raise TenantError(
        f"refusing to drop {service} {what} {name}: it is tagged {tag!r}, not as this "
        f"tenant's ({owner.tag}). Another tenant owns that name; drop it from its owner, or "
        "let `sweep_tenants` remove it once its owner has gone"
    )


# -- PostgreSQL -----------------------------------------------------------------------


class PostgresTenants:
    """A database and a login role per tenant, the database copied from a template.

    The template (``labkit_tenant_template``) is made once per server from template0,
    and marked as a template that takes no connections: CREATE DATABASE … TEMPLATE
    fails while any session is connected to its source, and nobody has a reason to
    connect to an empty template. An empty template costs as much to copy as template0;
    a template with the application's schema migrated into it would save every tenant
    its migrations (ALTER DATABASE … ALLOW_CONNECTIONS true, migrate, set it back).
    """

    def __init__(self, url: str) -> None:
        self.admin = _admin_endpoint("postgres", url)
        self._superuser: bool | None = None
        self._strategy = ""
        # One admin connection per server and process, kept: a new one costs ~10 ms of
        # the ~50 a tenant may take. The lock makes threads take turns on it.
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_pid = 0

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed or self._conn_pid != os.getpid():
                self._conn, self._conn_pid = self._connect(), os.getpid()
            try:
                yield self._conn
            except psycopg.OperationalError:
                self._conn.close()  # the server went away: the next call reconnects
                self._conn = None
                raise

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(
                host=self.admin.host, port=self.admin.port, user=self.admin.username,
                password=self.admin.password, dbname=self.admin.database or "postgres",
                connect_timeout=5, autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise TenantError(
                f"cannot connect to PostgreSQL at {self.admin.safe_url} "
                f"({ADMIN_ENV['postgres']}): {str(exc).strip()}"
            ) from None

    def check(self) -> None:
        with self._session() as conn:
            row = conn.execute(
                "select current_user, rolsuper, rolcreatedb, rolcreaterole, "
                "current_setting('server_version_num')::int, current_setting('fsync') "
                "from pg_roles where rolname = current_user"
            ).fetchone()
        assert row is not None  # the current user is always in pg_roles
        user, superuser, createdb, createrole, version, fsync = row
        self._superuser = bool(superuser)
        # Where durability is off (labkit's own servers), copying the template's files
        # and the two checkpoints that take are cheaper than WAL-logging every block
        # (PostgreSQL 15's default): ~12 ms against ~75 ms on a loaded 2-core machine.
        # On a durable shared server, a checkpoint per tenant would slow everyone.
        self._strategy = "file_copy" if version >= 150000 and fsync == "off" else ""
        missing = [right for right, has in (("CREATEDB", createdb), ("CREATEROLE", createrole))
                   if not (superuser or has)]
        if missing:
            raise TenantError(
                f"{ADMIN_ENV['postgres']}'s role {user!r} lacks {' and '.join(missing)}: a "
                f"tenant is a database and a role. As a superuser: ALTER ROLE {user} "
                f"{' '.join(missing)}; or give a superuser's URL"
            )

    def _ensure_template(self, conn: psycopg.Connection[Any]) -> None:
        import psycopg
        from psycopg import sql

        if conn.execute("select 1 from pg_database where datname = %s",
                        (TEMPLATE_DATABASE,)).fetchone():
            return
        template = sql.Identifier(TEMPLATE_DATABASE)
        try:
            conn.execute(sql.SQL("create database {} template template0").format(template))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return  # another process made it meanwhile
        conn.execute(sql.SQL("alter database {} is_template true allow_connections false")
                     .format(template))
        conn.execute(sql.SQL("comment on database {} is {}").format(
            template, sql.Literal("labkit: every tenant's database is copied from this one")))

    def create(self, name: str, owner: TenantOwner) -> Endpoint:
        import psycopg
        from psycopg import sql

        password = random_secret()
        ident, tag = sql.Identifier(name), sql.Literal(owner.tag)
        if self._superuser is None:
            self.check()
        with self._session() as conn:
            self._ensure_template(conn)
            try:
                conn.execute(sql.SQL("create role {} login password {}")
                             .format(ident, sql.Literal(password)))
            except psycopg.errors.DuplicateObject:
                raise TenantError(f"postgres: a role {name} exists already: pick another "
                                  "tenant name, or pass none") from None
            try:
                conn.execute(sql.SQL("comment on role {} is {}").format(ident, tag))
                if not self._superuser:
                    # A non-superuser may only create a database owned by a role it is in.
                    conn.execute(sql.SQL("grant {} to current_user").format(ident))
                self._create_database(conn, name)
                conn.execute(sql.SQL("comment on database {} is {}").format(ident, tag))
                conn.execute(sql.SQL("revoke all on database {} from public").format(ident))
            except BaseException:
                self._drop_owned(conn, name, owner)
                raise
        url = (f"postgresql+psycopg://{name}:{password}@{self.admin.host}:{self.admin.port}"
               f"/{name}")
        return Endpoint(service="postgres", backend="tenant", url=url, host=self.admin.host,
                        port=self.admin.port, username=name, password=password,
                        origin=f"tenant {name}", database=name)

    def _create_database(self, conn: psycopg.Connection[Any], name: str) -> None:
        """CREATE DATABASE … TEMPLATE, waiting while someone is connected to the template."""
        import psycopg
        from psycopg import sql

        statement = sql.SQL("create database {} owner {} template {}").format(
            sql.Identifier(name), sql.Identifier(name), sql.Identifier(TEMPLATE_DATABASE))
        if self._strategy:
            statement += sql.SQL(" strategy {}").format(sql.SQL(self._strategy))
        deadline = time.monotonic() + TEMPLATE_BUSY_SECONDS
        while True:
            try:
                conn.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise TenantError(
                        f"postgres: the template {TEMPLATE_DATABASE} had sessions for "
                        f"{TEMPLATE_BUSY_SECONDS:.0f}s (\"source database is being accessed "
                        "by other users\"): close them (pg_stat_activity shows who), then retry"
                    ) from None
                time.sleep(0.05)

    def drop(self, name: str, owner: TenantOwner) -> None:
        validate_tenant_name(name)
        with self._session() as conn:
            self._drop_owned(conn, name, owner)

    def _drop_owned(self, conn: psycopg.Connection[Any], name: str, owner: TenantOwner) -> None:
        from psycopg import sql

        ident = sql.Identifier(validate_tenant_name(name))
        row = conn.execute("select shobj_description(oid, 'pg_database') from pg_database "
                           "where datname = %s", (name,)).fetchone()
        if row is not None and _postgres_owned(conn, "database", name, row[0], owner):
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(ident))
        row = conn.execute("select shobj_description(oid, 'pg_authid') from pg_roles "
                           "where rolname = %s", (name,)).fetchone()
        if row is not None and _refuse_foreign("postgres", "role", name, row[0], owner):
            conn.execute(sql.SQL("drop role if exists {}").format(ident))

    def owners(self) -> dict[str, TenantOwner]:
        found: dict[str, TenantOwner] = {}
        with self._session() as conn:
            rows = conn.execute(
                "select datname, shobj_description(oid, 'pg_database') from pg_database "
                "where datname like 'lkt\\_%' union all "
                "select rolname, shobj_description(oid, 'pg_authid') from pg_roles "
                "where rolname like 'lkt\\_%'"
            ).fetchall()
        for name, tag in rows:
            owner = TenantOwner.from_tag(tag)
            if owner is not None and TENANT_NAME.fullmatch(name):
                found[name] = owner
        return found


def _postgres_owned(conn: psycopg.Connection[Any], what: str, name: str, tag: str | None,
                    owner: TenantOwner) -> bool:
    # A database made but not yet commented (a create that failed half-way) has no tag:
    # it is this tenant's if its owner is this tenant's role, whose tag was checked.
    if tag is None:
        row = conn.execute(
            "select pg_get_userbyid(datdba) = %s from pg_database where datname = %s",
            (name, name)).fetchone()
        role_tag = conn.execute("select shobj_description(oid, 'pg_authid') from pg_roles "
                                "where rolname = %s", (name,)).fetchone()
        if row and row[0] and role_tag and TenantOwner.from_tag(role_tag[0]) == owner:
            return True
    return _refuse_foreign("postgres", what, name, tag, owner)


# -- Redis ----------------------------------------------------------------------------


class RedisTenants:
    """An ACL user per tenant, confined to keys and channels ``<tenant>:*``.

    A tenant cannot list the keyspace (KEYS, SCAN and RANDOMKEY reach every key
    whatever the ACL's key patterns say), so emptying its namespace is done here, with
    the admin connection: SCAN MATCH ``<tenant>:*`` then UNLINK, never FLUSHDB.
    """

    def __init__(self, url: str) -> None:
        self.admin = _admin_endpoint("redis", url)
        self._url = url

    def _client(self) -> redis_lib.Redis:
        import redis as redis_lib

        return redis_lib.Redis.from_url(self._url, decode_responses=True, socket_timeout=5,
                                        socket_connect_timeout=5)

    def check(self) -> None:
        import redis as redis_lib

        try:
            with self._client() as client:
                me = client.acl_whoami()
                probes = (("ACL", "SETUSER", "lkt_probe"), ("SCAN", "0"),
                          ("UNLINK", "lkt_probe:x"), ("HSET", REDIS_REGISTRY, "f", "v"))
                for probe in probes:
                    answer = client.execute_command("ACL", "DRYRUN", me, *probe)
                    if answer != "OK":
                        raise TenantError(
                            f"{ADMIN_ENV['redis']}'s user {me!r} may not run "
                            f"{' '.join(probe[:2])}: tenants need ACL, SCAN, UNLINK and HSET "
                            f"(Redis said: {answer}). Give a user with +@admin +@keyspace "
                            "+@write ~*, or the default user"
                        )
        except redis_lib.exceptions.NoPermissionError as exc:
            raise TenantError(
                f"{ADMIN_ENV['redis']}'s user may not manage ACL users ({exc}): tenants are "
                "ACL users; give a user with +@admin (ACL) +@keyspace +@write ~*"
            ) from None
        except redis_lib.exceptions.ResponseError as exc:
            raise TenantError(
                f"Redis at {self.admin.safe_url} cannot make tenants ({exc}): tenants are ACL "
                "users with ACL DRYRUN checks, which need Redis 7 or newer"
            ) from None
        except redis_lib.exceptions.ConnectionError as exc:
            raise TenantError(f"cannot connect to Redis at {self.admin.safe_url} "
                              f"({ADMIN_ENV['redis']}): {exc}") from None

    def create(self, name: str, owner: TenantOwner) -> Endpoint:
        password = random_secret()
        with self._client() as client:
            # HSETNX claims the name atomically: a second claim of it fails here.
            if not client.hsetnx(REDIS_REGISTRY, name, owner.tag):
                raise TenantError(f"redis: a tenant {name} exists already: pick another "
                                  "tenant name, or pass none")
            if client.acl_getuser(name) is not None:
                client.hdel(REDIS_REGISTRY, name)
                raise TenantError(f"redis: an ACL user {name} exists already: pick another "
                                  "tenant name, or pass none")
            try:
                client.execute_command(
                    "ACL", "SETUSER", name, "reset", "on", f">{password}", f"~{name}:*",
                    "resetchannels", f"&{name}:*", "+@all", *REDIS_DENIED,
                )
            except BaseException:
                client.hdel(REDIS_REGISTRY, name)
                raise
        database = self.admin.database or "0"
        url = f"redis://{name}:{password}@{self.admin.host}:{self.admin.port}/{database}"
        return Endpoint(service="redis", backend="tenant", url=url, host=self.admin.host,
                        port=self.admin.port, username=name, password=password,
                        origin=f"tenant {name}", database=database,
                        extra={"key_prefix": f"{name}:"})

    def clear(self, name: str) -> int:
        """Delete the tenant's keys (``<name>:*``); returns how many."""
        deleted = 0
        with self._client() as client:
            batch: list[str] = []
            for key in client.scan_iter(match=f"{validate_tenant_name(name)}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += client.unlink(*batch)
        return deleted

    def drop(self, name: str, owner: TenantOwner) -> None:
        validate_tenant_name(name)
        with self._client() as client:
            tag = client.hget(REDIS_REGISTRY, name)
            if tag is None and client.acl_getuser(name) is None:
                return
            _refuse_foreign("redis", "ACL user", name, tag, owner)
            client.acl_deluser(name)  # also disconnects the tenant's clients
        self.clear(name)
        with self._client() as client:
            client.hdel(REDIS_REGISTRY, name)

    def owners(self) -> dict[str, TenantOwner]:
        with self._client() as client:
            registry = client.hgetall(REDIS_REGISTRY)
        found = {}
        for name, tag in registry.items():
            owner = TenantOwner.from_tag(tag)
            if owner is not None and TENANT_NAME.fullmatch(name):
                found[name] = owner
        return found


# -- RabbitMQ -------------------------------------------------------------------------


class RabbitmqTenants:
    """A vhost and a user allowed only in it, made through the HTTP management API.

    The API, not rabbitmqctl: it is what a CI service container
    (``rabbitmq:3-management``) and a workshop server offer over the network, and it
    needs no Erlang cookie. labkit's local RabbitMQ serves it with
    LABKIT_RABBITMQ_MANAGEMENT=1 (`Endpoint.extra["management_url"]`).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TenantError(
                f"{ADMIN_ENV['rabbitmq']} is the HTTP management API's URL, e.g. "
                f"{_ADMIN_EXAMPLES['rabbitmq']}; got {redact(url)}"
            )
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        self.host = parts.hostname
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._user = user
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        # ``?amqp_port=N``: where clients reach AMQP when it is not where the server
        # says it listens (a container's port published elsewhere on the host).
        given = parse_qs(parts.query).get("amqp_port", [""])[0]
        if given and not given.isdigit():
            raise TenantError(f"{ADMIN_ENV['rabbitmq']}'s amqp_port is a port number, got "
                              f"{given!r}: e.g. {_ADMIN_EXAMPLES['rabbitmq']}?amqp_port=5672")
        self._published_amqp_port = int(given) if given else None
        self._amqp_port: int | None = None

    def _api(self, method: str, path: str, body: object | None = None,
             missing_ok: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/api/{path}", data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            if exc.code == 401:
                reason = exc.read()[:200].decode(errors="replace")
                if "not management user" in reason.lower():
                    raise TenantError(self._rights_missing("(no tags)")) from None
                raise TenantError(f"RabbitMQ's management API at {self.base} refused the "
                                  f"credentials in {ADMIN_ENV['rabbitmq']}") from None
            raise TenantError(f"RabbitMQ's management API: {method} /api/{path} answered "
                              f"{exc.code} {exc.read()[:200]!r}") from None
        except OSError as exc:
            raise TenantError(
                f"RabbitMQ's management API at {self.base} ({ADMIN_ENV['rabbitmq']}) did not "
                f"answer ({exc}): enable it (rabbitmq-plugins enable rabbitmq_management; "
                "for labkit's local RabbitMQ, LABKIT_RABBITMQ_MANAGEMENT=1)"
            ) from None
        return json.loads(text) if text else None

    def _rights_missing(self, has: str) -> str:
        return (f"{ADMIN_ENV['rabbitmq']}'s user {self._user!r} may not manage vhosts and "
                f"users {has}: tenants need vhost management, the administrator tag: "
                f"rabbitmqctl set_user_tags {self._user} administrator")

    def check(self) -> None:
        me = self._api("GET", "whoami")
        tags = me.get("tags", [])
        tags = tags.split(",") if isinstance(tags, str) else tags
        if "administrator" not in tags:
            raise TenantError(self._rights_missing(f"(tags {tags})"))
        for listener in self._api("GET", "overview").get("listeners", []):
            if listener.get("protocol") == "amqp":
                self._amqp_port = self._published_amqp_port or int(listener["port"])
        if self._amqp_port is None:
            raise TenantError(f"RabbitMQ at {self.base} has no AMQP listener")

    def create(self, name: str, owner: TenantOwner) -> Endpoint:
        if self._amqp_port is None:
            self.check()
        if self._api("GET", f"vhosts/{name}", missing_ok=True) is not None:
            raise TenantError(f"rabbitmq: a vhost {name} exists already: pick another "
                              "tenant name, or pass none")
        if self._api("GET", f"users/{name}", missing_ok=True) is not None:
            raise TenantError(f"rabbitmq: a user {name} exists already: pick another "
                              "tenant name, or pass none")
        password = random_secret()
        self._api("PUT", f"vhosts/{name}", {"description": owner.tag, "tags": TAG})
        try:
            self._api("PUT", f"users/{name}", {"password": password, "tags": TAG})
            self._api("PUT", f"permissions/{name}/{name}",
                      {"configure": ".*", "write": ".*", "read": ".*"})
        except BaseException:
            self.drop(name, owner)
            raise
        url = f"amqp://{name}:{password}@{self.host}:{self._amqp_port}/{quote(name, safe='')}"
        return Endpoint(service="rabbitmq", backend="tenant", url=url, host=self.host,
                        port=self._amqp_port or 5672, username=name, password=password,
                        origin=f"tenant {name}", extra={"vhost": name})

    def drop(self, name: str, owner: TenantOwner) -> None:
        validate_tenant_name(name)
        vhost = self._api("GET", f"vhosts/{name}", missing_ok=True)
        if vhost is not None and _refuse_foreign("rabbitmq", "vhost", name,
                                                 vhost.get("description"), owner):
            self._api("DELETE", f"vhosts/{name}", missing_ok=True)
        user = self._api("GET", f"users/{name}", missing_ok=True)
        if user is not None:
            tags = user.get("tags", [])
            if TAG not in (tags.split(",") if isinstance(tags, str) else tags):
                raise TenantError(f"refusing to delete rabbitmq user {name}: it is not a "
                                  "labkit tenant's (no labkit-tenant tag)")
            self._api("DELETE", f"users/{name}", missing_ok=True)

    def owners(self) -> dict[str, TenantOwner]:
        found = {}
        for vhost in self._api("GET", "vhosts"):
            owner = TenantOwner.from_tag(vhost.get("description"))
            if owner is not None and TENANT_NAME.fullmatch(vhost["name"]):
                found[vhost["name"]] = owner
        return found


# -- the AWS emulator -----------------------------------------------------------------


class AwsTenants:
    """A name prefix on the emulator, and a marker bucket tagged with the owner.

    moto accepts any credentials, so nothing stops a client from touching another
    prefix: `drop` deletes the buckets and queues whose names start with the prefix.
    """

    def __init__(self, url: str) -> None:
        self.admin = _admin_endpoint("aws", url)

    def _client(self, service: str) -> Any:
        try:
            import boto3
        except ImportError:
            raise TenantError("aws tenants need boto3: pip install 'labkit[lessons]' or "
                              "boto3") from None
        extra = self.admin.extra
        return boto3.client(service, endpoint_url=self.admin.url,
                            region_name=extra["region"], aws_access_key_id=extra["access_key"],
                            aws_secret_access_key=extra["secret_key"])

    @staticmethod
    def prefix(name: str) -> str:
        # S3 bucket names allow no underscore
        return validate_tenant_name(name).replace("_", "-") + "-"

    def check(self) -> None:
        try:
            self._client("s3").list_buckets()
        except TenantError:
            raise
        except Exception as exc:  # noqa: BLE001 (botocore's errors have no common base)
            raise TenantError(f"the AWS emulator at {self.admin.url} ({ADMIN_ENV['aws']}) did "
                              f"not answer: {exc}") from None

    def _marker(self, name: str) -> str:
        return self.prefix(name) + "labkit-tenant"

    def create(self, name: str, owner: TenantOwner) -> Endpoint:
        s3 = self._client("s3")
        marker = self._marker(name)
        s3.create_bucket(Bucket=marker)
        s3.put_bucket_tagging(Bucket=marker, Tagging={"TagSet": [{"Key": TAG,
                                                                  "Value": owner.tag}]})
        return Endpoint(service="aws", backend="tenant", url=self.admin.url,
                        host=self.admin.host, port=self.admin.port, origin=f"tenant {name}",
                        extra={**self.admin.extra, "prefix": self.prefix(name)})

    def _tag(self, s3: Any, bucket: str) -> str | None:
        try:
            tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
        except Exception:  # noqa: BLE001 (no such bucket, or no tags)
            return None
        return next((tag["Value"] for tag in tags if tag["Key"] == TAG), None)

    def drop(self, name: str, owner: TenantOwner) -> None:
        prefix = self.prefix(name)
        s3 = self._client("s3")
        buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])
                   if b["Name"].startswith(prefix)]
        if self._marker(name) in buckets:
            _refuse_foreign("aws", "prefix", prefix, self._tag(s3, self._marker(name)), owner)
        for bucket in buckets:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                objects = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                           for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if objects:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
            s3.delete_bucket(Bucket=bucket)
        sqs = self._client("sqs")
        for queue_url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=queue_url)

    def owners(self) -> dict[str, TenantOwner]:
        s3 = self._client("s3")
        found = {}
        for bucket in s3.list_buckets().get("Buckets", []):
            match = re.fullmatch(r"lkt-([a-z0-9]{4,30})-labkit-tenant", bucket["Name"])
            owner = TenantOwner.from_tag(self._tag(s3, bucket["Name"])) if match else None
            if match and owner is not None:
                found[f"{TENANT_PREFIX}{match.group(1)}"] = owner
        return found


_PROVIDERS: dict[str, type[PostgresTenants | RedisTenants | RabbitmqTenants | AwsTenants]] = {
    "postgres": PostgresTenants,
    "redis": RedisTenants,
    "rabbitmq": RabbitmqTenants,
    "aws": AwsTenants,
}


# The specs, without the registry: the registry lists TenantBackend, so it imports us.
_SPECS = {spec.name: spec for spec in (_postgres.SPEC, _redis.SPEC, _rabbitmq.SPEC, _aws.SPEC)}


def spec_for(service: str) -> ServiceSpec:
    try:
        return _SPECS[service]
    except KeyError:
        raise TenantError(f"tenants exist for {', '.join(_SPECS)}; got {service!r}") from None


def _admin_endpoint(service: str, url: str) -> Endpoint:
    try:
        return spec_for(service).from_url(url, origin=ADMIN_ENV[service])
    except ServiceError as exc:
        raise TenantError(str(exc).replace(spec_for(service).url_env, ADMIN_ENV[service])) \
            from None


# -- tenants --------------------------------------------------------------------------

_LIVE: dict[str, Tenant] = {}
_LIVE_LOCK = threading.Lock()
# One provider per admin URL and process: they keep connections and what check() found.
_KNOWN: dict[tuple[str, str], _Provider] = {}
_CHECKED: set[tuple[str, str]] = set()


@dataclass
class Tenant:
    """One isolated slice of the shared servers: an endpoint per service, dropped as one.

    ``tenant["postgres"]`` is an ordinary `Endpoint`, so clients, fixtures and
    `services.environ` take it as they take a server's.
    """

    name: str
    owner: TenantOwner
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _providers: dict[str, _Provider] = field(default_factory=dict, repr=False)
    dropped: bool = False

    def __getitem__(self, service: str) -> Endpoint:
        try:
            return self.endpoints[service]
        except KeyError:
            raise TenantError(
                f"tenant {self.name} has no {service} (it has {', '.join(self.endpoints)}): "
                f"create it with {ADMIN_ENV.get(service, 'an admin URL')} set"
            ) from None

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.endpoints)

    def environ(self) -> dict[str, str]:
        """The tenant's endpoints as the environment variables `services.environ` gives."""
        variables: dict[str, str] = {}
        for service, endpoint in self.endpoints.items():
            variables.update(spec_for(service).environ(endpoint))
        return variables

    def clear_redis(self) -> int:
        """Delete every key of this tenant's Redis namespace (not FLUSHDB); returns how many."""
        provider = self._providers.get("redis")
        if not isinstance(provider, RedisTenants):
            raise TenantError(f"tenant {self.name} has no redis")
        return provider.clear(self.name)

    def drop(self) -> None:
        """Remove all the tenant owns on every server (again: nothing happens)."""
        if self.dropped:
            return
        errors = []
        for service in reversed(list(self._providers)):
            try:
                self._providers[service].drop(self.name, self.owner)
            except Exception as exc:  # noqa: BLE001 (drop the rest, then report every failure)
                errors.append(f"{service}: {exc}")
        self.dropped = True
        with _LIVE_LOCK:
            _LIVE.pop(self.name, None)
        if errors:
            raise TenantError(f"tenant {self.name} was not fully dropped: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.drop()


AdminLike = TenantAdmin | Mapping[str, str] | None


def _admin(admin: AdminLike) -> TenantAdmin:
    if admin is None:
        return TenantAdmin.from_env()
    if isinstance(admin, TenantAdmin):
        return admin
    unknown = set(admin) - set(ADMIN_ENV)
    if unknown:
        raise TenantError(f"admin URLs are for {', '.join(ADMIN_ENV)}; got {sorted(unknown)}")
    return TenantAdmin(**dict(admin))


def _providers_for(admin: TenantAdmin, services: tuple[str, ...] | None) -> dict[str, _Provider]:
    wanted = services if services is not None else admin.services
    if not wanted:
        raise TenantError(
            "no admin URL is set, so no tenant can be made: set "
            + ", ".join(ADMIN_ENV.values()) + " (any of them), or pass TenantAdmin(…)"
        )
    unknown = [service for service in wanted if service not in _PROVIDERS]
    if unknown:
        raise TenantError(f"tenants exist for {', '.join(_PROVIDERS)}; got {unknown}")
    providers: dict[str, _Provider] = {}
    for service in wanted:
        key = (service, admin.url(service))
        with _LIVE_LOCK:
            if key not in _KNOWN:
                _KNOWN[key] = _PROVIDERS[service](key[1])
            providers[service] = _KNOWN[key]
    return providers


def check_admin(admin: AdminLike = None, services: tuple[str, ...] | None = None) -> None:
    """Raise TenantError naming the missing right if `admin` cannot make tenants.

    Cheap enough to call before any test runs: a session start, a `setup()`.
    """
    for provider in _providers_for(_admin(admin), services).values():
        provider.check()


def create_tenant(admin: AdminLike = None, name: str | None = None,
                  services: tuple[str, ...] | None = None,
                  owner: TenantOwner | None = None) -> Tenant:
    """A new tenant on the servers in `admin` (LABKIT_*_ADMIN_URL by default).

    `services` limits it to some (default: every service with an admin URL); `name`
    must pass `validate_tenant_name` (default: generated). Admin rights are checked once
    per server and process, before anything is made. If any service fails, what was
    made is dropped again. `owner` defaults to this process; a classroom's owner
    (`TenantOwner.classroom`) makes a tenant that outlives this process: it is not
    dropped at exit nor swept, only by `drop_tenant`.
    """
    tenant_name = validate_tenant_name(name) if name is not None else new_tenant_name()
    resolved = _admin(admin)
    providers = _providers_for(resolved, services)
    for service, provider in providers.items():
        key = (service, resolved.url(service))
        if key not in _CHECKED:
            provider.check()
            _CHECKED.add(key)
    tenant = Tenant(name=tenant_name, owner=owner or TenantOwner.current())
    try:
        for service, provider in providers.items():
            tenant.endpoints[service] = provider.create(tenant_name, tenant.owner)
            tenant._providers[service] = provider
    except BaseException:
        try:
            tenant.drop()
        except TenantError:
            pass  # the error that stopped the create is the one to report
        raise
    if not tenant.owner.room:
        with _LIVE_LOCK:
            _LIVE[tenant_name] = tenant
    return tenant


def drop_tenant(name: str, owner: TenantOwner, admin: AdminLike = None,
                services: tuple[str, ...] | None = None) -> None:
    """Drop tenant `name` of `owner` from another process than the one that made it (a
    classroom's learner, revoked). Objects tagged for another owner are refused; every
    service is tried, then every failure reported."""
    validate_tenant_name(name)
    errors = []
    for service, provider in _providers_for(_admin(admin), services).items():
        try:
            provider.drop(name, owner)
        except Exception as exc:  # noqa: BLE001 (drop the rest, then report every failure)
            errors.append(f"{service}: {exc}")
    if errors:
        raise TenantError(f"tenant {name} was not fully dropped: " + "; ".join(errors))


def drop_live_tenants() -> None:
    """Drop every tenant this process still holds (registered to run at exit).

    A tenant lives as long as its process, as a started server does: a script that
    never calls `drop` leaves nothing behind when it exits, and the sweep takes what a
    killed process left.
    """
    for tenant in live_tenants().values():
        try:
            tenant.drop()
        except Exception as exc:  # noqa: BLE001 (at exit, report and go on dropping the others)
            print(f"labkit: could not drop tenant {tenant.name}: {exc}")


atexit.register(drop_live_tenants)


def live_tenants() -> dict[str, Tenant]:
    """The tenants this process created and has not dropped, by name."""
    with _LIVE_LOCK:
        return dict(_LIVE)


def tenant_of(endpoint: Endpoint) -> Tenant | None:
    """The live tenant of this process that `endpoint` belongs to, if any."""
    with _LIVE_LOCK:
        tenants = list(_LIVE.values())
    return next((t for t in tenants if t.endpoints.get(endpoint.service) == endpoint), None)


def clear_tenant_keys(endpoint: Endpoint) -> int:
    """Empty a tenant's Redis namespace (SCAN + UNLINK of its prefix, never FLUSHDB).

    Only the process that created the tenant can: the tenant's own user may not list
    keys, and the admin access stays with the creator.
    """
    tenant = tenant_of(endpoint)
    if tenant is None:
        raise TenantError(
            f"{endpoint.safe_url} is a tenant's Redis (keys {endpoint.extra.get('key_prefix')}*) "
            "that this process did not create: only its creator holds the admin access "
            "that empties it. Create the tenant in this process (services.create_tenant())"
        )
    return tenant.clear_redis()


def list_tenants(admin: AdminLike = None, services: tuple[str, ...] | None = None,
                 ) -> dict[str, tuple[TenantOwner, tuple[str, ...]]]:
    """Every tenant on the servers in `admin`: its owner and the services it is on."""
    found: dict[str, tuple[TenantOwner, tuple[str, ...]]] = {}
    for service, provider in _providers_for(_admin(admin), services).items():
        for name, owner in provider.owners().items():
            previous = found.get(name, (owner, ()))
            found[name] = (previous[0], (*previous[1], service))
    return found


def sweep_tenants(admin: AdminLike = None, services: tuple[str, ...] | None = None) -> list[str]:
    """Drop the tenants whose owner died, on every server in `admin`; returns their names.

    `services` limits the sweep to some servers (default: every one with an admin URL).
    Owners on other hosts are left alone: this machine cannot tell whether they live.
    """
    providers = _providers_for(_admin(admin), services)
    dead: dict[str, set[TenantOwner]] = {}
    for provider in providers.values():
        for name, owner in provider.owners().items():
            if not owner.alive:
                dead.setdefault(name, set()).add(owner)
    errors = []
    for name, owners in dead.items():
        for owner in owners:
            for service, provider in providers.items():
                try:
                    provider.drop(name, owner)
                except TenantError as exc:
                    if not str(exc).startswith("refusing"):
                        errors.append(f"{name} on {service}: {exc}")
    if errors:
        raise TenantError("some dead tenants were not dropped: " + "; ".join(errors))
    return sorted(dead)


# -- every process a tenant -----------------------------------------------------------


class TenantHandle:
    """A service this process gets as a tenant: stopping it drops the tenant."""

    def __init__(self, tenant: Tenant, service: str) -> None:
        self.tenant = tenant
        self.endpoint = tenant[service]

    def stop(self) -> None:
        self.tenant.drop()

    def pause(self) -> None:
        raise ServiceError(
            f"{self.endpoint.service} is tenant {self.tenant.name} of a shared server: labkit "
            "does not pause a server that other tenants use. Run this lesson on the docker "
            "or local backend (LABKIT_BACKEND=local)."
        )

    resume = pause


def private_per_tenant(service: str) -> bool:
    """Whether each process gets a private server of `service` instead of a slice of a
    shared one: what `labkit up` decides for Redis (see `up_private`), unless an admin
    URL names a shared server for it."""
    return service in up_private() and os.environ.get(ADMIN_ENV.get(service, ""), "") == ""


def _start_private(spec: ServiceSpec, owner: Owner) -> Handle:
    """A private server for this process: local binaries (Redis: ~70 ms), else Docker."""
    if spec.start_local is not None and not spec.missing_binaries():
        sweep_local()  # what a dead kernel left behind goes before a new server comes
        return spec.start_local(owner)
    if spec.start_docker is not None:
        return spec.start_docker(spec.image, owner)
    raise ServiceError(f"labkit up gives each process a private {spec.name}, but neither its "
                       f"binaries ({', '.join(spec.missing_binaries())}) nor Docker can start "
                       f"one here: install them, or set {ADMIN_ENV.get(spec.name, spec.url_env)}")


class TenantBackend:
    """Every process that asks for a service becomes a tenant of a shared server.

    Chosen by ``auto`` when the service's admin URL (LABKIT_<SERVICE>_ADMIN_URL) is set
    or this project's `labkit up` recorded one, or by LABKIT_BACKEND=tenant: each
    kernel, pytest run and xdist worker then gets its own database, vhost or Redis
    namespace, dropped when it exits, and swept if it dies. Where `labkit up` gives
    each process a private server instead (Redis), that is what a tenant gets.
    """

    name = "tenant"

    def available(self, spec: ServiceSpec) -> bool:
        return spec.name in _PROVIDERS and admin_url(spec.name) is not None

    def check(self, spec: ServiceSpec) -> str:
        if spec.name not in _PROVIDERS:
            raise ServiceError(f"{spec.name} has no tenants: use another backend")
        if private_per_tenant(spec.name):
            return ", a private server per process"
        check_admin(services=(spec.name,))
        return ""

    def start(self, spec: ServiceSpec, owner: Owner) -> Handle:
        if private_per_tenant(spec.name):
            return _start_private(spec, owner)
        # what a dead kernel left behind goes before a new tenant comes, as for servers
        try:
            sweep_tenants(services=(spec.name,))
        except TenantError as exc:  # a stray left for later is no reason not to start
            print(f"labkit: {exc}")
        return TenantHandle(create_tenant(services=(spec.name,)), spec.name)
