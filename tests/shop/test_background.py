"""The shop's background jobs: periodic passes on threads of their own, failures logged
and retried with a bounded backoff, and the outbox relay run by whatever serves the shop
(the app's lifespan, ShopServer) without anyone calling `relay_once`."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from pika.adapters.blocking_connection import BlockingChannel

from labkit.shop.app import ShopServer
from labkit.shop.infra import record_event
from labkit.shop.testing import client_for, database_outage, queued_json
from labkit.shop.workers import BackgroundJobs, PeriodicJob, unpublished_count
from labkit.waiting import wait_until

# -- BackgroundJobs ----------------------------------------------------------------------


def test_a_job_runs_every_interval_on_its_own_thread_until_stopped() -> None:
    threads: list[str] = []
    jobs = BackgroundJobs([PeriodicJob("tick", 0.01, lambda: threads.append(_thread()))])

    jobs.start()
    jobs.start()  # idempotent: still one thread for the job
    wait_until(lambda: len(threads) >= 3, timeout=10, message="three passes")
    jobs.stop()

    assert set(threads) == {"shop-tick"}
    assert jobs.running == []
    assert jobs.stats["tick"].passes >= 3


def test_a_failing_pass_is_logged_and_retried_later_and_later_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    began: list[float] = []

    def flaky() -> str:
        began.append(time.monotonic())
        if len(began) <= 3:
            raise ConnectionError(f"broker down (pass {len(began)})")
        return "published"

    jobs = BackgroundJobs([PeriodicJob("relay", 0.02, flaky)], max_backoff=0.06)
    with caplog.at_level(logging.WARNING, logger="labkit.shop.workers.background"):
        jobs.start()
        stats = jobs.stats["relay"]
        wait_until(lambda: stats.last_result == "published", timeout=10, message="recovery")
        jobs.stop()

    assert (stats.failures, stats.failures_in_a_row) == (3, 0)
    assert stats.last_error == "ConnectionError: broker down (pass 3)"
    gaps = [later - earlier for earlier, later in itertools.pairwise(began)]
    # Waits after failures 1, 2, 3: the interval doubled each time, capped at max_backoff.
    assert gaps[0] >= 0.04 and gaps[1] >= 0.06 and gaps[2] >= 0.06, gaps
    logged = [record.getMessage() for record in caplog.records]
    assert any("relay failed (1 in a row)" in line and "broker down" in line for line in logged)
    assert any("relay works again after 3 failed passes" in line for line in logged)
    assert not any("(2 in a row)" in line for line in logged), "one warning per outage"


def test_stop_closes_each_job_on_its_own_thread() -> None:
    closed_on: list[str] = []
    jobs = BackgroundJobs(
        [PeriodicJob("relay", 0.01, lambda: None, lambda: closed_on.append(_thread()))]
    )

    jobs.start()
    wait_until(lambda: jobs.stats["relay"].passes, timeout=10, message="a pass")
    jobs.stop()

    assert closed_on == ["shop-relay"]


def test_a_job_with_interval_zero_is_off_and_a_negative_one_is_refused() -> None:
    jobs = BackgroundJobs([PeriodicJob("relay", 0, lambda: None)]).start()
    assert jobs.running == []
    jobs.stop()

    with pytest.raises(ValueError, match=r"interval -1 s: give seconds between passes"):
        PeriodicJob("relay", -1, lambda: None)


def test_one_more_job_is_one_more_line() -> None:
    ran: set[str] = set()
    jobs = BackgroundJobs([PeriodicJob("outbox-relay", 0.01, lambda: ran.add("relay"))])
    jobs.add(PeriodicJob("order-reconciler", 0.01, lambda: ran.add("reconciler")))

    jobs.start()
    wait_until(lambda: ran == {"relay", "reconciler"}, timeout=10, message="both jobs")
    jobs.stop()

    with pytest.raises(ValueError, match="already registered"):
        jobs.add(PeriodicJob("outbox-relay", 1, lambda: None))


def _thread() -> str:
    return threading.current_thread().name


# -- the serving shop runs its relay -------------------------------------------------------


def write_event(app: FastAPI, queue: str) -> str:
    """An outbox row nobody publishes inline: only a relay can deliver it."""
    shop = app.state.shop
    with shop.sessions() as session, session.begin():
        event = record_event(
            session,
            aggregate="test",
            aggregate_id=uuid.uuid4(),
            event_type="PING",
            destination=queue,
            payload={"ping": queue},
        )
    return str(event.id)


@pytest.fixture
def relaying_app(make_shop_app: Callable[..., FastAPI], shop_clean: None) -> FastAPI:
    return make_shop_app(outbox_relay_interval=0.1)


def test_shop_server_relays_what_nobody_published(
    relaying_app: FastAPI, amqp_channel: BlockingChannel, amqp_queue: Callable[..., str]
) -> None:
    queue = amqp_queue()
    write_event(relaying_app, queue)

    with ShopServer(relaying_app):
        delivered = queued_json(amqp_channel, queue, timeout=30)

    assert delivered == [{"ping": queue}]
    assert relaying_app.state.shop.jobs.running == [], "stopped with the server"


def test_shop_server_without_background_jobs_relays_nothing(
    relaying_app: FastAPI, amqp_channel: BlockingChannel, amqp_queue: Callable[..., str]
) -> None:
    queue = amqp_queue()
    write_event(relaying_app, queue)

    with ShopServer(relaying_app, background=False):
        assert queued_json(amqp_channel, queue, expect=0, timeout=1.0) == []


def test_the_apps_lifespan_runs_the_relay_while_it_serves(
    relaying_app: FastAPI, amqp_channel: BlockingChannel, amqp_queue: Callable[..., str]
) -> None:
    queue = amqp_queue()
    write_event(relaying_app, queue)
    jobs = relaying_app.state.shop.jobs

    with client_for(relaying_app):  # `with TestClient`: startup and shutdown, as uvicorn runs them
        assert sorted(jobs.running) == ["amqp-keepalive", "order-reconciler", "outbox-relay"]
        delivered = queued_json(amqp_channel, queue, timeout=30)

    assert delivered == [{"ping": queue}]
    assert jobs.running == []


def test_a_relay_interval_of_zero_runs_no_relay(
    make_shop_app: Callable[..., FastAPI], shop_clean: None
) -> None:
    app: Any = make_shop_app(outbox_relay_interval=0)
    with ShopServer(app):
        assert "outbox-relay" not in app.state.shop.jobs.running
        assert "amqp-keepalive" in app.state.shop.jobs.running


def test_the_relay_survives_a_database_outage_and_delivers_after_it(
    relaying_app: FastAPI, amqp_channel: BlockingChannel, amqp_queue: Callable[..., str]
) -> None:
    queue = amqp_queue()
    stats = relaying_app.state.shop.jobs.stats["outbox-relay"]

    with ShopServer(relaying_app):
        with database_outage(relaying_app.state.shop.settings.database_url):
            wait_until(lambda: stats.failures, timeout=60, message="the relay to meet the outage")
        write_event(relaying_app, queue)
        delivered = queued_json(amqp_channel, queue, timeout=60)
        alive = relaying_app.state.shop.jobs.running

    assert delivered == [{"ping": queue}]
    assert "outbox-relay" in alive, "a database error is logged, never fatal"
    assert stats.last_error is not None


def test_two_shops_relaying_at_once_send_each_event_once(
    make_shop_app: Callable[..., FastAPI],
    shop_clean: None,
    amqp_channel: BlockingChannel,
    amqp_queue: Callable[..., str],
) -> None:
    queue = amqp_queue()
    apps = [make_shop_app(outbox_relay_interval=0.05, outbox_relay_batch_size=20) for _ in range(2)]
    events = 300

    with ShopServer(apps[0]), ShopServer(apps[1]):  # both relays polling, then the events
        with apps[0].state.shop.sessions() as session, session.begin():
            for number in range(events):
                record_event(
                    session,
                    aggregate="test",
                    aggregate_id=uuid.uuid4(),
                    event_type="PING",
                    destination=queue,
                    payload={"n": number},
                )
        wait_until(
            lambda: unpublished_count(apps[0].state.shop.sessions) == 0,
            timeout=120,
            message="both relays to publish every event",
        )
    message_ids = []
    while (got := amqp_channel.basic_get(queue, auto_ack=True))[0] is not None:
        message_ids.append(got[1].message_id)

    assert len(message_ids) == events
    assert len(set(message_ids)) == events, "an event was published twice"


def test_a_job_still_in_its_pass_after_stop_is_not_started_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    in_pass: list[str] = []

    def stuck() -> None:  # a publish waiting on a frozen broker
        in_pass.append(_thread())
        release.wait(30)

    jobs = BackgroundJobs([PeriodicJob("relay", 0.01, stuck)])
    jobs.start()
    wait_until(lambda: in_pass, timeout=10, message="the pass to begin")
    with caplog.at_level(logging.WARNING, logger="labkit.shop.workers.background"):
        jobs.stop(timeout=0.1)
        jobs.start()
    release.set()

    assert in_pass == ["shop-relay"], "one thread in the job at a time"
    assert "still finishing a pass" in caplog.text
    wait_until(lambda: not jobs.running, timeout=10, message="the old thread to end")
    jobs.start()
    wait_until(lambda: len(in_pass) == 2, timeout=10, message="a restart once it ended")
    jobs.stop()
