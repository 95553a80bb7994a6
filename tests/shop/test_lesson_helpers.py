"""labkit.shop.testing.routes and .outages: what lessons 03a and 03b run, on the real shop
and a real frozen PostgreSQL."""

from __future__ import annotations

import time

import psycopg
import pytest

from labkit import faults
from labkit.shop.app import UNAVAILABLE_BODY, create_app
from labkit.shop.settings import ShopSettings
from labkit.shop.testing import client_for, database_outage, settings_from_services
from labkit.shop.testing.outages import (
    clients_in_a_freeze,
    frozen,
    health_through_an_outage,
    through_fault_layer,
    timed,
)
from labkit.shop.testing.routes import replace_route, swap_route


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


@pytest.fixture
def external_postgres(monkeypatch, postgres):
    """This process's PostgreSQL, seen as external (a URL, as beside `labkit up`): a
    server labkit may not pause, where lesson 03b's outages must run all the same."""
    monkeypatch.setenv("LABKIT_BACKEND", "external")
    monkeypatch.setenv("LABKIT_POSTGRES_URL", postgres.url)
    return postgres  # its proxy stays for the process, as a kernel's does


def test_the_shop_reaches_postgres_through_the_fault_layer_only_when_asked(postgres):
    routed = through_fault_layer(postgres)

    assert (routed.host, routed.port) == (faults.proxy("postgres").host,
                                          faults.proxy("postgres").port)
    assert settings_from_services(fault_layer=True).database_url == routed.url
    assert settings_from_services().database_url == postgres.url  # lesson 10's: no proxy


def test_on_an_external_server_an_outage_freezes_the_proxy_not_the_server(
    external_postgres, shop_settings
):
    settings = ShopSettings(**{**shop_settings.model_dump(),
                               "database_url": through_fault_layer(external_postgres).url})
    app = create_app(settings)
    client = client_for(app)
    bound = settings.db_io_timeout + settings.db_connect_timeout + 5.0  # a loaded machine
    try:
        assert client.get("/health").status_code == 200  # a warm pool
        started = time.monotonic()
        with database_outage(settings.database_url):
            response = client.get("/health")
            with psycopg.connect(external_postgres.dsn, connect_timeout=5) as direct:
                server_answers = direct.execute("SELECT 1").fetchone() == (1,)
        elapsed = time.monotonic() - started

        assert (response.status_code, response.json()) == (503, UNAVAILABLE_BODY)
        assert elapsed < bound
        assert server_answers, "the server itself must not be paused: labkit does not run it"
        assert client.get("/health").status_code == 200
    finally:
        client.close()
        app.state.shop.close()


def test_a_url_around_the_proxy_is_refused_not_left_to_hang(postgres, shop_app):
    with pytest.raises(ValueError, match="settings_from_services\\(fault_layer=True\\)"):
        clients_in_a_freeze(shop_app.state.shop.engine, postgres.url)
    with pytest.raises(ValueError, match="would never see the freeze"), database_outage(
        postgres.url
    ):
        pass


def test_frozen_leaves_the_server_itself_answering_on_every_backend(postgres):
    """One path for every backend: even a server this process runs is not paused, so a
    lesson behaves the same on Docker, local, `labkit up` and a URL."""
    routed = through_fault_layer(postgres)
    with frozen("postgres"):
        with psycopg.connect(postgres.dsn, connect_timeout=5) as direct:
            assert direct.execute("SELECT 1").fetchone() == (1,), "the server was paused"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(routed.dsn, connect_timeout=1)


def test_timed_reports_an_answer_and_an_error_as_outcomes():
    def fail() -> None:
        raise TimeoutError("no answer\nsecond line")

    assert timed(lambda: None).outcome == "answered"
    assert timed(fail).outcome == "TimeoutError: no answer"


def test_in_a_freeze_the_plain_connection_waits_and_the_engine_gives_up(shop_app, shop_settings):
    freeze = clients_in_a_freeze(shop_app.state.shop.engine, shop_settings.database_url)
    margin = 5.0  # scheduling on a loaded 2-core machine; a client without deadlines
    # would wait for ever, as the freeze lasts until the engine gives up

    assert freeze.plain_waited_through and freeze.plain.outcome == "answered"
    assert freeze.engine.outcome.startswith("OperationalError")
    assert freeze.engine.seconds < shop_settings.db_io_timeout + shop_settings.db_connect_timeout + margin
    assert freeze.plain.seconds >= freeze.engine.seconds


def test_health_through_an_outage_is_503_while_frozen_and_200_after(shop_app, shop_settings):
    bound = shop_settings.db_io_timeout + shop_settings.db_connect_timeout
    rows = health_through_an_outage(
        client_for(shop_app), outage_at=0.5, outage_for=bound + 1.0, run_for=bound + 3.0
    )

    statuses = [row["status"] for row in rows]
    assert statuses[0] == 200 and 503 in statuses and statuses[-1] == 200, statuses
    phases = ("before", "during", "after")
    by_phase = {phase: {r["status"] for r in rows if r["phase"] == phase} for phase in phases}
    # On a loaded machine the first request into the freeze may take its whole timeout
    # and straddle the freeze's end ("across"), leaving no request wholly "during" it:
    # what must hold is that none answered 200 while frozen.
    assert by_phase["before"] == {200} and by_phase["after"] == {200}, rows
    assert by_phase["during"] <= {503}, rows
    assert [row["sent_s"] for row in rows] == sorted(row["sent_s"] for row in rows)
