"""Kafka for tests and lessons: topics, tuned clients, consuming, and consumer lag.

    >>> from labkit import kafka, services
    >>> broker = services.get("kafka")
    >>> topic = kafka.create_topic(broker, kafka.unique_topic_name(broker, "orders"))
    >>> producer = kafka.CheckedProducer(broker)
    >>> producer.produce(topic, key="order-1", value=b"created")
    >>> producer.flush()          # raises DeliveryFailed, naming the broker, if not delivered
    0
    >>> config = kafka.consumer_config(broker)             # a new group: config["group.id"]
    >>> consumer = confluent_kafka.Consumer(config)
    >>> consumer.subscribe([topic])
    >>> [m.value() for m in kafka.consume(consumer, 1, timeout=10)]
    [b'created']
    >>> consumer.commit(asynchronous=False)
    >>> kafka.consumer_lag(broker, config["group.id"], topic)
    {0: PartitionLag(partition=0, committed=None, end=0, lag=0), 1: PartitionLag(partition=1, committed=1, end=1, lag=0), …}

The client is confluent-kafka (``pip install 'labkit[kafka]'``): Confluent's own
binding of librdkafka, the C client most Kafka clients in other languages are built
on, released with every Kafka version; kafka-python and aiokafka implement the
protocol again in Python and trail it. This module needs it (the fixtures import it
where they run, so a project without Kafka never does).

Consumer settings are tuned for tests: a new group's first message comes in about
3 s on a local broker instead of about 23 s with the client's defaults (a 45 s
session, 3 s heartbeats, a metadata refresh every 5 minutes). The 3 s are the
broker's: Tansu answers a new group's first join after half the session timeout, and
6 s is the least session timeout Apache Kafka accepts.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labkit.services import Endpoint, ServiceError
from labkit.waiting import wait_until

try:
    from confluent_kafka import (
        Consumer,
        ConsumerGroupTopicPartitions,
        KafkaError,
        KafkaException,
        Message,
        Producer,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
except ImportError:
    raise ImportError("labkit.kafka needs confluent-kafka: pip install 'labkit[kafka]'") from None

# Kafka's own rule for topic names (kafka.common.internals.Topic).
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
DeliveryCallback = Callable[[KafkaError | None, Message], None]
# How long a produced message may wait for its broker before it fails (librdkafka's
# default is 5 minutes: a stopped broker would look like a hung test).
DELIVERY_TIMEOUT_MS = 10_000
# Fresh consumer groups are joined in ~3 s with these (librdkafka's defaults: 45 s
# session, 3 s heartbeats, metadata refreshed every 5 minutes); 6 s is Kafka's least
# session timeout (group.min.session.timeout.ms).
TUNED_CONSUMER: dict[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "topic.metadata.refresh.interval.ms": 500,
    "auto.offset.reset": "earliest",
}
ADMIN_TIMEOUT = 10.0
DEFAULT_PARTITIONS = 3
# librdkafka's own log lines (a refused connection…) go to Python logging, where
# pytest captures them, instead of straight to the terminal.
LOG = logging.getLogger("labkit.kafka")


class InvalidTopicName(ValueError):
    """A topic name Kafka would refuse."""


class DeliveryFailed(ServiceError):
    """Produced messages were not acknowledged by the broker within the delivery timeout."""


def validate_topic_name(name: str) -> str:
    """`name` if Kafka accepts it as a topic name, else InvalidTopicName saying why.

    Checked here because not every broker checks: Tansu creates ``bad name!``.
    """
    if not isinstance(name, str) or not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidTopicName(
            "a Kafka topic name is 1 to 249 letters, digits, '.', '_' or '-' (and not '.' "
            f"or '..'), got {name!r}: e.g. 'order-events'"
        )
    return name


def unique_topic_name(endpoint: Endpoint, label: str = "topic") -> str:
    """A topic name no other test or process uses: the tenant's prefix, `label`, a random tail.

    `label` says what the topic is for (a test's name, say); characters Kafka refuses
    are an InvalidTopicName error, not silently replaced.
    """
    return validate_topic_name(f"{endpoint.topic_prefix}{label}-{uuid.uuid4().hex[:10]}")


def admin_client(endpoint: Endpoint) -> AdminClient:
    """An admin client on `endpoint` (topics, offsets, groups), logging to Python logging."""
    config: dict[str, Any] = {"bootstrap.servers": endpoint.bootstrap_servers, "logger": LOG}
    return AdminClient(config)


def create_topic(endpoint: Endpoint, name: str, partitions: int = DEFAULT_PARTITIONS,
                 timeout: float = ADMIN_TIMEOUT) -> str:
    """Create topic `name` with `partitions` partitions and wait until every one has a leader.

    A tenant's topic must start with its prefix (`Endpoint.topic_prefix`): a name that
    does not is refused, as the tenant's other topics are dropped by that prefix.
    """
    validate_topic_name(name)
    if not name.startswith(endpoint.topic_prefix):
        raise InvalidTopicName(
            f"this process is {endpoint.origin} of a shared Kafka: its topics start "
            f"with {endpoint.topic_prefix!r}, got {name!r} — use unique_topic_name()"
        )
    if partitions < 1:
        raise ValueError(f"a topic needs at least 1 partition, got {partitions}")
    admin = admin_client(endpoint)
    futures = admin.create_topics([NewTopic(name, partitions, 1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[name].result(timeout)
    except Exception as exc:  # noqa: BLE001 (KafkaException, or a timeout)
        raise ServiceError(f"could not create topic {name!r} on {endpoint}: {exc}") from None

    def led() -> bool:
        found = admin.list_topics(name, timeout=timeout).topics.get(name)
        return (found is not None and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 for p in found.partitions.values()))

    wait_until(led, timeout=timeout, interval=0.05, message=f"topic {name} with leaders")
    return name


def delete_topic(endpoint: Endpoint, name: str, timeout: float = ADMIN_TIMEOUT) -> None:
    """Delete topic `name`; one that is gone already is fine."""
    admin = admin_client(endpoint)  # kept while its futures run: a dropped client cancels them
    futures = admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[name].result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise ServiceError(f"could not delete topic {name!r} on {endpoint}: {exc}") from None


def producer_config(endpoint: Endpoint, **overrides: Any) -> dict[str, Any]:
    """Producer settings for `endpoint`: a bounded delivery timeout, logs to Python logging.

    On a Tansu broker each record goes in a batch of its own: Tansu reports a
    partition's end as the last batch's first offset plus one, so consumer lag read
    from it is right only then.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": endpoint.bootstrap_servers,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "logger": LOG,
    }
    if endpoint.extra.get("broker") == "tansu":
        config["batch.num.messages"] = 1
    return {**config, **overrides}


