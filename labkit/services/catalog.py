"""The services labkit provides out of the box."""

from __future__ import annotations

from functools import partial

from labkit.services import docker, local, register
from labkit.services.base import ServiceSpec
from labkit.services.external import endpoint_from_url

register(
    ServiceSpec(
        name="postgres",
        default_image="postgres:16-alpine",
        start_docker=docker.start_postgres_container,
        start_local=local.start_local_postgres,
        from_url=partial(endpoint_from_url, "postgres"),
        local_binaries=("initdb",),
        default_port=5432,
    )
)
register(
    ServiceSpec(
        name="redis",
        default_image="redis:7-alpine",
        start_docker=docker.start_redis_container,
        start_local=local.start_local_redis,
        from_url=partial(endpoint_from_url, "redis"),
        local_binaries=("redis-server",),
        default_port=6379,
    )
)
register(
    ServiceSpec(
        name="rabbitmq",
        default_image="rabbitmq:3-management-alpine",
        start_docker=docker.start_rabbitmq_container,
        start_local=local.start_local_rabbitmq,
        from_url=partial(endpoint_from_url, "rabbitmq"),
        local_binaries=("rabbitmq-server",),
        url_env_aliases=("LABKIT_AMQP_URL",),
        default_port=5672,
    )
)

from labkit.services import aws as _aws  # noqa: F401  (registers "aws": S3, SQS… via moto)
