"""The shop's configuration: every host, secret and timeout comes from here.

Values come from keyword arguments, else ``LABKIT_SHOP_*`` environment variables
(``LABKIT_SHOP_DATABASE_URL``, ``LABKIT_SHOP_JWT_SECRET``, …). Every layer of the shop
reads it, so it sits at the shop's root and imports nothing of the shop. A lesson or
test never writes a host by hand: `labkit.shop.testing.settings_from_services()` asks
labkit for the live endpoints and fills the rest with safe defaults.

The JWT secret, when given, must be at least 32 bytes (an empty or short one is refused
here, at start). Left unset, each process draws a random one: fine for one worker, but
several workers must share one ``LABKIT_SHOP_JWT_SECRET``, or a token issued by one
worker is refused by the next. Make one with
``python -c "import secrets; print(secrets.token_urlsafe(32))"``.
"""

from __future__ import annotations

import math
import os
import secrets
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LABKIT_SHOP_"
PasswordProfile = Literal["owasp", "fast"]

# HS256 signs with HMAC-SHA256: a key shorter than the hash (32 bytes) is weaker than
# the signature it makes, and an empty one signs nothing at all (PyJWT refuses it, so
# every login would be a 500). RFC 7518 §3.2 asks for at least this much.
JWT_SECRET_MIN_BYTES = 32
# Below this a relay would poll PostgreSQL in a tight loop for no gain in lag.
MIN_RELAY_INTERVAL = 0.05
# An outbox destination that starts with this names a Kafka topic, not a RabbitMQ queue.
KAFKA_DESTINATION = "kafka:"
MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


