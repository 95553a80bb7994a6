"""Event streams under test: topics of one block's own, partitions read to their end, and
consumers that crash, rebalance, meet poison records and fall behind.

    >>> from labkit.shop.testing.streaming import fresh_topic, producer_for, read_to_end, send

Lesson 13 tests Kafka consumers on a live broker with these, and so can tests in `tests/`.
Everything takes the broker as labkit's Kafka `Endpoint` (``services.get("kafka")`` or the
``kafka`` fixture), and builds on `labkit.kafka`'s topics and client settings: nothing
here names a host.

- **topics and records**: `fresh_topic` (a topic of a block's own, deleted after it),
  `producer_for`, `send` (one record, acknowledged: the partition and offset it got),
  `read_to_end` (a topic's records from given offsets to each partition's end), `as_row`,
  `header`;
- **order events**: `an_order_event` and `send_order_event` (as the shop's Kafka relay
  streams them: keyed by order id, a ``message_id`` header), `parse_order_event`;
- **consumers**: `group_consumer` (every partition of a topic from its group's committed
  offsets, with no group join to wait for), `records_until_end`, `drain` (commit after
  each record; stop where the handler fails), `new_group`;
- **offsets**: `end_offsets`, `lag` (what the broker says a group has left);
- **demos**: `rebalance_run` (a second consumer joins while the first holds uncommitted
  work), `lag_run` (a producer faster than its consumer, the lag read at every step),
  `batched_high_watermark` (the end a broker reports after one batch of records).

Every wait is bounded by a timeout and nothing is timed, so a demo says the same thing on
a loaded machine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from labkit.kafka import (
    ADMIN_TIMEOUT,
    CheckedProducer,
    DeliveryFailed,
    admin_client,
    consumer_config,
    consumer_lag,
    create_topic,
    delete_topic,
    unique_topic_name,
)
from labkit.services import Endpoint

__all__ = [
    "Drained",
    "RebalanceRun",
    "an_order_event",
    "as_row",
    "batched_high_watermark",
    "drain",
    "end_offsets",
    "fresh_topic",
    "group_consumer",
    "header",
    "lag",
    "lag_run",
    "new_group",
    "parse_order_event",
    "producer_for",
    "read_to_end",
    "rebalance_run",
    "records_until_end",
    "send",
    "send_order_event",
]

# How long one request to the broker may take before it is an error: generous on a loaded
# 2-core machine, short enough that a broker that went away fails a cell, not hangs it.
REQUEST_SECONDS = ADMIN_TIMEOUT
# Consumers commit what they are told to, say where each partition ends, and wait at most
# 0.1 s for records at a partition's end (librdkafka waits 0.5 s): every demo reads to the end.
READING: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "fetch.wait.max.ms": 100,
}


def new_group(kafka: Endpoint, name: str = "group") -> str:
    """A consumer group id no other test or run uses: ``name-1a2b3c4d``, after the tenant's
    prefix on a shared broker (whose groups are dropped by it when the tenant goes)."""
    return f"{kafka.topic_prefix}{name}-{uuid.uuid4().hex[:8]}"


# The consumers `group_consumer` opened on each topic `fresh_topic` made, closed before the
# topic is deleted. A consumer still open on a deleted topic kills its process (librdkafka
# 2.16 on Tansu: a segmentation fault after a fetch answered for a topic with no name), and
# a check that fails halfway leaves its consumer open: the kernel must outlive a wrong answer.
_CONSUMERS_OF: dict[str, list[Consumer]] = {}


@contextmanager
def fresh_topic(kafka: Endpoint, partitions: int = 3, name: str = "events") -> Iterator[str]:
    """A topic of this block's own (``events-1a2b3c4d5e``), with `partitions`, deleted after
    it, and after the consumers `group_consumer` opened on it are closed."""
    topic = create_topic(kafka, unique_topic_name(kafka, name), partitions)
    _CONSUMERS_OF[topic] = []
    try:
        yield topic
    finally:
        for consumer in _CONSUMERS_OF.pop(topic):
            consumer.close()  # closing a closed consumer does nothing
        delete_topic(kafka, topic)


def producer_for(kafka: Endpoint, **config: Any) -> CheckedProducer:
    """A producer that says which broker failed to take a record, within 10 s.

    ``acks=all``: a send counts once the broker has written the record. `config` adds or
    overrides librdkafka settings (``linger.ms``, ``batch.num.messages``, …).
    """
    return CheckedProducer(kafka, **{"acks": "all", "linger.ms": 0, **config})


def _encoded(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def send(
    producer: CheckedProducer,
    topic: str,
    value: Any,
    key: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    partition: int = -1,
) -> tuple[int, int]:
    """Send one record and wait for the broker's answer: the (partition, offset) it got.

    A dict is sent as JSON, a str as UTF-8, bytes as they are. Without a `partition`, the
    producer picks one from the key (the same key, the same partition).
    """
    delivered: list[Message] = []
    producer.produce(topic, _encoded(value), key=key, partition=partition, headers=headers,
                     on_delivery=lambda error, message: delivered.append(message))
    producer.flush()  # raises DeliveryFailed, naming the broker, if it was refused
    where = (delivered[0].partition(), delivered[0].offset()) if delivered else (None, None)
    if where[0] is None or where[1] is None:
        raise DeliveryFailed(f"no answer from {producer.endpoint} for a record to {topic}")
    return where[0], where[1]


def _partitions(kafka: Endpoint, topic: str) -> list[int]:
    metadata = admin_client(kafka).list_topics(topic, timeout=REQUEST_SECONDS).topics[topic]
    if metadata.error is not None:
        raise RuntimeError(f"no topic {topic} on {kafka.url}: {metadata.error}")
    return sorted(metadata.partitions)


def group_consumer(kafka: Endpoint, topic: str, group: str, **config: Any) -> Consumer:
    """A consumer of every partition of `topic`, from where `group` committed (else the
    beginning). It assigns itself the partitions, so there is no group join to wait for;
    its commits are `group`'s. Auto-commit is off: it commits what you tell it to.
    """
    consumer = Consumer(consumer_config(kafka, group, **{**READING, **config}))
    consumer.assign([TopicPartition(topic, p) for p in _partitions(kafka, topic)])
    _CONSUMERS_OF.get(topic, []).append(consumer)
    return consumer


def records_until_end(consumer: Consumer, timeout: float = REQUEST_SECONDS) -> Iterator[Message]:
    """The records of the consumer's assigned partitions, until each is read to its end.

    Needs ``enable.partition.eof`` (`group_consumer` sets it). A partition that gets no
    answer within `timeout` is an error, not an end.
    """
    waiting = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions {sorted(p for _, p in waiting)} not read to their "
                               f"end within {timeout} s")
        message = consumer.poll(0.1)
        if message is None:
            continue
        error = message.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            waiting.discard((message.topic(), message.partition()))
        elif error is not None:
            raise RuntimeError(f"consuming {message.topic()}: {error}")
        else:
            yield message


def read_to_end(
    kafka: Endpoint, topic: str, start: dict[int, int] | None = None
) -> list[Message]:
    """Every record of `topic` from `start` (partition → offset; default: the beginning of
    every partition) to each partition's end, partition by partition. Commits nothing."""
    consumer = Consumer(consumer_config(kafka, new_group(kafka, "reader"), **READING))
    try:
        offsets = start if start is not None else dict.fromkeys(_partitions(kafka, topic),
                                                                 OFFSET_BEGINNING)
        consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        records = list(records_until_end(consumer))
    finally:
        consumer.close()
    return sorted(records, key=lambda m: (m.partition(), m.offset()))


