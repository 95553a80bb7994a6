"""POST /api/users and POST /api/tokens, checked in every system they touch."""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack

import httpx
import pytest
from sqlalchemy import select, text

from labkit.services import free_port
from labkit.shop.app import UNAVAILABLE_BODY, SessionDep, ShopServer
from labkit.shop.data import OutboxEvent, User
from labkit.shop.infra import publish_now, user_key
from labkit.shop.testing import auth_header, client_for, database_outage, queued_json
from labkit.shop.testing.outages import frozen
from labkit.shop.testing.routes import replace_route

NEW_USER = {"email": "newuser@example.com", "name": "New User", "password": "SecurePass123!"}


def test_sign_up_stores_caches_and_queues_a_welcome_email(
    shop_client, shop_session, redis_client, amqp_channel, amqp_queue
):
    queue = amqp_queue("email-queue")

    response = shop_client.post("/api/users", json=NEW_USER)

    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == {"id": body["id"], "email": NEW_USER["email"], "name": NEW_USER["name"]}
    assert "password" not in response.text and "hash" not in response.text

    row = shop_session.scalars(select(User).where(User.email == NEW_USER["email"])).one()
    assert str(row.id) == body["id"]
    assert row.password_hash != NEW_USER["password"]
    assert row.password_hash.startswith("$argon2id$")
    assert row.version == 1 and row.is_admin is False

    assert json.loads(redis_client.get(user_key(body["id"]))) == body

    (message,) = queued_json(amqp_channel, queue)
    assert message["type"] == "welcome_email" and message["to"] == NEW_USER["email"]
    event = shop_session.scalars(select(OutboxEvent)).one()
    assert event.event_type == "welcome_email" and event.published_at is not None


def test_welcome_email_is_persistent_and_carries_the_outbox_id(
    shop_client, shop_session, amqp_channel, amqp_queue
):
    queue = amqp_queue("email-queue")
    shop_client.post("/api/users", json=NEW_USER)

    method, properties, _ = amqp_channel.basic_get(queue, auto_ack=True)

    assert method is not None
    assert properties.delivery_mode == 2  # survives a broker restart
    event = shop_session.scalars(select(OutboxEvent)).one()
    assert properties.message_id == str(event.id)  # what consumers deduplicate on


@pytest.mark.parametrize("email", ["newuser@example.com", "NewUser@Example.com"])
def test_duplicate_email_is_409_and_changes_nothing(
    shop_client, shop_session, redis_client, amqp_channel, amqp_queue, email
):
    queue = amqp_queue("email-queue")
    first = shop_client.post("/api/users", json=NEW_USER).json()
    queued_json(amqp_channel, queue)
    redis_client.flushdb()

    response = shop_client.post("/api/users", json={**NEW_USER, "email": email, "name": "Other"})

    assert response.status_code == 409
    assert response.json()["error"] == "EMAIL_TAKEN"
    assert [u.name for u in shop_session.scalars(select(User))] == [first["name"]]
    assert redis_client.keys("*") == []
    assert queued_json(amqp_channel, queue, expect=0, timeout=0.3) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No Email", "password": "SecurePass123!"}, "email"),
        ({**NEW_USER, "email": "not-an-email"}, "email"),
        ({**NEW_USER, "name": ""}, "name"),
        ({**NEW_USER, "name": "x" * 101}, "name"),
        ({**NEW_USER, "name": "nul\x00byte"}, "name"),
        ({**NEW_USER, "password": "short"}, "password"),
        ({**NEW_USER, "password": 12345678}, "password"),
        ({**NEW_USER, "is_admin": True}, "is_admin"),
    ],
)
def test_invalid_sign_up_is_422_naming_the_field(shop_client, shop_session, body, field):
    response = shop_client.post("/api/users", json=body)

    assert response.status_code == 422
    error = response.json()
    assert error["error"] == "VALIDATION_FAILED"
    assert field in {e["loc"][-1] for e in error["detail"]}
    assert "SecurePass123!" not in response.text  # the password is never echoed back
    assert shop_session.scalars(select(User)).all() == []


