"""The shop's clients of its infrastructure: the Redis cache and login limit, the RabbitMQ outbox.

    >>> from labkit.shop.infra import Cache, connect, profile_key, record_event, publish_now

Events are written to the outbox in the caller's transaction (`record_event`) and
published after its commit (`publish_now`); the cache keys are named here once.
"""

from labkit.shop.infra.cache import Cache, connect, profile_key, user_key
from labkit.shop.infra.login_limit import Lockout, LoginLimit, client_failures_key, failures_key
from labkit.shop.infra.messaging import (
    AmqpPublisher,
    PublishError,
    PublishSkipped,
    amqp_parameters,
    publish_now,
    record_event,
)

__all__ = [
    "AmqpPublisher",
    "Cache",
    "Lockout",
    "LoginLimit",
    "PublishError",
    "PublishSkipped",
    "amqp_parameters",
    "client_failures_key",
    "connect",
    "failures_key",
    "profile_key",
    "publish_now",
    "record_event",
    "user_key",
]
