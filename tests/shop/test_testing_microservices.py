"""labkit.shop.testing.microservices, on the live shop and its fakes over real HTTP: the
listener sees the saga's calls in order, the diagram draws them, and each broken client
is broken the way lesson 05 says."""

from __future__ import annotations

import uuid

import matplotlib
import pytest

from labkit.shop.domain import Downstream
from labkit.shop.testing import add_user, auth_header, client_for
from labkit.shop.testing.microservices import (
    DownstreamWithATypo,
    OutOfStockWhenSlow,
    RetryingDownstream,
    listen_to_downstream,
    sequence_diagram,
    slow_inventory_is_an_error,
    with_downstream,
)

matplotlib.use("Agg")

ORDER = {
    "items": [{"productId": "product-1", "quantity": 2, "unitPrice": "29.99"}],
    "paymentMethod": "CREDIT_CARD",
}
ITEMS = [{"productId": "product-1", "quantity": 1}]
TIMEOUT = 0.3  # seconds: the clients below give up on a slow fake after this


@pytest.fixture
def as_buyer(shop_settings, shop_session):
    return auth_header(shop_settings, add_user(shop_session, name="Buyer").id)


@pytest.fixture
def fast_timeout(shop_settings):
    return shop_settings.model_copy(update={"downstream_timeout": TIMEOUT})


def test_the_listener_records_a_declined_order_in_order(
    make_shop_app, shop_clean, shop_downstream, as_buyer
):
    app = make_shop_app()
    calls = listen_to_downstream(app.state.shop)
    shop_downstream.payment.decline = True

    response = client_for(app).post("/api/orders", json=ORDER, headers=as_buyer)

    assert response.status_code == 402
    assert [(c["service"], c["request"], c["status"]) for c in calls] == [
        ("inventory", "/check", 200), ("inventory", "/reserve", 200),
        ("payment", "/payments", 200), ("inventory", "/release", 200),
    ]
    assert calls[2]["answer"]["status"] == "DECLINED"


def test_the_sequence_diagram_draws_each_request_and_the_outcome():
    import matplotlib.pyplot as plt

    calls = [{"service": "inventory", "request": "/check", "status": 200,
              "answer": {"allAvailable": False}}]
    fig, ax = plt.subplots()
    sequence_diagram(ax, "out of stock", calls, "409 INVENTORY_UNAVAILABLE", depth=2)
    texts = [t.get_text() for t in ax.texts]
    plt.close(fig)
    assert "POST /check" in texts and "200 allAvailable=False" in texts
    assert "→ client: 409 INVENTORY_UNAVAILABLE" in texts and ax.get_title() == "out of stock"


def test_a_release_with_a_typo_leaves_the_stock_reserved(shop_settings, shop_downstream, caplog):
    downstream = DownstreamWithATypo(shop_settings)
    order_id = uuid.uuid4()
    assert downstream.reserve(order_id, ITEMS)

    downstream.release(order_id)
    downstream.close()

    assert [c.path for c in shop_downstream.inventory.calls] == ["/reserve", "/releases"]
    assert str(order_id) in shop_downstream.inventory.reservations
    assert "NOT released" in caplog.text


def test_a_slow_inventory_is_an_error_after_the_timeout(fast_timeout, shop_downstream):
    shop_downstream.inventory.delay = TIMEOUT + 0.5
    downstream = Downstream(fast_timeout)
    raised, waited = slow_inventory_is_an_error(downstream, ITEMS)
    downstream.close()
    assert raised and TIMEOUT <= waited < TIMEOUT + 0.5


def test_the_retrying_client_asks_three_times(fast_timeout, shop_downstream):
    shop_downstream.inventory.delay = TIMEOUT + 0.5
    downstream = RetryingDownstream(fast_timeout)
    raised, waited = slow_inventory_is_an_error(downstream, ITEMS)
    downstream.close()
    assert raised and waited >= 3 * TIMEOUT
    assert len(shop_downstream.inventory.calls_to("/check")) == 3


def test_the_client_that_blames_the_stock_says_out_of_stock_when_slow(
    fast_timeout, shop_downstream
):
    shop_downstream.inventory.delay = TIMEOUT + 0.5
    downstream = OutOfStockWhenSlow(fast_timeout)
    assert downstream.check_stock(ITEMS) is False
    downstream.close()


def test_with_downstream_puts_the_client_into_the_shop(make_shop_app):
    app = with_downstream(make_shop_app(), OutOfStockWhenSlow)
    assert isinstance(app.state.shop.downstream, OutOfStockWhenSlow)