def test_malformed_json_is_422(shop_client):
    response = shop_client.post(
        "/api/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422


def test_database_outage_is_503_with_nothing_half_written_then_recovers(
    shop_client, shop_settings, shop_session, redis_client, amqp_channel, amqp_queue
):
    queue = amqp_queue("email-queue")
    shop_client.get("/health")  # a warm pool: the outage must be noticed, not dodged
    # The app's own deadlines, plus scheduling on a loaded 2-core machine.
    bound = shop_settings.db_io_timeout + shop_settings.db_connect_timeout + 5.0

    started = time.monotonic()
    with database_outage(shop_settings.database_url):
        response = shop_client.post("/api/users", json=NEW_USER)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_BODY
    assert response.headers["Retry-After"]
    assert elapsed < bound, f"a frozen database must fail within {bound:g} s, took {elapsed:.1f} s"
    assert redis_client.keys("*") == []
    assert queued_json(amqp_channel, queue, expect=0, timeout=0.3) == []
    assert shop_session.scalars(select(User)).all() == []

    recovered = shop_client.post("/api/users", json=NEW_USER)
    assert recovered.status_code == 201
    assert queued_json(amqp_channel, queue)[0]["to"] == NEW_USER["email"]


def test_broker_down_still_signs_up_and_the_email_waits_in_the_outbox(
    make_shop_app, shop_app, shop_session, amqp_channel, amqp_queue
):
    queue = amqp_queue("email-queue")
    nothing_listens = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    app = make_shop_app(amqp_url=nothing_listens)

    response = client_for(app).post("/api/users", json=NEW_USER)

    assert response.status_code == 201
    event = shop_session.scalars(select(OutboxEvent)).one()
    assert event.published_at is None and event.payload["to"] == NEW_USER["email"]
    assert queued_json(amqp_channel, queue, expect=0, timeout=0.3) == []

    # What the outbox relay does once the broker is back: the email is not lost.
    shop = shop_app.state.shop
    assert publish_now(shop.sessions, shop.publisher, event.id) is True
    assert queued_json(amqp_channel, queue)[0]["to"] == NEW_USER["email"]


def test_login_gives_a_token_that_opens_the_profile(shop_client):
    user = shop_client.post("/api/users", json=NEW_USER).json()

    response = shop_client.post(
        "/api/tokens", json={"email": NEW_USER["email"], "password": NEW_USER["password"]}
    )

    assert response.status_code == 200
    token = response.json()["accessToken"]
    profile = shop_client.get(
        f"/api/users/{user['id']}/profile", headers={"Authorization": f"Bearer {token}"}
    )
    assert profile.status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": NEW_USER["email"], "password": "WrongPass123!"},
        {"email": "nobody@example.com", "password": NEW_USER["password"]},
    ],
)
def test_wrong_credentials_are_401_without_saying_which_part(shop_client, credentials):
    shop_client.post("/api/users", json=NEW_USER)

    response = shop_client.post("/api/tokens", json=credentials)

    assert response.status_code == 401
    assert response.json()["message"] == "wrong email or password"
    assert "accessToken" not in response.json()


def test_failed_logins_are_limited_per_email_across_workers(make_shop_app, shop_clean):
    """Two apps stand for two workers on one Redis: their failures add up, then 429."""
    first, second = (
        client_for(make_shop_app(login_max_failures=3, login_failure_window_seconds=600))
        for _ in range(2)
    )
    other = {**NEW_USER, "email": "other@example.com"}
    for user in (NEW_USER, other):
        assert first.post("/api/users", json=user).status_code == 201
    right = {"email": NEW_USER["email"], "password": NEW_USER["password"]}
    wrong = {**right, "password": "WrongPass123!"}

    # Two failures, then the right password: the count starts again.
    assert [c.post("/api/tokens", json=wrong).status_code for c in (first, second)] == [401, 401]
    assert second.post("/api/tokens", json=right).status_code == 200
    failures = [
        c.post("/api/tokens", json={**wrong, "email": NEW_USER["email"].upper()}).status_code
        for c in (first, second, first)
    ]
    locked = second.post("/api/tokens", json=right)  # the right password, too late
    others = first.post("/api/tokens", json={**right, "email": other["email"]})

    assert failures == [401, 401, 401]
    assert locked.status_code == 429
    assert locked.json()["error"] == "TOO_MANY_LOGINS"
    assert 0 < int(locked.headers["Retry-After"]) <= 600
    assert locked.json()["retryAfter"] == int(locked.headers["Retry-After"])
    assert "accessToken" not in locked.json()
    assert others.status_code == 200  # per account: another email is not locked


def test_failed_logins_are_limited_per_client_across_emails(make_shop_app, shop_clean):
    """One client trying one password against many emails: each email fails once, so
    only the client's count stops it. Another client is not locked, and the attacker's
    own successful login does not clear the count."""
    app = make_shop_app(
        login_max_failures=10, login_max_failures_per_client=3, login_failure_window_seconds=600
    )
    attacker = client_for(app, client=("203.0.113.7", 50001))
    neighbour = client_for(app, client=("203.0.113.8", 50002))
    assert attacker.post("/api/users", json=NEW_USER).status_code == 201
    right = {"email": NEW_USER["email"], "password": NEW_USER["password"]}
    guess = {"password": "Summer2024!"}

    failures = [
        attacker.post("/api/tokens", json={**guess, "email": f"user{n}@example.com"}).status_code
        for n in range(2)
    ]
    own_login = attacker.post("/api/tokens", json=right)  # must not wipe the count
    failures.append(
        attacker.post("/api/tokens", json={**guess, "email": "user2@example.com"}).status_code
    )
    refused = attacker.post("/api/tokens", json={**guess, "email": "user3@example.com"})
    locked = attacker.post("/api/tokens", json=right)
    elsewhere = neighbour.post("/api/tokens", json=right)

    assert failures == [401, 401, 401]
    assert own_login.status_code == 200
    for response in (refused, locked):
        assert response.status_code == 429, response.text
        body = response.json()
        assert body["error"] == "TOO_MANY_LOGINS" and body["limitedBy"] == "client"
        assert "3 failed logins for this client" in body["message"]
        assert 0 < int(response.headers["Retry-After"]) <= 600
        assert body["retryAfter"] == int(response.headers["Retry-After"])
    assert elsewhere.status_code == 200, elsewhere.text


