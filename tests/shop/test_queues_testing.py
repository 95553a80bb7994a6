"""labkit.shop.testing.queues on a live RabbitMQ and PostgreSQL: what lessons 04a/04b lean on.

The fixtures are imported, as a lesson imports them; each helper is shown doing what its
docstring says, including the crash helpers that lessons use to tell good workers from
broken ones.
"""

from __future__ import annotations

import json

import pytest

from labkit.shop.testing.queues import (
    AckOnReceiptWorker,
    Crash,
    an_order,
    consumers,
    counter,
    crash_while_processing,
    demo_queues,
    is_recorded,
    make_worker,
    publish,
    ready,
    record_then_crash,
    running_worker,
    topology,
    worker_sessions,
)
from labkit.waiting import wait_until

# The fixtures are imported to be used; __all__ says so to linters.
__all__ = ["make_worker", "running_worker", "topology", "worker_sessions"]


def test_publish_ready_and_demo_queues_clean_up(amqp_channel):
    amqp_channel.confirm_delivery()
    with demo_queues(amqp_channel, "orders") as queues:
        publish(amqp_channel, queues["orders"], {"order_id": "x"})
        assert ready(amqp_channel, queues["orders"]) == 1
        assert consumers(amqp_channel, queues["orders"]) == 0
        _, properties, body = amqp_channel.basic_get(queues["orders"], auto_ack=True)
        assert json.loads(body) == {"order_id": "x"}
        assert properties.delivery_mode == 2
    probe = amqp_channel.connection.channel()
    with pytest.raises(Exception, match="NOT_FOUND"):
        ready(probe, queues["orders"])


@pytest.mark.parametrize(("auto_ack", "after"), [(True, 0), (False, 1)], ids=["auto", "manual"])
def test_a_killed_consumer_loses_the_order_only_with_auto_ack(
    amqp_channel, amqp_queue, rabbitmq, auto_ack, after
):
    amqp_channel.confirm_delivery()
    counts = crash_while_processing(amqp_channel, rabbitmq.url, amqp_queue(), auto_ack=auto_ack)
    assert counts == {"published": 1, "being processed": 0, "after the crash": after}


def test_the_worker_fixtures_process_an_order_end_to_end(
    amqp_channel, topology, running_worker, worker_sessions
):
    before = counter(worker_sessions, "orders_processed")
    order = an_order()
    publish(amqp_channel, topology.orders, order)
    wait_until(lambda: is_recorded(worker_sessions, order["order_id"]), timeout=5)
    assert counter(worker_sessions, "orders_processed") >= before + 1


def test_a_crash_in_the_transaction_leaves_the_order_for_the_next_worker(
    amqp_channel, topology, make_worker, worker_sessions
):
    order = an_order()
    publish(amqp_channel, topology.orders, order)
    crashing = make_worker(apply=record_then_crash)
    with pytest.raises(Crash):
        crashing.process_one(timeout=3)
    crashing.close()
    assert not is_recorded(worker_sessions, order["order_id"])
    assert make_worker().process_one(timeout=3).status == "processed"


def test_the_ack_on_receipt_worker_loses_an_order_in_the_same_crash(
    amqp_channel, topology, make_worker, worker_sessions
):
    order = an_order()
    publish(amqp_channel, topology.orders, order)
    crashing = make_worker(AckOnReceiptWorker, apply=record_then_crash)
    with pytest.raises(Crash):
        crashing.process_one(timeout=3)
    crashing.close()
    assert not is_recorded(worker_sessions, order["order_id"])
    assert make_worker(AckOnReceiptWorker).process_one(timeout=0.5) is None
