"""labkit.shop.testing.routes and .outages: what lessons 03a and 03b run, on the real shop
and a real frozen PostgreSQL."""

from __future__ import annotations

import pytest

from labkit.shop.testing import client_for
from labkit.shop.testing.outages import (
    clients_in_a_freeze,
    health_through_an_outage,
    pause_support,
    timed,
)
from labkit.shop.testing.routes import replace_route, swap_route

pauses = pytest.mark.skipif(not pause_support().can_pause, reason=pause_support().reason)


def swapped_health() -> dict[str, str]:
    return {"status": "swapped"}


def test_a_replaced_route_answers_ahead_of_the_shops_own(make_shop_app):
    app = make_shop_app()
    replace_route(app, "GET", "/health", swapped_health)

    assert client_for(app).get("/health").json() == {"status": "swapped"}


def test_a_swapped_route_is_undone_with_its_monkeypatch(shop_app, shop_client):
    patch = pytest.MonkeyPatch()
    swap_route(shop_app, patch, "GET", "/health", swapped_health)
    swapped = shop_client.get("/health").json()
    patch.undo()

    assert (swapped, shop_client.get("/health").json()) == ({"status": "swapped"}, {"status": "ok"})


def test_pause_support_says_why_an_external_server_cannot_be_frozen(monkeypatch, postgres):
    monkeypatch.setenv("LABKIT_BACKEND", "external")
    monkeypatch.setenv("LABKIT_POSTGRES_URL", postgres.url)
    support = pause_support("postgres")

    assert (support.backend, support.can_pause) == ("external", False)
    assert "LABKIT_BACKEND=docker or local" in support.reason


def test_pause_support_says_why_a_tenant_cannot_freeze_its_shared_server(monkeypatch):
    monkeypatch.setenv("LABKIT_BACKEND", "auto")
    monkeypatch.delenv("LABKIT_POSTGRES_BACKEND", raising=False)
    monkeypatch.setenv("LABKIT_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/x")
    support = pause_support("postgres")

    assert (support.backend, support.can_pause) == ("tenant", False)
    assert "a tenant of a shared server" in support.reason


def test_timed_reports_an_answer_and_an_error_as_outcomes():
    def fail() -> None:
        raise TimeoutError("no answer\nsecond line")

    assert timed(lambda: None).outcome == "answered"
    assert timed(fail).outcome == "TimeoutError: no answer"


@pauses
def test_in_a_freeze_the_plain_connection_waits_and_the_engine_gives_up(shop_app, shop_settings):
    freeze = clients_in_a_freeze(shop_app.state.shop.engine, shop_settings.database_url)
    margin = 2.0  # scheduling on a loaded 2-core machine

    assert freeze.plain_waited_through and freeze.plain.outcome == "answered"
    assert freeze.engine.outcome.startswith("OperationalError")
    assert freeze.engine.seconds < shop_settings.db_io_timeout + shop_settings.db_connect_timeout + margin
    assert freeze.plain.seconds >= freeze.engine.seconds


@pauses
def test_health_through_an_outage_is_503_while_frozen_and_200_after(shop_app, shop_settings):
    bound = shop_settings.db_io_timeout + shop_settings.db_connect_timeout
    rows = health_through_an_outage(
        client_for(shop_app), outage_at=0.5, outage_for=bound + 1.0, run_for=bound + 3.0
    )

    statuses = [row["status"] for row in rows]
    assert statuses[0] == 200 and 503 in statuses and statuses[-1] == 200, statuses
    assert [row["sent_s"] for row in rows] == sorted(row["sent_s"] for row in rows)