def consumer_config(endpoint: Endpoint, group_id: str | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """Consumer settings for `endpoint`, tuned for tests, in group `group_id` (a fresh one
    if None: it starts from the earliest message, sharing nothing with other tests)."""
    return {
        "bootstrap.servers": endpoint.bootstrap_servers,
        "group.id": group_id or f"{endpoint.topic_prefix}labkit-group-{uuid.uuid4().hex[:10]}",
        "logger": LOG,
        **TUNED_CONSUMER,
        **overrides,
    }


class CheckedProducer(Producer):
    """A confluent_kafka.Producer whose `flush` raises when a message was not delivered.

    librdkafka reports a failed delivery only to a callback, which a test easily
    forgets: here every `produce` records its outcome (and calls the test's own
    `on_delivery` too), and `flush` raises DeliveryFailed naming the broker and its
    URL, after at most the delivery timeout, instead of returning a count nobody reads.
    """

    def __init__(self, endpoint: Endpoint, **overrides: Any) -> None:
        self.endpoint = endpoint
        self.config = producer_config(endpoint, **overrides)
        self.failures: list[tuple[str, KafkaError]] = []
        super().__init__(self.config)

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        """confluent_kafka's `produce`, its outcome recorded for `flush`."""
        own = on_delivery or callback

        def record(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.failures.append((message.topic() or topic, error))
            if own is not None:
                own(error, message)

        super().produce(topic, value, key, partition, on_delivery=record,
                        timestamp=timestamp, headers=headers)

    def flush(self, timeout: float = -1) -> int:
        """Wait for every produced message's outcome (at most the delivery timeout), and
        raise DeliveryFailed if one was not delivered; returns how many are still queued
        when `timeout` (seconds) ran out first."""
        queued = super().flush(timeout)
        if self.failures:
            failures, self.failures = self.failures, []
            topics = sorted({topic for topic, _ in failures})
            raise DeliveryFailed(
                f"{len(failures)} message(s) to {', '.join(topics)} not delivered by "
                f"{self.endpoint} within {self.config['message.timeout.ms'] / 1000:g}s "
                f"(first error: {failures[0][1].str()}). Is the broker running? "
                "`labkit status` shows what labkit started."
            )
        return queued


def consume(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Message]:
    """Poll `consumer` until `count` messages came or `timeout` seconds passed; return them.

    Fewer than `count` means none came in time (a test asserts on the list, and "no
    event" is an empty one). A message carrying an error raises it, except the end of a
    partition, which only says there is nothing more for now.
    """
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        message = consumer.poll(min(remaining, 0.2))
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(error)
        messages.append(message)
    return messages


@dataclass(frozen=True)
class PartitionLag:
    """How far group's committed offset trails a partition's end (its high watermark)."""

    partition: int
    committed: int | None
    end: int
    lag: int


def consumer_lag(endpoint: Endpoint, group_id: str, topic: str,
                 timeout: float = ADMIN_TIMEOUT) -> dict[int, PartitionLag]:
    """Per partition of `topic`: group `group_id`'s committed offset, the end, and the lag.

    Read from outside the group (an admin client), as a monitoring tool does, so it
    can be sampled while the group's consumers work. A partition the group never
    committed counts from its beginning (committed is None).
    """
    admin = admin_client(endpoint)
    found = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None:
        raise ServiceError(f"topic {topic!r} not found on {endpoint}: "
                           f"{found.error if found else 'no metadata'}")
    partitions = [TopicPartition(topic, number) for number in sorted(found.partitions)]
    request = ConsumerGroupTopicPartitions(group_id, partitions)
    committed_by = {
        tp.partition: tp.offset
        for tp in admin.list_consumer_group_offsets([request])[group_id]
        .result(timeout).topic_partitions
    }
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout)
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout)
    lags = {}
    for tp in partitions:
        committed = committed_by.get(tp.partition, -1)
        known = committed if committed >= 0 else None
        end = ends[tp.partition]
        lags[tp.partition] = PartitionLag(tp.partition, known, end,
                                          end - (known if known is not None else starts[tp.partition]))
    return lags


def _offsets(admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec,
             timeout: float) -> dict[int, int]:
    futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout)
    return {tp.partition: future.result(timeout).offset for tp, future in futures.items()}
