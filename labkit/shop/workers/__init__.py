"""The shop's background workers: the order queue's consumer and the outbox relay.

    >>> from labkit.shop.workers import OrderWorker, OrderTopology, relay_once, OrderEventConsumer

Both run outside the web app, on their own connections; see each module's docstring
for the delivery guarantees (at least once, deduplicated by message id).
"""

from labkit.shop.workers.outbox import (
    ORDER_COUNTERS,
    STATS_KEY,
    Handled,
    OrderEventConsumer,
    read_stats_cache,
    relay_channel,
    relay_once,
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
    "Handled",
    "InvalidMessage",
    "OrderEventConsumer",
    "OrderLine",
    "OrderMessage",
    "OrderTopology",
    "OrderWorker",
    "Result",
    "TopologyConflict",
    "add_to_counter",
    "attempts_before",
    "declare_topology",
    "parse_order",
    "read_stats_cache",
    "record_order",
    "relay_channel",
    "relay_once",
    "unpublished_count",
]
