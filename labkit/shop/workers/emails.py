"""The welcome email consumer: one email per sign-up, however often the message comes.

    >>> consumer = WelcomeEmailConsumer(sessions, send=mailer.send)
    >>> consumer.handle_next(channel, settings.email_queue)   # → "applied" | "duplicate" | None

A sign-up writes a ``welcome_email`` outbox row; `publish_now` or the outbox relay
delivers it to ``settings.email_queue`` with the row id as AMQP ``message_id``, at
least once (a relay that crashed after publishing, or lost the broker's confirm in an
outage, sends it again). The consumer records ``welcome-email:{message_id}`` in
``processed_messages`` and sends in that same transaction: a redelivery finds the
record and sends nothing, and a send that fails rolls the record back, so the
message, left unacked, is tried again.

What no transaction covers is the mail server itself: a consumer that dies after the
send and before the commit sends that one email again on redelivery. That window is a
crash between two statements, not every redelivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.workers.outbox import Handled, IdempotentConsumer, claim_message


@dataclass(frozen=True)
class WelcomeEmail:
    to: str
    name: str

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> WelcomeEmail:
        """The email a ``welcome_email`` event asks for; ValueError for anything else."""
        if event.get("type") != "welcome_email":
            raise ValueError(f"expected a welcome_email event, got type {event.get('type')!r}")
        to, name = event.get("to"), event.get("name")
        if not isinstance(to, str) or not to or not isinstance(name, str):
            raise ValueError(
                "a welcome_email event needs string fields 'to' and 'name', "
                f"got to={to!r}, name={name!r}"
            )
        return cls(to=to, name=name)


class WelcomeEmailConsumer(IdempotentConsumer):
    """Sends each sign-up's welcome email once; see the module docstring."""

    name = "welcome-email"

    def __init__(
        self, session_factory: sessionmaker[Session], send: Callable[[WelcomeEmail], object]
    ) -> None:
        self.session_factory = session_factory
        self.send = send

    def apply(self, message_id: str, event: dict[str, Any]) -> Handled:
        """Send the email `event` asks for, unless `message_id` was sent before."""
        email = WelcomeEmail.from_event(event)
        with self.session_factory() as session, session.begin():
            if not claim_message(session, self.name, message_id):
                return "duplicate"
            # Inside the transaction: a send that raises leaves no record behind.
            self.send(email)
        return "applied"