class ShopSettings(BaseSettings):
    """Everything `create_app` needs to reach its dependencies."""

    # hide_input_in_errors: a refused value is never echoed into an error (and so into
    # logs): the JWT secret and the URLs' passwords live here. Messages say what is wrong.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", hide_input_in_errors=True
    )

    # -- live dependencies -------------------------------------------------------
    database_url: str = Field(description="SQLAlchemy URL, postgresql+psycopg://…")
    redis_url: str = Field(description="redis://…")
    amqp_url: str = Field(description="amqp://… (RabbitMQ)")
    inventory_url: str = Field(
        "http://127.0.0.1:8101", description="base URL of the inventory service"
    )
    payment_url: str = Field("http://127.0.0.1:8102", description="base URL of the payment service")

    # -- database timeouts -------------------------------------------------------
    # A frozen server makes clients hang, so every wait is bounded: connects by
    # connect_timeout, statements by the server's statement_timeout, and any single
    # wait on the socket by db_io_timeout (which also covers a server that answers
    # nothing at all, where statement_timeout cannot fire).
    db_connect_timeout: int = Field(2, ge=2, description="seconds; libpq's minimum is 2")
    db_statement_timeout: float = Field(2.0, gt=0, description="seconds, enforced by the server")
    db_io_timeout: float = Field(3.0, gt=0, description="seconds, enforced by the client")
    db_pool_size: int = Field(5, ge=1)
    db_pool_timeout: float = Field(2.0, gt=0, description="seconds to wait for a free connection")

    # -- other clients -----------------------------------------------------------
    redis_timeout: float = Field(1.0, gt=0, description="seconds for Redis connect and reads")
    amqp_timeout: float = Field(2.0, gt=0, description="seconds for RabbitMQ connect and publish")
    downstream_timeout: float = Field(3.0, gt=0, description="seconds per inventory/payment call")

    # -- security ----------------------------------------------------------------
    # Unless given, each process draws its own random key: right for one worker, but
    # several workers (uvicorn --workers, replicas behind a load balancer) must share
    # one LABKIT_SHOP_JWT_SECRET, or a token issued by one is refused by the others.
    jwt_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        description=(
            f"HS256 signing key, at least {JWT_SECRET_MIN_BYTES} bytes; a random one per "
            "process unless given (several workers need one shared secret)"
        ),
    )
    jwt_ttl_seconds: int = Field(900, gt=0)
    # Wrong passwords for one email, within a window from the first, before logins
    # for it answer 429 (counted in Redis, so across workers).
    login_max_failures: int = Field(10, ge=1, description="failed logins allowed per window")
    # The same from one client (many emails tried from one address), in the same window.
    login_max_failures_per_client: int = Field(
        100,
        ge=1,
        description="failed logins allowed per window from one client address, any emails"
        " (a classroom behind one NAT shares it)",
    )
    login_failure_window_seconds: int = Field(
        300, gt=0, description="seconds; also how long a locked email or client waits"
    )
    # The client of a request is the peer address of its connection. X-Forwarded-For is
    # trusted only from the proxies named here (uvicorn's forwarded_allow_ips): any client
    # can write that header, and it would choose whose login count a failure goes to.
    forwarded_allow_ips: str = Field(
        "",
        description="comma-separated addresses of reverse proxies whose X-Forwarded-For"
        " is trusted for the client address; empty: none",
    )
    # "fast" exists for test suites only: OWASP parameters cost ~50 ms per hash.
    password_hash_profile: PasswordProfile = "owasp"

    # -- GraphQL request limits ----------------------------------------------------
    # One GraphQL request can ask for as much work as the client likes: 100,000 aliases
    # of __typename (1.9 MB) held the event loop for 7 s, 1,000 aliased searches ran
    # 1,000 SQL queries. Each limit refuses such a request before any resolver runs.
    graphql_max_body_bytes: int = Field(
        256 * 1024,
        gt=0,
        description="bytes of a POST /graphql body, refused with 413 before it is parsed;"
        " the largest valid createPost (20,000 characters of content) fits",
    )
    graphql_max_tokens: int = Field(
        2000, gt=0, description="tokens of a GraphQL document; the parser stops past it"
    )
    graphql_max_aliases: int = Field(30, ge=0, description="aliased fields in one document")
    graphql_max_database_fields: int = Field(
        5,
        gt=0,
        description="fields in one document whose resolver queries the database"
        " (user, search, createPost)",
    )
    # GET /graphql serves the GraphiQL page (a web IDE) only when asked: it is for people
    # exploring the shop (`labkit shop serve` turns it on), not part of the API.
    graphql_ide: bool = Field(False, description="serve GraphiQL at GET /graphql")

    # -- background jobs ---------------------------------------------------------
    # The serving shop (its lifespan, or ShopServer) runs these on threads of its own.
    outbox_relay_interval: float = Field(
        0.5,
        description="seconds between passes of the outbox relay while the shop serves; "
        "0 turns it off (for tests and lessons that call relay_once themselves)",
    )
    outbox_relay_batch_size: int = Field(100, ge=1, description="events per relay transaction")
    background_max_backoff: float = Field(
        2.0,
        gt=0,
        allow_inf_nan=False,
        description="longest wait, in seconds, between retries of a failing background job "
        "(broker or database down): after an outage, work resumes within it",
    )

    # -- cache and queues --------------------------------------------------------
    user_cache_ttl_seconds: int = Field(3600, gt=0)
    profile_cache_ttl_seconds: int = Field(60, gt=0)
    email_queue: str = "email-queue"
    notifications_queue: str = "notifications"
    order_events_exchange: str = "order-events"

    # -- the order events' stream on Kafka (off unless bootstrap servers are given) ---
    # RabbitMQ stays the broker of the order workflow; Kafka gets a copy of each order
    # event (ORDER_CREATED, …) keyed by order id, through the outbox like every event.
    kafka_bootstrap_servers: str = Field(
        "",
        description="host:port[,host:port] of a Kafka cluster to stream order events to;"
        " empty: no stream (the default)",
    )
    kafka_order_events_topic: str = Field(
        "order-events", description="the Kafka topic of the order events, keyed by order id"
    )
    kafka_timeout: float = Field(
        5.0, gt=0, description="seconds a Kafka delivery may take before the relay retries it"
    )

    @property
    def order_event_destinations(self) -> tuple[str, ...]:
        """Where each order event goes: the RabbitMQ queue, and the Kafka topic if one is set."""
        if not self.kafka_bootstrap_servers:
            return (self.order_events_exchange,)
        return (self.order_events_exchange, KAFKA_DESTINATION + self.kafka_order_events_topic)

    # -- the order saga's recovery (labkit.shop.domain.orders) ----------------------
    # An order still PENDING this long after its last change is stuck (its request met
    # an outage), not running: the reconciler completes it. Keep it far above a saga's
    # run (three downstream calls and short transactions, each bounded above). Taking a
    # running saga for a stuck one costs no double charge or event (every step is
    # idempotent), but the saga's own last write may then wait for the reconciler's lock.
    order_reconcile_after_seconds: float = Field(
        60.0,
        gt=0,
        description="seconds an order stays PENDING before the reconciler completes it;"
        " well above 3 × downstream_timeout",
    )
    order_reconcile_every_seconds: float = Field(
        10.0,
        ge=0,
        allow_inf_nan=False,
        description="how often the serving shop runs its reconciler; 0 turns it off",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_is_long_enough(cls, secret: SecretStr) -> SecretStr:
        """Refuse a short or empty key at start, not with a 500 at the first login.

        The message gives the length, never the value: it ends up in logs.
        """
        size = len(secret.get_secret_value().encode())
        if size < JWT_SECRET_MIN_BYTES:
            raise ValueError(
                f"the JWT secret ({ENV_PREFIX}JWT_SECRET) is {size} bytes long; HS256 needs "
                f"at least {JWT_SECRET_MIN_BYTES}. Make one with: {MAKE_A_SECRET} "
                "(or leave it unset for a random one per process, fine for a single worker)"
            )
        return secret

    @field_validator("outbox_relay_interval")
    @classmethod
    def _relay_interval_is_sane(cls, seconds: float) -> float:
        """Refuse an interval that would spin or make no sense, saying what to give."""
        if not math.isfinite(seconds) or seconds < 0 or 0 < seconds < MIN_RELAY_INTERVAL:
            raise ValueError(
                f"the outbox relay interval ({ENV_PREFIX}OUTBOX_RELAY_INTERVAL) is {seconds} s; "
                f"give 0 (relay off) or at least {MIN_RELAY_INTERVAL} s, e.g. 0.5"
            )
        return seconds


def settings_environment(settings: ShopSettings) -> dict[str, str]:
    """`settings` as the ``LABKIT_SHOP_*`` variables that `ShopSettings()` reads back.

    For a process of the shop's own (a uvicorn worker): the JWT secret goes along, so a
    token signed in one process verifies in the others.
    """
    environment = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        environment[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return environment


def given_in_environment(field: str) -> bool:
    """True if ``LABKIT_SHOP_<FIELD>`` is set (and not empty): the environment wins."""
    return bool(os.environ.get(f"{ENV_PREFIX}{field.upper()}"))
