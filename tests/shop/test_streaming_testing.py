"""The event-stream helpers lesson 13 stands on (labkit.shop.testing.streaming), on a live broker.

Each helper is held to what the lesson says of it: records read to each partition's end,
from the offsets asked for; a consumer that stops at a poison record, committed up to it;
lag as the broker reports it; and a topic whose consumer a failing test left open, deleted
without taking its process down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from labkit import services
from labkit.services import Endpoint
from labkit.shop.testing.streaming import (
    an_order_event,
    drain,
    fresh_topic,
    group_consumer,
    header,
    lag,
    lag_run,
    new_group,
    parse_order_event,
    producer_for,
    read_to_end,
    records_until_end,
    send,
    send_order_event,
)


@pytest.fixture(scope="module")
def broker() -> Endpoint:
    return services.get("kafka")


def test_read_to_end_reads_each_partition_from_the_offsets_asked(broker: Endpoint) -> None:
    producer = producer_for(broker)
    with fresh_topic(broker, partitions=2) as topic:
        for number in range(6):
            send(producer, topic, {"n": number}, partition=number % 2)

        everything = [(r.partition(), r.offset()) for r in read_to_end(broker, topic)]
        from_offset_2 = [(r.partition(), r.offset()) for r in read_to_end(broker, topic, {0: 2})]

    assert everything == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert from_offset_2 == [(0, 2)]


def test_a_group_consumer_resumes_where_its_group_committed(broker: Endpoint) -> None:
    producer, group = producer_for(broker), new_group(broker, "resume")
    with fresh_topic(broker, partitions=1) as topic:
        for number in range(3):
            send(producer, topic, {"n": number})
        first = group_consumer(broker, topic, group)
        record = next(records_until_end(first))
        first.commit(message=record, asynchronous=False)
        first.close()

        second = group_consumer(broker, topic, group)
        resumed = [r.offset() for r in records_until_end(second)]
        second.close()

    assert resumed == [1, 2]


def test_drain_stops_at_the_record_its_handler_fails_on(broker: Endpoint) -> None:
    producer, group = producer_for(broker), new_group(broker, "drain")
    with fresh_topic(broker, partitions=1) as topic:
        for value in (an_order_event(), b"not an event", an_order_event()):
            send(producer, topic, value)

        drained = drain(broker, topic, group,
                        lambda record: parse_order_event(record.value())["orderId"])
        left = lag(broker, topic, group)

    assert (len(drained.results), drained.stuck_at) == (1, 1)
    assert drained.error.startswith("ValueError: not JSON")
    assert left == 2, "committed up to the poison record, not past it"


def test_drain_lets_an_unwritten_handler_say_so(broker: Endpoint) -> None:
    def stub(record: object) -> None:
        raise NotImplementedError("your code here")

    with fresh_topic(broker, partitions=1) as topic:
        send(producer_for(broker), topic, an_order_event())
        with pytest.raises(NotImplementedError):
            drain(broker, topic, new_group(broker, "stub"), stub)


def test_an_order_event_is_keyed_by_its_order_and_names_its_message(broker: Endpoint) -> None:
    event = an_order_event()
    with fresh_topic(broker, partitions=3) as topic:
        message_id = send_order_event(producer_for(broker), topic, event)
        (record,) = read_to_end(broker, topic)

    assert record.key() == event["orderId"].encode()
    assert (header(record, "message_id"), header(record, "type")) == (message_id, "ORDER_CREATED")
    assert header(record, "no-such-header") is None


def test_lag_run_reports_the_lag_the_consumer_left(broker: Endpoint) -> None:
    with fresh_topic(broker, partitions=3) as topic:
        rows = lag_run(broker, topic, steps=4, produced_per_step=3, producing_steps=2,
                       handled_per_step=2)

    assert [(r["produced"], r["handled"], r["lag"]) for r in rows] == [
        (3, 2, 1), (6, 4, 2), (6, 6, 0), (6, 6, 0)
    ]


def test_a_consumer_left_open_does_not_outlive_its_topic(broker: Endpoint) -> None:
    """A consumer still assigned a deleted topic crashed its process (librdkafka 2.16 on
    Tansu); a check that fails halfway leaves one open. In a process of its own, since
    the crash is a segmentation fault."""
    script = textwrap.dedent("""
        import time

        from labkit import services
        from labkit.shop.testing.streaming import (
            fresh_topic, group_consumer, new_group, producer_for, records_until_end, send,
        )

        kafka = services.get("kafka")
        producer, left_open = producer_for(kafka), []
        for _ in range(3):
            with fresh_topic(kafka, partitions=1) as topic:
                send(producer, topic, {"n": 1})
                consumer = group_consumer(kafka, topic, new_group(kafka))
                next(records_until_end(consumer))
                left_open.append(consumer)  # as a failing test's traceback keeps it
            time.sleep(1)  # its fetches go on, for a topic that is gone
        print("survived")
    """)
    env = {"LABKIT_KAFKA_BACKEND": "external", "LABKIT_KAFKA_URL": broker.url}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=120, env={**os.environ, **env})

    assert (done.returncode, done.stdout.strip()) == (0, "survived"), done.stderr[-2000:]

