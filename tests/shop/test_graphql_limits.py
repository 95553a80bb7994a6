"""/graphql refuses requests that ask for too much work, before any SQL runs.

The attacks of issue #14: 100,000 aliases of __typename (1.9 MB) held the event loop for
7 s; 1,000 aliased searches ran 1,000 SQL queries. Each limit is checked on the live shop
by counting the statements the request sent: none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from graphql.language import Lexer, Source, TokenKind
from sqlalchemy import event, text

from labkit.shop.app import ShopServer
from labkit.shop.app.graphql import count_tokens
from labkit.shop.testing import auth_header, client_for
from labkit.waiting import wait_until

GENEROUS_S = 30.0  # a bound for a loaded 2-core machine, never a speed target


@contextmanager
def counting_statements(app) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    engine = app.state.shop.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def aliases(field: str, count: int) -> str:
    return "{ " + " ".join(f"a{n}: {field}" for n in range(count)) + " }"


def searches(count: int) -> str:
    return aliases('search(query: "postgres") { id }', count)


def post(client, query: str):
    return client.post("/graphql", json={"query": query})


def the_error(response) -> dict:
    body = response.json()
    assert body.get("data") is None, body
    (error,) = body["errors"]
    return error


def test_a_huge_body_is_refused_with_413_before_parsing(shop_client, shop_app, shop_settings):
    attack = aliases("__typename", 100_000)  # 1.9 MB
    with counting_statements(shop_app) as statements:
        response = post(shop_client, attack)

    assert response.status_code == 413, response.text
    error = the_error(response)
    limit = shop_settings.graphql_max_body_bytes
    assert error["extensions"] == {"code": "REQUEST_TOO_LARGE", "limit": limit}
    assert str(limit) in error["message"]
    assert statements == []


def test_the_largest_valid_post_fits_under_the_body_limit(shop_client, shop_settings, ada):
    mutation = "mutation($input: CreatePostInput!) { createPost(input: $input) { id } }"
    content = "é" * 20_000  # the longest content allowed, each character sent as \\u00e9
    post_input = {"title": "t" * 200, "content": content, "authorId": str(ada.id)}

    body = json.dumps({"query": mutation, "variables": {"input": post_input}})  # ASCII only
    assert len(body) > 120_000

    response = shop_client.post(
        "/graphql",
        content=body,
        headers={"Content-Type": "application/json", **auth_header(shop_settings, ada.id)},
    )

    assert response.status_code == 200 and "errors" not in response.json(), response.text


def test_a_huge_chunked_body_is_refused_too(shop_client, shop_settings):
    # No Content-Length: the limit is counted on the bytes as they come.
    chunk = b" " * 64 * 1024
    chunks = (chunk for _ in range(shop_settings.graphql_max_body_bytes // len(chunk) + 2))

    response = shop_client.post(
        "/graphql", content=chunks, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413, response.text
    assert "Content-Length" not in response.request.headers


def test_a_long_document_under_the_body_limit_stops_at_the_token_limit(
    shop_client, shop_app, shop_settings
):
    attack = searches(1_000)  # 1,000 SQL queries before the limits
    assert len(attack.encode()) < shop_settings.graphql_max_body_bytes

    with counting_statements(shop_app) as statements:
        response = post(shop_client, attack)

    error = the_error(response)
    limit = shop_settings.graphql_max_tokens
    assert f"more than {limit} tokens" in error["message"]
    assert statements == []
    # Refused before graphql-core's parser ran: its error would carry a location (and
    # cost ~60 ms of parsing and locating on the event loop; benchmarks/graphql_abuse.py).
    assert error["extensions"] == {"code": "TOO_MANY_TOKENS", "limit": limit}
    assert "locations" not in error


def test_a_refused_document_is_not_copied_into_the_logs(shop_client, caplog):
    """strawberry logged each client error with its location printed from the document:
    a refused 255 kB document became a log record of thousands of lines."""
    # A few tokens on one 100 kB line, the closing brace missing: a syntax error whose
    # location strawberry printed with the whole line.
    document = '{ search(query: "' + "x" * 100_000 + '") { id }'
    with caplog.at_level(logging.DEBUG):
        error = the_error(post(shop_client, document))

    assert error["message"].startswith("Syntax Error")
    assert caplog.records, "the refusal is still logged, in one line"
    assert max(len(record.getMessage()) for record in caplog.records) < 500


def test_too_many_aliases_are_refused(shop_client, shop_settings):
    limit = shop_settings.graphql_max_aliases

    error = the_error(post(shop_client, aliases("__typename", limit + 1)))

    assert error["message"] == f"{limit + 1} aliases found. Allowed: {limit}"
    assert post(shop_client, aliases("__typename", limit)).json() == {
        "data": {f"a{n}": "Query" for n in range(limit)}
    }


def test_too_many_database_fields_are_refused_without_sql(shop_client, shop_app, shop_settings):
    limit = shop_settings.graphql_max_database_fields
    with counting_statements(shop_app) as statements:
        response = post(shop_client, searches(limit + 1))

    error = the_error(response)
    assert error["extensions"] == {"code": "TOO_MANY_DATABASE_FIELDS", "limit": limit}
    assert f"{limit + 1} fields that query the database" in error["message"]
    assert statements == []

    with counting_statements(shop_app) as statements:
        allowed = post(shop_client, searches(limit)).json()
    assert allowed == {"data": {f"a{n}": [] for n in range(limit)}}
    assert statements  # the searches did run


def test_database_fields_in_fragments_count_too(shop_client, shop_settings):
    limit = shop_settings.graphql_max_database_fields
    fragment = " ".join(f's{n}: search(query: "x") {{ id }}' for n in range(limit))
    document = f'{{ ...F u: user(id: "user-1") {{ id }} }} fragment F on Query {{ {fragment} }}'

    error = the_error(post(shop_client, document))

    assert error["extensions"]["code"] == "TOO_MANY_DATABASE_FIELDS"


@pytest.mark.parametrize(
    ("setting", "value", "document", "expected"),
    [
        ("graphql_max_body_bytes", 100, aliases("__typename", 10), "over 100 bytes"),
        ("graphql_max_tokens", 20, aliases("__typename", 10), "more than 20 tokens"),
        ("graphql_max_aliases", 2, aliases("__typename", 10), "Allowed: 2"),
        ("graphql_max_database_fields", 1, searches(2), "the limit is 1"),
    ],
)
def test_each_limit_comes_from_the_settings(make_shop_app, setting, value, document, expected):
    client = client_for(make_shop_app(**{setting: value}))

    assert expected in the_error(post(client, document))["message"]


def test_health_answers_while_a_graphql_mutation_waits_on_the_database(
    make_shop_app, shop_session, ada
):
    """Resolvers run their SQL in a worker thread, never on the event loop: while a
    createPost waits for a row lock (held here, for as long as the test likes), /health
    still answers. A resolver that ran its SQL on the loop would stall every request
    until the lock goes. Bounded by a generous timeout, not timed: the assertion is the
    order of events (health answered, the mutation still waiting)."""
    # Its own app: statement and socket timeouts long enough that the wait cannot end
    # by itself during the test.
    app = make_shop_app(db_statement_timeout=120, db_io_timeout=120)
    mutation = {
        "query": "mutation($input: CreatePostInput!) { createPost(input: $input) { id } }",
        "variables": {"input": {"title": "t", "content": "c", "authorId": str(ada.id)}},
    }
    headers = auth_header(app.state.shop.settings, ada.id)

    def waiting_inserts() -> int:
        # In the lock holder's transaction: statistics are cached per transaction.
        shop_session.execute(text("SELECT pg_stat_clear_snapshot()"))
        return shop_session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO posts%'"
            )
        )

    with ShopServer(app) as server, ThreadPoolExecutor(1) as pool:
        # The post's foreign key takes a KEY SHARE lock on its author: FOR UPDATE blocks it.
        shop_session.execute(text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": ada.id})
        with httpx.Client(base_url=server.url, timeout=GENEROUS_S) as client:
            try:
                posting = pool.submit(client.post, "/graphql", json=mutation, headers=headers)
                wait_until(
                    waiting_inserts,
                    timeout=GENEROUS_S,
                    message="createPost waiting on the author's row lock",
                )
                health = client.get("/health")
                still_waiting = not posting.done() and waiting_inserts() == 1
            finally:
                shop_session.rollback()  # the lock goes; the mutation goes on
            posted = posting.result(timeout=GENEROUS_S)

    assert health.status_code == 200, health.text
    assert still_waiting, "the mutation should still have been waiting when /health answered"
    assert posted.status_code == 200 and "errors" not in posted.json(), posted.text


GRAPHQL_SAMPLES = [
    aliases("__typename", 50),
    searches(20),
    (
        "# a comment { with braces }\n"
        'query Q($n: Int = -12.5e3) { search(query: "a { b } \\" c") { id } }'
    ),
    (
        'mutation { createPost(input: {title: """a ""\\""" b { }""", content: "x", authorId: "1",'
        " tags: []}) { ...F } } fragment F on Post { id, title }"
    ),
    "{ a: user(id: $x) @include(if: true) { id } b: search(query: [1, 2]) | & ! = }",
]


@pytest.mark.parametrize("document", GRAPHQL_SAMPLES)
def test_the_early_token_count_agrees_with_graphql_core(document):
    """Documents over the token limit are refused before graphql-core's parser runs,
    by a count that must match the parser's own (comments counted, strings one token)."""
    assert count_tokens(document, stop_after=10_000) == graphql_core_tokens(document)
    assert count_tokens(document, stop_after=3) == 4  # it stops counting past the limit


def graphql_core_tokens(document: str) -> int:
    lexer = Lexer(Source(document))
    token = start = lexer.token
    while lexer.advance().kind is not TokenKind.EOF:
        pass
    count = 0
    while (token := token.next) is not None and token.kind is not TokenKind.EOF:
        count += 1  # the linked tokens include comments, as max_tokens counts them
    assert start.kind is TokenKind.SOF
    return count
