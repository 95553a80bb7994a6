"""Users: sign-up, login, profiles, follows. Plain functions over a Session.

The HTTP and GraphQL layers call these and decide on status codes; side effects
outside PostgreSQL (cache, broker) happen in the layers, after the commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from labkit.shop.data.models import Comment, OutboxEvent, Post, User, followers_table
from labkit.shop.domain.schemas import UserCreate
from labkit.shop.domain.security import decoy_hash, password_hasher, verify_password
from labkit.shop.infra.messaging import record_event
from labkit.shop.settings import ShopSettings

RECENT_ACTIVITY_LIMIT = 10


def public_fields(user: User) -> dict[str, Any]:
    """What the API and the cache show of a user: never the hash, admin flag or version."""
    return {"id": str(user.id), "email": user.email, "name": user.name}


def create_user(
    session: Session, settings: ShopSettings, data: UserCreate
) -> tuple[User, OutboxEvent]:
    """Add the user and its welcome email to the session (the caller commits)."""
    user = User(
        id=uuid.uuid4(),
        email=str(data.email),
        name=data.name,
        password_hash=password_hasher(settings.password_hash_profile).hash(data.password),
    )
    session.add(user)
    email = record_event(
        session,
        aggregate="user",
        aggregate_id=user.id,
        event_type="welcome_email",
        destination=settings.email_queue,
        payload={"type": "welcome_email", "to": user.email, "name": user.name},
    )
    return user, email


def email_taken(session: Session, email: str) -> bool:
    return (
        session.scalar(select(User.id).where(func.lower(User.email) == email.lower())) is not None
    )


def authenticate(
    session: Session, settings: ShopSettings, email: str, password: str
) -> User | None:
    profile = settings.password_hash_profile
    user = session.scalars(
        select(User).where(func.lower(User.email) == email.lower())
    ).one_or_none()
    if user is None:
        verify_password(profile, decoy_hash(profile), password)
        return None
    return user if verify_password(profile, user.password_hash, password) else None


def build_profile(session: Session, user: User) -> dict[str, Any]:
    """The full profile (email included): user, counts, and the latest activity."""
    posts_count = session.scalar(select(func.count()).where(Post.author_id == user.id))
    followers_count = session.scalar(
        select(func.count())
        .select_from(followers_table)
        .where(followers_table.c.followed_id == user.id)
    )
    following_count = session.scalar(
        select(func.count())
        .select_from(followers_table)
        .where(followers_table.c.follower_id == user.id)
    )
    activity = union_all(
        select(literal("post_created").label("type"), Post.created_at.label("at")).where(
            Post.author_id == user.id
        ),
        select(literal("comment_created").label("type"), Comment.created_at.label("at")).where(
            Comment.author_id == user.id
        ),
        select(
            literal("started_following").label("type"), followers_table.c.created_at.label("at")
        ).where(followers_table.c.follower_id == user.id),
    ).subquery()
    recent = session.execute(
        select(activity.c.type, activity.c.at)
        .order_by(activity.c.at.desc())
        .limit(RECENT_ACTIVITY_LIMIT)
    )
    return {
        "user": public_fields(user),
        "stats": {
            "postsCount": posts_count,
            "followersCount": followers_count,
            "followingCount": following_count,
        },
        "recentActivity": [{"type": row.type, "timestamp": row.at.isoformat()} for row in recent],
    }


def for_viewer(profile: dict[str, Any], viewer_id: uuid.UUID) -> dict[str, Any]:
    """The profile as `viewer_id` may see it: the email only for its owner."""
    if profile["user"]["id"] == str(viewer_id):
        return profile
    user = {k: v for k, v in profile["user"].items() if k != "email"}
    return {**profile, "user": user}


def follow(session: Session, follower_id: uuid.UUID, followed_id: uuid.UUID) -> None:
    """Idempotent: following someone twice is the same as once."""
    session.execute(
        pg_insert(followers_table)
        .values(follower_id=follower_id, followed_id=followed_id)
        .on_conflict_do_nothing()
    )
