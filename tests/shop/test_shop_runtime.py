"""The shop as it runs: settings, a real socket, the fakes, and a cache that may fail."""

from __future__ import annotations

import secrets

import httpx
import jwt
import pytest
from pydantic import ValidationError

from labkit.services import free_port
from labkit.shop import ShopSettings
from labkit.shop.app import ShopServer
from labkit.shop.testing import (
    FakeDownstream,
    add_user,
    auth_header,
    client_for,
    settings_from_services,
)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_SHOP_DATABASE_URL", "postgresql+psycopg://u:p@db.example:5432/shop")
    monkeypatch.setenv("LABKIT_SHOP_REDIS_URL", "redis://cache.example:6379/0")
    monkeypatch.setenv("LABKIT_SHOP_AMQP_URL", "amqp://mq.example:5672/%2F")
    monkeypatch.setenv("LABKIT_SHOP_DB_STATEMENT_TIMEOUT", "0.5")

    settings = settings_from_services()  # everything given: no service is started

    assert settings.database_url.endswith("@db.example:5432/shop")
    assert settings.db_statement_timeout == 0.5
    assert settings.password_hash_profile == "owasp"  # the cheap profile is opt-in


def test_settings_refuse_what_they_do_not_know():
    with pytest.raises(ValueError, match="jwt_secrett"):
        ShopSettings(database_url="x", redis_url="x", amqp_url="x", jwt_secrett="typo")


# 31 bytes, one short of HS256's minimum; distinctive, so a leak into a message shows.
SHORT_SECRET = "short-secret-that-must-not-leak"


@pytest.mark.parametrize(("given", "size"), [("", 0), (SHORT_SECRET, 31)])
def test_a_short_or_empty_jwt_secret_is_refused_at_start(monkeypatch, given, size):
    # The environment, as a deployment sets it: `LABKIT_SHOP_JWT_SECRET=` once passed and
    # made every login a 500.
    monkeypatch.setenv("LABKIT_SHOP_JWT_SECRET", given)

    with pytest.raises(ValidationError) as refused:
        ShopSettings(database_url="x", redis_url="x", amqp_url="x")

    message = str(refused.value)
    assert f"LABKIT_SHOP_JWT_SECRET) is {size} bytes long" in message  # what was given
    assert "at least 32" in message  # what is needed
    assert "secrets.token_urlsafe(32)" in message  # how to make one
    assert SHORT_SECRET not in message  # its length, never its value


def test_a_32_byte_jwt_secret_is_taken_and_unset_draws_a_random_one_per_process():
    urls = {"database_url": "x", "redis_url": "x", "amqp_url": "x"}

    given = ShopSettings(**urls, jwt_secret="k" * 32)
    drawn = [ShopSettings(**urls).jwt_secret.get_secret_value() for _ in range(2)]

    assert given.jwt_secret.get_secret_value() == "k" * 32
    assert len(drawn[0].encode()) >= 32 and drawn[0] != drawn[1]


@pytest.mark.parametrize("given", ["-1", "0.001", "nan"])
def test_a_relay_interval_that_would_spin_or_means_nothing_is_refused(monkeypatch, given):
    monkeypatch.setenv("LABKIT_SHOP_OUTBOX_RELAY_INTERVAL", given)

    with pytest.raises(ValidationError) as refused:
        ShopSettings(database_url="x", redis_url="x", amqp_url="x")

    message = str(refused.value)
    assert "LABKIT_SHOP_OUTBOX_RELAY_INTERVAL) is" in message  # what was given
    assert "give 0 (relay off) or at least 0.05 s, e.g. 0.5" in message  # what to give


def test_the_relay_runs_every_half_second_unless_turned_off():
    urls = {"database_url": "x", "redis_url": "x", "amqp_url": "x"}

    assert ShopSettings(**urls).outbox_relay_interval == 0.5
    assert ShopSettings(**urls, outbox_relay_interval=0).outbox_relay_interval == 0


def test_an_empty_jwt_secret_never_reaches_a_live_login(make_shop_app):
    with pytest.raises(ValidationError, match="is 0 bytes long"):
        make_shop_app(jwt_secret="")


def test_workers_sharing_one_secret_accept_each_others_tokens(make_shop_app, shop_clean):
    """Two apps stand for two workers: with one configured secret a token from either works."""
    shared = secrets.token_urlsafe(32)
    first, second = (client_for(make_shop_app(jwt_secret=shared)) for _ in range(2))
    user = {"email": "worker@example.com", "name": "Worker", "password": "SecurePass123!"}
    assert first.post("/api/users", json=user).status_code == 201

    login = first.post("/api/tokens", json={"email": user["email"], "password": user["password"]})
    assert login.status_code == 200, login.text
    token = login.json()["accessToken"]
    user_id = jwt.decode(token, shared, algorithms=["HS256"])["sub"]  # signed with it
    profile = second.get(
        f"/api/users/{user_id}/profile", headers={"Authorization": f"Bearer {token}"}
    )

    assert profile.status_code == 200, profile.text
    assert profile.json()["user"]["email"] == user["email"]


