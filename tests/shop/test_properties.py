"""Property-based: whatever a client sends, the shop answers 4xx or succeeds — never 5xx —
and what it stores is exactly what it said it stored."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from labkit.shop.data import Order, Post, User
from labkit.shop.testing import add_user, auth_header


def send_json(client, method, url, body, headers=None):
    """Send `body` as JSON, even NaN and Infinity (which httpx's json= refuses to encode)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return client.request(method, url, content=json.dumps(body), headers=headers)


bounded = settings(
    max_examples=50,
    deadline=None,
    # The fixtures give a clean shop per test, not per example: the properties below
    # hold however many rows earlier examples left.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text from all of Unicode: NUL, lone surrogates, emoji, right-to-left marks…
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    any_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@bounded
@given(
    # Mostly plausible values, so that the 201 path is exercised too, plus junk.
    email=st.one_of(
        st.from_regex(r"\A[a-zA-Z0-9._+-]{1,20}@example\.(com|org)\Z"), st.emails(), junk
    ),
    name=st.one_of(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120), junk),
    password=st.one_of(st.text(min_size=8, max_size=140), st.text(max_size=10), junk),
)
def test_sign_up_never_fails_with_5xx_nor_stores_garbage(
    shop_client, shop_session, email, name, password
):
    body = {"email": email, "name": name, "password": password}
    response = send_json(shop_client, "POST", "/api/users", body)

    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics
    assert response.status_code in (201, 409, 422), response.text
    if response.status_code == 201:
        body = response.json()
        shop_session.expire_all()
        stored = shop_session.get(User, body["id"])
        assert (stored.email, stored.name) == (body["email"], body["name"])
        assert stored.name == stored.name.strip() and 1 <= len(stored.name) <= 100
        assert stored.password_hash.startswith("$argon2id$")


@bounded
@given(email=st.one_of(st.emails(), junk), password=st.one_of(any_text, junk))
def test_login_answers_200_401_422_or_429_to_anything(shop_client, email, password):
    # 429: Hypothesis repeats an email more often than login_max_failures allows.
    response = send_json(shop_client, "POST", "/api/tokens", {"email": email, "password": password})
    assert response.status_code in (200, 401, 422, 429), response.text


product_ids = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")
valid_item = st.fixed_dictionaries(
    {
        "productId": product_ids,
        "quantity": st.integers(min_value=1, max_value=1000),
        "unitPrice": st.decimals(min_value=0, max_value=Decimal("999999.99"), places=2).map(str),
    }
)
any_item = st.fixed_dictionaries(
    {
        "productId": st.one_of(product_ids, junk),
        "quantity": st.one_of(st.integers(min_value=-5, max_value=2000), junk),
        "unitPrice": st.one_of(
            st.decimals(min_value=-5, max_value=2_000_000, places=3).map(str),
            st.decimals(allow_nan=True, allow_infinity=True).map(str),
            junk,
        ),
    }
)
# Valid orders, to check totals; anything at all, to look for a 5xx.
items = st.one_of(
    st.lists(valid_item, min_size=1, max_size=5),
    st.lists(any_item, max_size=5),
    junk,
)


@bounded
@given(items=items, payment_method=st.one_of(st.just("CREDIT_CARD"), st.just("CREDIT_CARD"), junk))
def test_orders_never_fail_with_5xx_and_totals_are_exact(
    shop_client, shop_settings, shop_session, shop_downstream, items, payment_method
):
    shop_downstream.inventory.default_stock = 10**9  # stock is not what this test is about
    buyer = shop_session.scalars(select(User)).first() or add_user(shop_session)

    body = {"items": items, "paymentMethod": payment_method}
    response = send_json(
        shop_client, "POST", "/api/orders", body, auth_header(shop_settings, buyer.id)
    )

    event(f"HTTP {response.status_code}")
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        body = response.json()
        expected = sum(Decimal(str(i["unitPrice"])) * i["quantity"] for i in items)
        assert Decimal(body["totalAmount"]) == expected
        shop_session.expire_all()
        assert shop_session.get(Order, body["orderId"]).total_amount == expected


# A URL carries UTF-8: a lone surrogate (which any_text may draw) has no bytes to send.
url_text = st.text(st.characters(codec="utf-8"), max_size=300)


@bounded
@given(query=url_text)
def test_search_takes_any_text(shop_client, query):
    response = shop_client.get("/api/search", params={"q": query})
    assert response.status_code in (200, 422), response.text


@bounded
@given(
    title=st.one_of(any_text, st.text(max_size=250)),
    content=any_text,
    tags=st.lists(any_text, max_size=12),
)
def test_create_post_stores_only_what_it_accepts(
    shop_client, shop_settings, shop_session, title, content, tags
):
    author = shop_session.scalars(select(User)).first() or add_user(shop_session)
    before = shop_session.scalar(select(func.count()).select_from(Post))
    mutation = "mutation($i: CreatePostInput!) { createPost(input: $i) { id title } }"
    variables = {
        "i": {"title": title, "content": content, "tags": tags, "authorId": str(author.id)}
    }

    body = {"query": mutation, "variables": variables}
    response = send_json(
        shop_client, "POST", "/graphql", body, auth_header(shop_settings, author.id)
    )

    assert response.status_code == 200, response.text
    result = response.json()
    after = shop_session.scalar(select(func.count()).select_from(Post))
    if result.get("errors"):
        assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert after == before
    else:
        assert after == before + 1
        stored = shop_session.scalars(select(Post).order_by(Post.created_at.desc())).first()
        assert result["data"]["createPost"]["title"] == stored.title == title.strip()


@pytest.mark.parametrize("path", ["/api/users/{id}/profile", "/api/users/{id}"])
@bounded
@given(raw_id=any_text)
def test_any_id_in_the_path_is_a_4xx(shop_client, shop_settings, path, raw_id):
    from urllib.parse import quote

    url = path.format(id=quote(raw_id.encode("utf-8", "surrogatepass"), safe=""))
    headers = auth_header(shop_settings, "00000000-0000-0000-0000-000000000000")
    response = shop_client.request(
        "GET" if "profile" in path else "PATCH", url, headers=headers, json={"name": "x"}
    )
    assert 400 <= response.status_code < 500, response.text
