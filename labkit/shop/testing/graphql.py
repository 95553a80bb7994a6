"""Data for lesson 06's GraphQL measurements: an author whose posts grow, on the live shop.

    >>> from labkit.shop.testing.graphql import author_with_posts
    >>> author_id = author_with_posts(shop, posts=20)   # 20 posts, 2 comments on each

A query-count demo measures one GraphQL request per size of data; each size starts from
empty tables, so the counts compare like with like.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from labkit.shop.testing.helpers import add_comment, add_post, add_user, reset_shop_data

if TYPE_CHECKING:
    from labkit.shop.app.container import Shop


def author_with_posts(shop: Shop, posts: int, readers: int = 2) -> uuid.UUID:
    """Empty the shop's tables, then add an author with `posts` posts, each commented once
    by each of `readers` other users; return the author's id."""
    reset_shop_data(shop.engine)
    with shop.sessions() as session:
        author = add_user(session, name="Ada")
        commenters = [add_user(session, name=f"Reader {n}") for n in range(readers)]
        for n in range(posts):
            post = add_post(session, author, title=f"post {n}")
            for reader in commenters:
                add_comment(session, post, reader)
        return author.id
