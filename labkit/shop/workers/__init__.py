"""The shop's background workers: the order queue's consumer, the outbox relay, and
the idempotent consumers of the events it delivers.

    >>> from labkit.shop.workers import OrderWorker, OrderTopology, relay_once, OrderEventConsumer
    >>> from labkit.shop.workers import BackgroundJobs, OutboxRelay, WelcomeEmailConsumer
    >>> from labkit.shop.workers import KafkaRelay, stream_once     # order events to Kafka

Each runs on connections of its own; see each module's docstring for the delivery
guarantees (at least once, deduplicated by message id). The serving shop runs the
relay itself, as one of its `BackgroundJobs`.
"""

from labkit.shop.workers.background import BackgroundJobs, JobStats, PeriodicJob
from labkit.shop.workers.emails import WelcomeEmail, WelcomeEmailConsumer
from labkit.shop.workers.outbox import (
    ORDER_COUNTERS,
    STATS_KEY,
    Handled,
    IdempotentConsumer,
    KafkaRelay,
    OrderEventConsumer,
    OutboxRelay,
    StreamError,
    claim_message,
    read_stats_cache,
    relay_channel,
    relay_once,
    stream_once,
    unpublished_count,
)
from labkit.shop.workers.worker import (
    CONSUMER,
    InvalidMessage,
    OrderLine,
    OrderMessage,
    OrderTopology,
    OrderWorker,
    Result,
    TopologyConflict,
    add_to_counter,
    attempts_before,
    declare_topology,
    parse_order,
    record_order,
)

__all__ = [
    "CONSUMER",
    "ORDER_COUNTERS",
    "STATS_KEY",
    "BackgroundJobs",
    "Handled",
    "IdempotentConsumer",
    "InvalidMessage",
    "JobStats",
    "KafkaRelay",
    "OrderEventConsumer",
    "OrderLine",
    "OrderMessage",
    "OrderTopology",
    "OrderWorker",
    "OutboxRelay",
    "PeriodicJob",
    "Result",
    "StreamError",
    "TopologyConflict",
    "WelcomeEmail",
    "WelcomeEmailConsumer",
    "add_to_counter",
    "attempts_before",
    "claim_message",
    "declare_topology",
    "parse_order",
    "read_stats_cache",
    "record_order",
    "relay_channel",
    "relay_once",
    "stream_once",
    "unpublished_count",
]