def as_row(message: Message) -> dict[str, Any]:
    """A record as a table row: partition, offset, key, value (JSON decoded where it is)."""
    raw = message.value() or b""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    key = message.key()
    return {"partition": message.partition(), "offset": message.offset(),
            "key": key.decode() if key is not None else None, "value": value}


def end_offsets(kafka: Endpoint, topic: str) -> dict[int, int]:
    """Each partition's end (its high watermark): the offset its next record will get."""
    consumer = Consumer(consumer_config(kafka, new_group(kafka, "watermarks")))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                              timeout=REQUEST_SECONDS)[1]
            for p in _partitions(kafka, topic)
        }
    finally:
        consumer.close()


def lag(kafka: Endpoint, topic: str, group: str) -> int:
    """Records `group` has not committed yet, summed over the partitions: end − committed."""
    return sum(partition.lag for partition in consumer_lag(kafka, group, topic).values())


def batched_high_watermark(kafka: Endpoint, records: int = 5) -> tuple[int, int]:
    """(records sent in one batch to a fresh one-partition topic, the end the broker
    reports): equal on Apache Kafka; Tansu answers 1, its batch's first offset + 1."""
    with fresh_topic(kafka, partitions=1, name="watermark") as topic:
        producer = producer_for(kafka, **{"batch.num.messages": 10_000, "linger.ms": 50})
        for number in range(records):
            producer.produce(topic, str(number).encode())
        producer.flush(REQUEST_SECONDS)
        return records, end_offsets(kafka, topic)[0]


