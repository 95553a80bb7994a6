"""Full-text search over posts, backed by PostgreSQL's tsvector and a GIN index.

``posts.search_vector`` is a generated column (title weighted above content), so a
post is searchable the moment its transaction commits: there is no separate index
to update, and nothing to get out of step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labkit.shop.data.models import Post


@dataclass(frozen=True)
class Hit:
    id: uuid.UUID
    title: str
    rank: float
    type: str = "post"


def search_posts(session: Session, query: str, limit: int = 20) -> list[Hit]:
    """Posts matching `query` (web-search syntax: words, "phrases", -exclusions), best first."""
    # websearch_to_tsquery never raises on user input, unlike to_tsquery.
    tsquery = func.websearch_to_tsquery("english", query)
    rank = func.ts_rank(Post.search_vector, tsquery).label("rank")
    rows = session.execute(
        select(Post.id, Post.title, rank)
        .where(Post.search_vector.op("@@")(tsquery))
        .order_by(rank.desc(), Post.created_at.desc())
        .limit(limit)
    )
    return [Hit(id=row.id, title=row.title, rank=float(row.rank)) for row in rows]
