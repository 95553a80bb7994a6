"""GET /api/users/{id}/profile: aggregated, cached, private; PATCH: own account, name only."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from labkit.shop import ShopSettings
from labkit.shop.data import User
from labkit.shop.infra import profile_key, user_key
from labkit.shop.testing import add_comment, add_follow, add_post, auth_header, database_outage


def test_profile_aggregates_posts_follows_and_activity(
    shop_client, shop_settings, shop_session, ada, bob
):
    post = add_post(shop_session, ada, title="Hello")
    add_comment(shop_session, post, ada, "first!")
    add_follow(shop_session, bob, ada)

    response = shop_client.get(
        f"/api/users/{ada.id}/profile", headers=auth_header(shop_settings, ada.id)
    )

    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"id": str(ada.id), "email": "ada@example.com", "name": "Ada"}
    assert body["stats"] == {"postsCount": 1, "followersCount": 1, "followingCount": 0}
    assert {a["type"] for a in body["recentActivity"]} == {"post_created", "comment_created"}
    assert all(isinstance(a["timestamp"], str) for a in body["recentActivity"])
    timestamps = [a["timestamp"] for a in body["recentActivity"]]
    assert timestamps == sorted(timestamps, reverse=True)


def test_second_read_comes_from_redis_with_a_ttl(shop_client, shop_settings, redis_client, ada):
    headers = auth_header(shop_settings, ada.id)

    first = shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)
    second = shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)

    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.json() == second.json()
    assert json.loads(redis_client.get(profile_key(ada.id)))["user"]["id"] == str(ada.id)
    assert 0 < redis_client.ttl(profile_key(ada.id)) <= shop_settings.profile_cache_ttl_seconds


@pytest.mark.parametrize("warm_cache", [False, True], ids=["from-db", "from-cache"])
def test_another_user_sees_no_email(shop_client, shop_settings, ada, bob, warm_cache):
    if warm_cache:
        shop_client.get(f"/api/users/{ada.id}/profile", headers=auth_header(shop_settings, ada.id))

    response = shop_client.get(
        f"/api/users/{ada.id}/profile", headers=auth_header(shop_settings, bob.id)
    )

    assert response.status_code == 200
    assert response.json()["user"] == {"id": str(ada.id), "name": "Ada"}
    assert "ada@example.com" not in response.text


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-jwt",
        "Basic YWRhOnNlY3JldA==",
        "expired",
        "other-secret",
        "alg-none",
    ],
)
def test_profile_without_a_valid_token_is_401(shop_client, shop_settings, ada, authorization):
    import jwt

    from labkit.shop.domain import issue_token

    if authorization == "expired":
        authorization = f"Bearer {issue_token(shop_settings, ada.id, ttl_seconds=-10)}"
    elif authorization == "other-secret":
        forged = ShopSettings(**{**shop_settings.model_dump(), "jwt_secret": "x" * 40})
        authorization = f"Bearer {issue_token(forged, ada.id)}"
    elif authorization == "alg-none":
        authorization = "Bearer " + jwt.encode({"sub": str(ada.id)}, key=None, algorithm="none")
    headers = {"Authorization": authorization} if authorization else {}

    response = shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED"
    assert "ada@example.com" not in response.text


def test_a_token_remembered_after_its_first_use_still_expires(
    shop_client, shop_settings, ada, monkeypatch
):
    """The shop remembers tokens it verified (labkit.shop.domain.security): the clock
    must still end them. The clock is moved rather than waited for."""
    import types

    import jwt

    from labkit.shop.domain import security

    headers = auth_header(shop_settings, ada.id)
    expires_at = jwt.decode(headers["Authorization"].split()[1],
                            options={"verify_signature": False})["exp"]
    url = f"/api/users/{ada.id}/profile"
    assert shop_client.get(url, headers=headers).status_code == 200  # verified, remembered

    monkeypatch.setattr(security, "time", types.SimpleNamespace(time=lambda: expires_at + 1))
    response = shop_client.get(url, headers=headers)

    assert response.status_code == 401
    assert response.json()["message"] == "token expired: log in again at POST /api/tokens"


def test_unknown_user_is_404(shop_client, shop_settings, ada):
    response = shop_client.get(
        f"/api/users/{uuid.uuid4()}/profile", headers=auth_header(shop_settings, ada.id)
    )
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


def test_user_renames_themself_and_caches_follow(
    shop_client, shop_settings, shop_session, redis_client, ada
):
    headers = auth_header(shop_settings, ada.id)
    shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)  # warm the cache

    response = shop_client.patch(
        f"/api/users/{ada.id}", json={"name": "Ada Lovelace"}, headers=headers
    )

    assert response.status_code == 200
    assert response.json() == {
        "id": str(ada.id),
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    }
    shop_session.expire_all()
    assert shop_session.get(User, ada.id).name == "Ada Lovelace"
    assert shop_session.get(User, ada.id).version == 2
    assert json.loads(redis_client.get(user_key(ada.id)))["name"] == "Ada Lovelace"
    profile = shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)
    assert profile.headers["X-Cache"] == "MISS"  # invalidated, not served stale
    assert profile.json()["user"]["name"] == "Ada Lovelace"


def test_following_invalidates_both_profiles(shop_client, shop_settings, ada, bob):
    as_ada, as_bob = auth_header(shop_settings, ada.id), auth_header(shop_settings, bob.id)
    shop_client.get(f"/api/users/{ada.id}/profile", headers=as_ada)

    assert shop_client.post(f"/api/users/{ada.id}/follow", headers=as_bob).status_code == 204
    assert (
        shop_client.post(f"/api/users/{ada.id}/follow", headers=as_bob).status_code == 204
    )  # idempotent

    stats = shop_client.get(f"/api/users/{ada.id}/profile", headers=as_ada).json()["stats"]
    assert stats["followersCount"] == 1
    bob_stats = shop_client.get(f"/api/users/{bob.id}/profile", headers=as_bob).json()["stats"]
    assert bob_stats["followingCount"] == 1
    assert shop_client.post(f"/api/users/{bob.id}/follow", headers=as_bob).status_code == 403


# -- negative security tests ----------------------------------------------------------


def test_a_user_cannot_change_someone_elses_account(
    shop_client, shop_settings, shop_session, ada, bob
):
    response = shop_client.patch(
        f"/api/users/{ada.id}", json={"name": "pwned"}, headers=auth_header(shop_settings, bob.id)
    )

    assert response.status_code == 403
    assert response.json()["error"] == "FORBIDDEN"
    shop_session.expire_all()
    assert shop_session.get(User, ada.id).name == "Ada"


@pytest.mark.parametrize(
    "extra",
    [
        {"is_admin": True},
        {"email": "evil@example.com"},
        {"password_hash": "$argon2id$forged"},
        {"version": 99},
        {"id": str(uuid.uuid4())},
    ],
    ids=lambda e: next(iter(e)),
)
def test_mass_assignment_is_rejected_and_changes_nothing(
    shop_client, shop_settings, shop_session, ada, extra
):
    response = shop_client.patch(
        f"/api/users/{ada.id}",
        json={"name": "Ada", **extra},
        headers=auth_header(shop_settings, ada.id),
    )

    assert response.status_code == 422
    assert next(iter(extra)) in {e["loc"][-1] for e in response.json()["detail"]}
    shop_session.expire_all()
    stored = shop_session.scalars(select(User).where(User.id == ada.id)).one()
    assert (stored.email, stored.is_admin, stored.version) == ("ada@example.com", False, 1)


def test_a_warm_cache_serves_profiles_through_a_database_outage(shop_client, shop_settings, ada):
    headers = auth_header(shop_settings, ada.id)
    shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)

    with database_outage(shop_settings.database_url):
        cached = shop_client.get(f"/api/users/{ada.id}/profile", headers=headers)
        cold = shop_client.get(f"/api/users/{uuid.uuid4()}/profile", headers=headers)

    assert (cached.status_code, cached.headers["X-Cache"]) == (200, "HIT")
    assert cold.status_code == 503