# -- order events -------------------------------------------------------------------------


def an_order_event(**overrides: Any) -> dict[str, Any]:
    """An ORDER_CREATED event as the shop streams it, for a new order id; `overrides`
    replace its fields."""
    return {
        "eventType": "ORDER_CREATED",
        "orderId": str(uuid.uuid4()),
        "userId": "1",
        "totalAmount": "109.97",
        **overrides,
    }


def send_order_event(
    producer: CheckedProducer, topic: str, event: dict[str, Any], message_id: str | None = None
) -> str:
    """Send `event` as the shop's Kafka relay does: keyed by its order id, with its outbox
    row's id in a ``message_id`` header (a new id, unless a resend gives the same). Returns
    the message id."""
    message_id = message_id or str(uuid.uuid4())
    send(producer, topic, event, key=event["orderId"],
         headers={"message_id": message_id, "type": event["eventType"]})
    return message_id


def header(record: Message, name: str) -> str | None:
    """The text of the record's header `name`, or None if it has none."""
    found = dict(record.headers() or {}).get(name)
    return found.decode() if isinstance(found, bytes) else found


def parse_order_event(raw: bytes | None) -> dict[str, Any]:
    """A record's value as an order event; ValueError saying what is wrong with it."""
    try:
        event = json.loads(raw or b"")
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(event, dict):
        # a ValueError as for bad JSON: the record's content is wrong, not the caller's types
        raise ValueError(f"expected a JSON object, got {type(event).__name__}")  # noqa: TRY004
    missing = [name for name in ("eventType", "orderId") if name not in event]
    if missing:
        raise ValueError(f"an order event without {', '.join(missing)}")
    return event


@dataclass
class Drained:
    """What `drain` did: each record's (offset, what the handler returned), and the
    record it could not get past, if any, with the handler's error."""

    results: list[tuple[int | None, object]]
    stuck_at: int | None = None
    error: str = ""


def drain(
    kafka: Endpoint, topic: str, group: str, handle: Callable[[Message], object]
) -> Drained:
    """Consume `topic` to its end as `group`, calling `handle` on each record and committing
    after it. A record whose handler raises is not committed, so a real consumer would get
    it again, and fail again, for ever: `drain` stops there and says so (`stuck_at`)."""
    consumer, drained = group_consumer(kafka, topic, group), Drained([])
    try:
        for record in records_until_end(consumer):
            try:
                drained.results.append((record.offset(), handle(record)))
            except NotImplementedError:
                raise  # a handler not written yet, not a record it fails on
            except Exception as error:  # noqa: BLE001 (the handler's failure is the result)
                drained.stuck_at, drained.error = record.offset(), f"{type(error).__name__}: {error}"
                return drained
            consumer.commit(message=record, asynchronous=False)
    finally:
        consumer.close()
    return drained


# -- consumer groups ---------------------------------------------------------------------


@dataclass
class RebalanceRun:
    """What two consumers of one group did, as the second joined: who handled which record,
    and the group's events (partitions assigned and revoked), in order."""

    handled: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def twice(self) -> list[tuple[int, int]]:
        """(partition, offset) of every record handled more than once."""
        seen: dict[tuple[int, int], int] = {}
        for row in self.handled:
            seen[row["partition"], row["offset"]] = seen.get((row["partition"], row["offset"]), 0) + 1
        return sorted(record for record, times in seen.items() if times > 1)


