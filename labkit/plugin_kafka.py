"""pytest fixtures for Kafka on labkit's `kafka` service (``pip install 'labkit[kafka]'``).

kafka                  the broker's Endpoint (started once per process; ``.bootstrap_servers``)
kafka_topic            a fresh, uniquely named topic for this test (3 partitions, or
                       ``@pytest.mark.kafka_partitions(n)``), deleted after it
kafka_topic_factory    makes more of them: ``kafka_topic_factory("dead-letters", partitions=1)``
kafka_producer         a confluent_kafka.Producer (labkit.kafka.CheckedProducer) whose
                       ``flush()`` raises DeliveryFailed, naming the broker, when a message
                       was not delivered within 10 s
kafka_consumer         a confluent_kafka.Consumer in a fresh group, tuned to get its first
                       message in seconds, reading from the earliest offset; closed after,
                       and before the test's topics are deleted

Unique names keep tests independent of each other and of their order, even on a broker
shared by several runs. confluent_kafka is imported where these fixtures run, never when
pytest loads the plugin: a project without Kafka does not need it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from labkit import services
from labkit.services import Endpoint

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from labkit.kafka import CheckedProducer

PARTITIONS_MARK = "kafka_partitions"
# The consumers the `kafka_consumer` fixture opened for a test. pytest tears fixtures down
# last-listed first, so a `kafka_topic` listed after `kafka_consumer` is deleted while the
# consumer still fetches from it, and librdkafka (2.16, on Tansu) then crashes the whole
# process (SIGSEGV). The topic's teardown closes these first, whatever the order.
CONSUMERS = pytest.StashKey[list["Consumer"]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PARTITIONS_MARK}(n): the kafka_topic fixture's partition count (default 3)"
    )


@pytest.fixture(scope="session")
def kafka() -> Endpoint:
    """The Kafka broker's endpoint (started on first use, reused for the whole process)."""
    return services.get("kafka")


def _label(request: pytest.FixtureRequest) -> str:
    """The test's name, as far as a topic name may carry it (it says whose topic it is)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60] or "topic"


@pytest.fixture
def kafka_topic_factory(kafka: Endpoint,
                        request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make(label="…", partitions=3) -> name``: new topics for this test, deleted after it.

    The name is the label (the test's name by default) and a random tail, so no other
    test's topic can have it; a label Kafka would refuse is an InvalidTopicName error.
    """
    from labkit import kafka as kafka_helpers

    made: list[str] = []

    def make(label: str | None = None, partitions: int = kafka_helpers.DEFAULT_PARTITIONS) -> str:
        name = kafka_helpers.unique_topic_name(kafka, label or _label(request))
        made.append(kafka_helpers.create_topic(kafka, name, partitions))
        return name

    yield make
    for consumer in request.node.stash.get(CONSUMERS, []):
        consumer.close()  # closing a closed consumer does nothing
    for name in made:
        kafka_helpers.delete_topic(kafka, name)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str], request: pytest.FixtureRequest) -> str:
    """A new topic for this test (3 partitions; ``@pytest.mark.kafka_partitions(n)``)."""
    marker = request.node.get_closest_marker(PARTITIONS_MARK)
    if marker is None:
        return kafka_topic_factory()
    return kafka_topic_factory(partitions=int(marker.args[0]))


@pytest.fixture
def kafka_producer(kafka: Endpoint) -> Iterator[CheckedProducer]:
    """A producer on the broker; what it still holds is delivered (or reported) after the test."""
    from labkit.kafka import CheckedProducer

    producer = CheckedProducer(kafka)
    yield producer
    producer.flush()


@pytest.fixture
def kafka_consumer(kafka: Endpoint, request: pytest.FixtureRequest) -> Iterator[Consumer]:
    """A consumer in a new group of its own (subscribe it to your topic), closed after
    (and before this test's topics are deleted, in whichever order they were listed)."""
    from confluent_kafka import Consumer

    from labkit.kafka import consumer_config

    consumer = Consumer(consumer_config(kafka))
    request.node.stash.setdefault(CONSUMERS, []).append(consumer)
    yield consumer
    consumer.close()
