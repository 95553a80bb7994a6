"""Posts and comments: writing them, and reading a user's whole graph in few queries."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from labkit.shop.data.models import Comment, OutboxEvent, Post, User
from labkit.shop.infra.messaging import record_event
from labkit.shop.settings import ShopSettings


def create_post(
    session: Session,
    settings: ShopSettings,
    *,
    author_id: uuid.UUID,
    title: str,
    content: str,
    tags: list[str],
) -> tuple[Post, OutboxEvent]:
    """Add the post and its ``new_post`` notification to the session (the caller commits)."""
    post = Post(id=uuid.uuid4(), author_id=author_id, title=title, content=content, tags=tags)
    session.add(post)
    notification = record_event(
        session,
        aggregate="post",
        aggregate_id=post.id,
        event_type="new_post",
        destination=settings.notifications_queue,
        payload={"type": "new_post", "postId": str(post.id), "authorId": str(author_id)},
    )
    return post, notification


def load_user_graph(session: Session, user_id: uuid.UUID) -> User | None:
    """A user with posts → comments → authors, and followers, all loaded up front.

    selectinload issues one query per relationship level (five in all), however many
    posts and comments there are: no N+1, and nothing lazy-loads after the session
    closes.
    """
    return session.scalars(
        select(User)
        .where(User.id == user_id)
        .options(
            selectinload(User.posts).selectinload(Post.comments).selectinload(Comment.author),
            selectinload(User.followers),
        )
    ).one_or_none()