def test_the_shop_answers_on_a_real_socket(shop_app, shop_clean):
    with ShopServer(shop_app) as server:
        response = httpx.post(
            f"{server.url}/api/users",
            json={"email": "socket@example.com", "name": "Socket", "password": "SecurePass123!"},
        )
        assert response.status_code == 201
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "labkit shop"


def test_redis_down_profiles_are_still_served_from_postgres(make_shop_app, shop_session):
    app = make_shop_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = client_for(app)
    user = add_user(shop_session, name="Ada")

    signed_up = client.post(
        "/api/users", json={"email": "new@example.com", "name": "New", "password": "SecurePass123!"}
    )
    profile = client.get(
        f"/api/users/{user.id}/profile", headers=auth_header(app.state.shop.settings, user.id)
    )

    assert signed_up.status_code == 201
    assert profile.status_code == 200
    assert profile.json()["user"]["name"] == "Ada"


def test_fakes_keep_stock_and_answer_payments_idempotently():
    with FakeDownstream() as fakes:
        fakes.inventory.stock["sku"] = 3
        items = {"items": [{"productId": "sku", "quantity": 2}]}

        assert httpx.post(f"{fakes.inventory.url}/check", json=items).json()["allAvailable"] is True
        assert (
            httpx.post(
                f"{fakes.inventory.url}/reserve", json={"orderId": "o1", **items}
            ).status_code
            == 200
        )
        assert (
            httpx.post(
                f"{fakes.inventory.url}/reserve", json={"orderId": "o2", **items}
            ).status_code
            == 409
        )
        httpx.post(f"{fakes.inventory.url}/release", json={"orderId": "o1"})
        assert fakes.inventory.stock["sku"] == 3

        pay = {"orderId": "o1", "amount": "1.00", "method": "CARD"}
        first = httpx.post(
            f"{fakes.payment.url}/payments", json=pay, headers={"Idempotency-Key": "o1"}
        )
        again = httpx.post(
            f"{fakes.payment.url}/payments", json=pay, headers={"Idempotency-Key": "o1"}
        )
        assert first.json() == again.json() and first.json()["status"] == "APPROVED"
        assert len(fakes.payment.calls_to("/payments")) == 2

        fakes.payment.fail_status = 500
        assert httpx.post(f"{fakes.payment.url}/payments", json=pay).status_code == 500


def test_serve_with_two_workers_shares_the_secret_it_drew(shop_settings, shop_clean, tmp_path):
    """`serve(workers=2)` (`labkit shop serve --workers 2`): two processes, no secret
    configured. The one the parent draws reaches both, so whichever worker issued a
    token, every worker accepts it: a token from each of many logins, each sent on
    connections of their own (which the kernel hands to either worker), all pass."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    from labkit.shop.settings import ENV_PREFIX
    from labkit.shop.testing import shop_env
    from labkit.waiting import wait_until

    port = free_port()
    environment = {**os.environ, **shop_env(shop_settings)}
    del environment[f"{ENV_PREFIX}JWT_SECRET"]  # each process would draw its own
    serving = f"from labkit.shop.app.server import serve; serve(port={port}, workers=2)"
    log = tmp_path / "shop.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen([sys.executable, "-c", serving], env=environment,
                                  stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, f"the shop exited: {log.read_text()[-2000:]}"
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=60, message=f"the shop answering on {url}")
        workers = wait_until(lambda: len(psutil.Process(server.pid).children()) >= 2 and
                             psutil.Process(server.pid).children(), timeout=30,
                             message="two uvicorn worker processes")
        user = {"email": "two@example.com", "name": "Two", "password": "SecurePass123!"}
        assert httpx.post(f"{url}/api/users", json=user).status_code == 201
        login = {"email": user["email"], "password": user["password"]}

        def statuses_with_a_fresh_token(_: int) -> list[int]:
            token = httpx.post(f"{url}/api/tokens", json=login).json()["accessToken"]
            user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
            headers = {"Authorization": f"Bearer {token}"}
            return [httpx.get(f"{url}/api/users/{user_id}/profile", headers=headers).status_code
                    for _ in range(8)]

        with ThreadPoolExecutor(8) as pool:
            statuses = [s for each in pool.map(statuses_with_a_fresh_token, range(16)) for s in each]
    finally:
        server.terminate()
        server.wait(timeout=15)

    assert len(workers) >= 2
    assert statuses.count(200) == len(statuses), f"refused: {statuses.count(401)} of {len(statuses)}"
