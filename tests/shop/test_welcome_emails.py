"""The welcome email consumer on live PostgreSQL and RabbitMQ: a redelivered message
(same message_id) sends no second email, and a send that fails sends on redelivery."""

from __future__ import annotations

from collections.abc import Callable

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.testing.queues import publish, ready
from labkit.shop.workers import WelcomeEmail, WelcomeEmailConsumer

WELCOME = {"type": "welcome_email", "to": "ada@example.com", "name": "Ada"}


class MailServerDown(RuntimeError):
    pass


@pytest.fixture
def sessions(shop_app, shop_clean) -> sessionmaker[Session]:
    return shop_app.state.shop.sessions


@pytest.fixture
def channel(amqp_connection: pika.BlockingConnection) -> BlockingChannel:
    return amqp_connection.channel()


def test_a_redelivered_welcome_email_is_sent_once(
    sessions: sessionmaker[Session], channel: BlockingChannel, amqp_queue: Callable[..., str]
) -> None:
    queue = amqp_queue()
    sent: list[WelcomeEmail] = []
    consumer = WelcomeEmailConsumer(sessions, send=sent.append)
    for _ in range(2):  # what the relay sends again after a crash before its commit
        publish(channel, queue, WELCOME, message_id="outbox-row-1")

    outcomes = [consumer.handle_next(channel, queue) for _ in range(2)]

    assert outcomes == ["applied", "duplicate"]
    assert sent == [WelcomeEmail(to="ada@example.com", name="Ada")]
    assert ready(channel, queue) == 0, "both copies acked"


def test_a_failed_send_leaves_no_record_and_the_redelivery_sends(
    sessions: sessionmaker[Session],
    amqp_connection: pika.BlockingConnection,
    amqp_queue: Callable[..., str],
) -> None:
    queue = amqp_queue()
    attempts: list[str] = []
    sent: list[WelcomeEmail] = []

    def send_or_fail(email: WelcomeEmail) -> None:
        attempts.append(email.to)
        if len(attempts) == 1:
            raise MailServerDown("SMTP 421")
        sent.append(email)

    consumer = WelcomeEmailConsumer(sessions, send=send_or_fail)
    first = amqp_connection.channel()
    publish(first, queue, WELCOME, message_id="outbox-row-2")

    with pytest.raises(MailServerDown):
        consumer.handle_next(first, queue)
    first.close()  # the unacked message goes back to the queue
    again = amqp_connection.channel()

    assert consumer.handle_next(again, queue) == "applied"
    assert attempts == ["ada@example.com"] * 2
    assert sent == [WelcomeEmail(to="ada@example.com", name="Ada")]


def test_a_message_that_is_no_welcome_email_is_refused_saying_what_came(
    sessions: sessionmaker[Session],
) -> None:
    consumer = WelcomeEmailConsumer(sessions, send=lambda email: None)

    with pytest.raises(ValueError, match="expected a welcome_email event, got type 'PING'"):
        consumer.apply("m-1", {"type": "PING"})
    with pytest.raises(ValueError, match="needs string fields 'to' and 'name', got to=None"):
        consumer.apply("m-2", {"type": "welcome_email", "name": "Ada"})
