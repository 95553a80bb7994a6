"""labkit.shop.testing.graphql, on the live shop: the author lesson 06 measures with."""

from __future__ import annotations

from sqlalchemy import func, select

from labkit.shop.data import Comment, Post, User
from labkit.shop.testing import add_user
from labkit.shop.testing.graphql import author_with_posts


def test_an_author_with_posts_starts_from_empty_tables(shop_app, shop_session):
    add_user(shop_session, name="Left over")  # gone once the author is arranged
    shop = shop_app.state.shop

    author_id = author_with_posts(shop, posts=3, readers=2)

    with shop.sessions() as session:
        author = session.get(User, author_id)
        assert author is not None and author.name == "Ada"
        assert session.scalar(select(func.count()).select_from(User)) == 3
        assert session.scalar(select(func.count()).select_from(Post)) == 3
        comments = session.scalars(select(Comment)).all()
    assert len(comments) == 6
    assert {c.author_id for c in comments}.isdisjoint({author_id})