def test_the_client_is_the_peer_not_a_forwarded_for_header(make_shop_app, shop_clean):
    """Over a real socket: a client that writes a new X-Forwarded-For on every try is
    still one client. uvicorn's default trusts that header from 127.0.0.1, where the
    attacker sits here; the shop's servers trust it only from `forwarded_allow_ips`."""
    app = make_shop_app(login_max_failures_per_client=3, login_failure_window_seconds=600)
    guess = {"email": "victim@example.com", "password": "Summer2024!"}

    with ShopServer(app) as server:
        codes = [
            httpx.post(
                f"{server.url}/api/tokens",
                json={**guess, "email": f"user{n}@example.com"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(5)
        ]

    assert codes == [401, 401, 401, 429, 429]


def test_a_named_proxy_s_forwarded_for_is_the_client(make_shop_app, shop_clean):
    """Behind a reverse proxy every request comes from the proxy: named in
    ``forwarded_allow_ips``, its X-Forwarded-For tells the clients apart."""
    app = make_shop_app(
        login_max_failures_per_client=3,
        login_failure_window_seconds=600,
        forwarded_allow_ips="127.0.0.1",
    )
    guess = {"email": "victim@example.com", "password": "Summer2024!"}

    with ShopServer(app) as server:
        codes = [
            httpx.post(
                f"{server.url}/api/tokens",
                json={**guess, "email": f"user{n}@example.com"},
                headers={"X-Forwarded-For": f"198.51.100.{n % 2}"},
            ).status_code
            for n in range(8)
        ]

    # Two clients behind the proxy, four tries each: each is locked after its third.
    assert codes == [401] * 6 + [429, 429]


def test_login_goes_on_uncounted_when_redis_is_down(make_shop_app, shop_clean):
    """The limit is a brake, not the lock: a Redis outage must not lock everyone out."""
    client = client_for(make_shop_app(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert client.post("/api/users", json=NEW_USER).status_code == 201
    right = {"email": NEW_USER["email"], "password": NEW_USER["password"]}

    wrong = client.post("/api/tokens", json={**right, "password": "WrongPass123!"})
    response = client.post("/api/tokens", json=right)

    assert wrong.status_code == 401
    assert response.status_code == 200


def test_unknown_user_id_in_path_is_404_and_malformed_is_422(shop_client, shop_settings):
    headers = auth_header(shop_settings, uuid.uuid4())
    assert shop_client.get(f"/api/users/{uuid.uuid4()}/profile", headers=headers).status_code == 404
    assert shop_client.get("/api/users/not-a-uuid/profile", headers=headers).status_code == 422


def test_a_database_lost_after_the_answer_leaves_the_answer_alone(make_shop_app, shop_clean):
    """The database freezes between a handler's last query and the session's close: the
    close's rollback fails after the response has started. The client keeps its 200 (not
    Starlette's "response already started" error) and the next request gets a fresh
    connection. A fresh app: its pool, not the shared one, holds the dropped connection."""
    outage = ExitStack()  # frozen in the handler, thawed by the test

    def answer_then_outage(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))  # a transaction the close will roll back
        outage.enter_context(frozen("postgres"))
        return {"status": "ok"}

    app = make_shop_app()
    replace_route(app, "GET", "/health-then-outage", answer_then_outage)
    client = client_for(app)
    with outage:
        response = client.get("/health-then-outage")

    assert response.status_code == 200
    assert client.get("/health").status_code == 200


def test_publish_now_leaves_an_event_a_relay_holds_to_the_relay_without_waiting(
    make_shop_app, shop_app, shop_session, amqp_channel, amqp_queue, caplog
):
    queue = amqp_queue("email-queue")
    broker_down = make_shop_app(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    assert client_for(broker_down).post("/api/users", json=NEW_USER).status_code == 201
    event = shop_session.scalars(select(OutboxEvent)).one()
    shop = shop_app.state.shop
    caplog.clear()

    with shop.sessions() as relay, relay.begin():
        relay.scalars(select(OutboxEvent).with_for_update()).all()  # a relay's pass holds it
        assert publish_now(shop.sessions, shop.publisher, event.id) is False
    # Skipped, not waited for: a wait would have ended in the shop's lock_timeout, an
    # error that publish_now logs before leaving the event to the relay.
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []

    assert publish_now(shop.sessions, shop.publisher, event.id) is True
    assert publish_now(shop.sessions, shop.publisher, event.id) is False, "published once"
    assert [m["to"] for m in queued_json(amqp_channel, queue)] == [NEW_USER["email"]]
