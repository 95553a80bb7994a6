"""/graphql: the seed's user query without N+1, and createPost with its side effects."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, select

from labkit.shop.data import Post
from labkit.shop.testing import (
    add_comment,
    add_follow,
    add_post,
    auth_header,
    database_outage,
    queued_json,
)

USER_QUERY = """
query GetUserProfile($userId: ID!) {
  user(id: $userId) {
    id name email
    posts { id title comments { id content author { name } } }
    followers { id name }
  }
}
"""

CREATE_POST = """
mutation CreatePost($input: CreatePostInput!) {
  createPost(input: $input) { id title content tags author { id name } createdAt }
}
"""


def graphql(client, query, variables=None, headers=None):
    response = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_user_query_returns_posts_comments_authors_and_followers(
    shop_client, shop_session, ada, bob
):
    post = add_post(shop_session, ada, title="Testing in Python")
    comment = add_comment(shop_session, post, bob, "Great read")
    add_follow(shop_session, bob, ada)

    result = graphql(shop_client, USER_QUERY, {"userId": str(ada.id)})

    assert "errors" not in result
    assert result["data"]["user"] == {
        "id": str(ada.id),
        "name": "Ada",
        "email": None,  # anonymous callers do not see emails
        "posts": [
            {
                "id": str(post.id),
                "title": "Testing in Python",
                "comments": [
                    {"id": str(comment.id), "content": "Great read", "author": {"name": "Bob"}}
                ],
            }
        ],
        "followers": [{"id": str(bob.id), "name": "Bob"}],
    }


def test_a_user_sees_their_own_email_only(shop_client, shop_settings, ada, bob):
    own = graphql(
        shop_client, USER_QUERY, {"userId": str(ada.id)}, auth_header(shop_settings, ada.id)
    )
    other = graphql(
        shop_client, USER_QUERY, {"userId": str(ada.id)}, auth_header(shop_settings, bob.id)
    )

    assert own["data"]["user"]["email"] == "ada@example.com"
    assert other["data"]["user"]["email"] is None


def test_query_count_does_not_grow_with_posts_and_comments(
    shop_client, shop_app, shop_session, ada, bob
):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def queries_for_user() -> int:
        statements.clear()
        event.listen(shop_app.state.shop.engine, "before_cursor_execute", count)
        try:
            graphql(shop_client, USER_QUERY, {"userId": str(ada.id)})
        finally:
            event.remove(shop_app.state.shop.engine, "before_cursor_execute", count)
        return len(statements)

    post = add_post(shop_session, ada)
    add_comment(shop_session, post, bob)
    few = queries_for_user()
    for n in range(5):
        post = add_post(shop_session, ada, title=f"post {n}")
        add_comment(shop_session, post, bob)
        add_comment(shop_session, post, ada)

    assert queries_for_user() == few  # N+1 would add a query per post and per comment


def test_unknown_and_malformed_ids(shop_client):
    assert graphql(shop_client, USER_QUERY, {"userId": str(uuid.uuid4())})["data"]["user"] is None
    malformed = graphql(shop_client, USER_QUERY, {"userId": "user-1"})
    assert malformed["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_create_post_notifies_and_is_searchable(
    shop_client, shop_settings, shop_session, amqp_channel, amqp_queue, ada
):
    queue = amqp_queue("notifications")
    post_input = {
        "title": "New Post",
        "content": "Integration tests with live services",
        "authorId": str(ada.id),
        "tags": ["test", "integration"],
    }

    result = graphql(
        shop_client, CREATE_POST, {"input": post_input}, auth_header(shop_settings, ada.id)
    )

    assert "errors" not in result
    created = result["data"]["createPost"]
    assert created["title"] == "New Post" and created["tags"] == ["test", "integration"]
    assert created["author"] == {"id": str(ada.id), "name": "Ada"}
    assert created["createdAt"]

    (notification,) = queued_json(amqp_channel, queue)
    assert notification["type"] == "new_post" and notification["postId"] == created["id"]

    hits = graphql(shop_client, '{ search(query: "live services") { id type title } }')["data"][
        "search"
    ]
    assert {"id": created["id"], "type": "post", "title": "New Post"} in hits
    rest = shop_client.get("/api/search", params={"q": "integration tests"}).json()
    assert created["id"] in [r["id"] for r in rest["results"]]
    assert shop_client.get("/api/search", params={"q": "kubernetes"}).json()["results"] == []


def test_search_ranks_title_matches_first(shop_client, shop_session, ada):
    in_content = add_post(shop_session, ada, title="Other", content="all about postgres")
    in_title = add_post(shop_session, ada, title="Postgres", content="something else")

    results = shop_client.get("/api/search", params={"q": "postgres"}).json()["results"]

    assert [r["id"] for r in results] == [str(in_title.id), str(in_content.id)]


@pytest.mark.parametrize("who", ["anonymous", "someone-else"])
def test_nobody_can_post_as_someone_else(
    shop_client, shop_settings, shop_session, amqp_channel, amqp_queue, ada, bob, who
):
    queue = amqp_queue("notifications")
    headers = None if who == "anonymous" else auth_header(shop_settings, bob.id)
    post_input = {"title": "Fake", "content": "Not mine", "authorId": str(ada.id)}

    result = graphql(shop_client, CREATE_POST, {"input": post_input}, headers)

    assert result["data"] is None
    code = result["errors"][0]["extensions"]["code"]
    assert code == ("UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN")
    assert shop_session.scalars(select(Post)).all() == []
    assert queued_json(amqp_channel, queue, expect=0, timeout=0.3) == []


@pytest.mark.parametrize(
    "change", [{"title": ""}, {"title": "x" * 201}, {"content": "nul\x00"}, {"tags": ["t"] * 11}]
)
def test_invalid_post_is_refused_and_stores_nothing(
    shop_client, shop_settings, shop_session, ada, change
):
    post_input = {"title": "Fine", "content": "Fine", "authorId": str(ada.id), **change}

    result = graphql(
        shop_client, CREATE_POST, {"input": post_input}, auth_header(shop_settings, ada.id)
    )

    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert shop_session.scalars(select(Post)).all() == []


def test_database_outage_is_a_clean_graphql_error(shop_client, shop_settings, ada):
    shop_client.get("/health")
    with database_outage(shop_settings.database_url):
        result = graphql(shop_client, USER_QUERY, {"userId": str(ada.id)})

    assert result["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert result["errors"][0]["message"] == "Service temporarily unavailable"
    assert (
        graphql(shop_client, USER_QUERY, {"userId": str(ada.id)})["data"]["user"]["name"] == "Ada"
    )


def test_unexpected_errors_are_masked(shop_client, shop_app, shop_settings, ada, monkeypatch):
    from labkit.shop.app import graphql as shop_graphql

    def broken(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(shop_graphql, "load_user_graph", broken)

    result = graphql(shop_client, USER_QUERY, {"userId": str(ada.id)})

    assert result["errors"][0]["message"] == "Unexpected error."
    assert "secret" not in str(result)
