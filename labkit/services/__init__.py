"""Live services for tests and lessons: one API over three backends.

    >>> from labkit import services
    >>> pg = services.get("postgres")      # started on first use, reused after
    >>> pg.url
    'postgresql+psycopg://labkit_1a2b3c:…@127.0.0.1:32771/labkit'
    >>> pg.dsn, pg.host, pg.port, pg.user, pg.database
    ('postgresql://labkit_1a2b3c:…@127.0.0.1:32771/labkit', '127.0.0.1', 32771, …)

The backend is chosen per service by LABKIT_<SERVICE>_BACKEND, else LABKIT_BACKEND
(``auto`` by default): a URL in LABKIT_<SERVICE>_URL, else services that `labkit up`
runs for this project, else Docker if an engine answers, else local binaries. A started
service lives as long as this Python process (a Jupyter kernel, a pytest run) and stops
at exit.

Another project's application takes the endpoints as environment variables
(`environ`, `export`, or ``eval "$(labkit env)"`` in a shell).

Lessons about how services start (01) and about Testcontainers (12) also use the
parts below the API: `start` (a private, uncached instance on a chosen backend), the
Docker client and loopback publishing, owners, their reapers and the sweep, random
secrets, free ports, and the local backend's binaries and server user.

Where servers are shared (a workshop server, a CI service container), `create_tenant`
makes an isolated slice of them from admin URLs (LABKIT_<SERVICE>_ADMIN_URL): a
database and role, a vhost and user, a Redis ACL user confined to a key prefix; its
endpoints are ordinary `Endpoint`s, and `sweep_tenants` drops dead owners' tenants.
A learner who ran `labkit join` (see `labkit.classroom`) has their room's URLs in the
state dir: importing this package puts them in the environment, under any set by hand.

Inside: one module per service (``_postgres``, ``_redis``, ``_rabbitmq``, ``_aws``),
one per backend (``_docker``, ``_local``, ``_external``), ``_registry`` listing both,
and ``_tenants``; adding a service is its module plus one line there.
"""

from __future__ import annotations

from labkit.services._base import (
    LOOPBACK,
    Binary,
    Endpoint,
    Handle,
    Owner,
    ServiceError,
    ServiceSpec,
    current_owner,
    free_port,
    owner_alive,
    random_secret,
    redact,
)
from labkit.services._docker import (
    ImageUnavailable,
    containers_of,
    docker_client,
    docker_host,
    engine_answers,
    image_present,
    publish_on_loopback,
    why_no_containers,
)
from labkit.services._local import (
    chown_tree,
    make_workdir,
    new_instance,
    privilege_prefix,
    run_recorded,
)
from labkit.services._ownership import (
    INSTANCE_ENV,
    LocalRecord,
    kill_instance,
    local_records,
    processes_of,
    sweep_containers,
    sweep_local,
)
from labkit.services._postgres import postgres_bindir
from labkit.services._reaper import reaper_of, watch_containers
from labkit.services._registry import Backend
from labkit.services._runtime import (
    backend_for,
    check,
    environ,
    export,
    get,
    given,
    handle,
    paused,
    running,
    specs,
    start,
    stop,
    stop_all,
)
from labkit.services._state import (
    STATE_ENV,
    apply_joined,
    forget_joined,
    project_root,
    read_joined,
    read_up_state,
    state_dir,
    up_file,
    write_joined,
    write_private,
    write_up_state,
)
from labkit.services._tenants import (
    ADMIN_ENV,
    Tenant,
    TenantAdmin,
    TenantError,
    TenantOwner,
    admin_url,
    check_admin,
    clear_tenant_keys,
    create_tenant,
    drop_tenant,
    list_tenants,
    live_tenants,
    private_per_tenant,
    sweep_tenants,
    tenant_of,
    validate_tenant_name,
)

__all__ = [
    "ADMIN_ENV",
    "INSTANCE_ENV",
    "LOOPBACK",
    "STATE_ENV",
    "Backend",
    "Binary",
    "Endpoint",
    "Handle",
    "ImageUnavailable",
    "LocalRecord",
    "Owner",
    "ServiceError",
    "ServiceSpec",
    "Tenant",
    "TenantAdmin",
    "TenantError",
    "TenantOwner",
    "admin_url",
    "backend_for",
    "check",
    "check_admin",
    "chown_tree",
    "clear_tenant_keys",
    "containers_of",
    "create_tenant",
    "current_owner",
    "docker_client",
    "docker_host",
    "drop_tenant",
    "engine_answers",
    "environ",
    "export",
    "forget_joined",
    "free_port",
    "get",
    "given",
    "handle",
    "image_present",
    "kill_instance",
    "list_tenants",
    "live_tenants",
    "local_records",
    "make_workdir",
    "new_instance",
    "owner_alive",
    "paused",
    "postgres_bindir",
    "private_per_tenant",
    "privilege_prefix",
    "processes_of",
    "project_root",
    "publish_on_loopback",
    "random_secret",
    "read_joined",
    "read_up_state",
    "reaper_of",
    "redact",
    "run_recorded",
    "running",
    "specs",
    "start",
    "state_dir",
    "stop",
    "stop_all",
    "sweep_containers",
    "sweep_local",
    "sweep_tenants",
    "tenant_of",
    "up_file",
    "validate_tenant_name",
    "watch_containers",
    "why_no_containers",
    "write_joined",
    "write_private",
    "write_up_state",
]

# A room this project joined (`labkit join`) names its servers before anything asks.
apply_joined()