def rebalance_run(
    kafka: Endpoint, topic: str, commit_on_revoke: bool, timeout: float = 40.0
) -> RebalanceRun:
    """Consumer A of a fresh group handles every record already on `topic`, committing
    none yet (it would commit every 100, say); then consumer B joins the group. Both run,
    in turns, until each partition's owner has read it to its end. With
    `commit_on_revoke`, A commits what it has handled when the group takes its partitions
    away (its ``on_revoke``), as a consumer should."""
    group, run, started = new_group(kafka, "rebalance"), RebalanceRun(), time.monotonic()
    ends = end_offsets(kafka, topic)
    owners: dict[str, list[int]] = {}

    def member(name: str) -> Consumer:
        consumer = Consumer(consumer_config(kafka, group, **{"client.id": name, **READING,
                                                             "enable.partition.eof": False}))

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            owners[name] = [p.partition for p in partitions]
            run.events.append({"at": round(time.monotonic() - started, 2), "consumer": name,
                               "event": "assigned", "partitions": owners[name]})

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if commit_on_revoke:
                _commit_what_was_handled(consumer)
            owners[name] = []
            run.events.append({"at": round(time.monotonic() - started, 2), "consumer": name,
                               "event": "revoked", "partitions": [p.partition for p in partitions]})

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        return consumer

    def handle(name: str, consumer: Consumer) -> None:
        message = consumer.poll(0.05)
        if message is None:
            return
        if message.error() is not None:
            raise RuntimeError(f"consumer {name} of {topic}: {message.error()}")
        run.handled.append({"consumer": name, "partition": message.partition(),
                            "offset": message.offset()})

    def read_to_end(name: str, consumer: Consumer) -> bool:
        """Every partition it owns read to its end, or committed there (nothing to read)."""
        owned = [TopicPartition(topic, p) for p in owners.get(name, [])]
        positions = consumer.position(owned)
        if all(tp.offset >= ends[tp.partition] for tp in positions):
            return True
        done = consumer.committed(owned, timeout=REQUEST_SECONDS)
        return all(max(tp.offset, at.offset) >= ends[tp.partition]
                   for tp, at in zip(positions, done, strict=True))

    consumers = {"A": member("A")}
    try:
        while time.monotonic() - started < timeout:
            for name, consumer in consumers.items():
                handle(name, consumer)
            if "B" not in consumers and owners.get("A") and read_to_end("A", consumers["A"]):
                consumers["B"] = member("B")  # A holds all it handled, uncommitted
            elif "B" in consumers and all(owners.get(name) for name in consumers) and all(
                read_to_end(name, consumer) for name, consumer in consumers.items()
            ):
                return run
        raise TimeoutError(f"the group did not settle and read {topic} within {timeout} s: "
                           f"group events {run.events}")
    finally:
        for consumer in consumers.values():
            consumer.close()


def _commit_what_was_handled(consumer: Consumer) -> None:
    """Commit the consumer's positions; having handled nothing new is not an error."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as error:
        if error.args[0].code() != KafkaError._NO_OFFSET:
            raise


def lag_run(
    kafka: Endpoint, topic: str, steps: int = 12, produced_per_step: int = 5,
    producing_steps: int = 6, handled_per_step: int = 3,
    handle: Callable[[Message], object] = lambda message: None,
) -> list[dict[str, int]]:
    """A producer sends `produced_per_step` records a step for `producing_steps` steps; a
    consumer handles and commits at most `handled_per_step` a step. After each step the
    broker is asked for the group's lag. One row per step: produced, committed, lag."""
    group = new_group(kafka, "lagging")
    producer, consumer = producer_for(kafka), group_consumer(kafka, topic, group,
                                                             **{"enable.partition.eof": False})
    rows, produced, handled = [], 0, 0
    try:
        for step in range(1, steps + 1):
            if step <= producing_steps:
                for _ in range(produced_per_step):
                    send(producer, topic, {"n": produced}, key=f"key-{produced % 7}")
                    produced += 1
            for _ in range(handled_per_step):
                if handled == produced:
                    break
                message = _next_record(consumer)
                handle(message)
                consumer.commit(message=message, asynchronous=False)
                handled += 1
            rows.append({"step": step, "produced": produced, "handled": handled,
                         "lag": lag(kafka, topic, group)})
    finally:
        consumer.close()
    return rows


def _next_record(consumer: Consumer) -> Message:
    deadline = time.monotonic() + REQUEST_SECONDS
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None:
            return message
        if message is not None:
            raise RuntimeError(f"consuming: {message.error()}")
    raise TimeoutError(f"no record within {REQUEST_SECONDS} s, though one was sent")
