"""The room's progress: one row per learner and exercise, in the room's PostgreSQL.

A database of its own (``labkit_classroom``) beside the learners' tenants, reached with
the trainer's admin access only: no learner role may connect to it (CONNECT is revoked
from PUBLIC), so progress is written through the board, which knows the learner from
their token, never by a learner directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labkit import services
from labkit.classroom.reporting import OUTCOMES
from labkit.services import TenantAdmin

DATABASE = "labkit_classroom"
SCHEMA = """
create table if not exists progress (
    room text not null,
    learner text not null,
    lesson text not null,
    exercise text not null,
    outcome text not null check (outcome in ('solved', 'wrong', 'not attempted')),
    attempts integer not null default 0,
    seconds double precision,
    first_seen timestamptz not null default now(),
    last_seen timestamptz not null default now(),
    primary key (room, learner, lesson, exercise)
)
"""
# An attempt is a check run on an answer: a stub still untouched is no attempt.
UPSERT = """
insert into progress (room, learner, lesson, exercise, outcome, attempts, seconds)
values (%(room)s, %(learner)s, %(lesson)s, %(exercise)s, %(outcome)s,
        case when %(outcome)s = 'not attempted' then 0 else %(attempts)s end, %(seconds)s)
on conflict (room, learner, lesson, exercise) do update set
    outcome = excluded.outcome,
    attempts = progress.attempts + excluded.attempts,
    seconds = coalesce(excluded.seconds, progress.seconds),
    last_seen = now()
"""
MAX_TEXT = 200  # a lesson's or exercise's name, as the board accepts it


@dataclass(frozen=True)
class ProgressRow:
    """Where one learner stands on one exercise."""

    learner: str
    lesson: str
    exercise: str
    outcome: str
    attempts: int
    seconds: float | None
    first_seen: datetime
    last_seen: datetime


def _connect(admin: TenantAdmin, database: str) -> Any:
    import psycopg

    endpoint = services.specs()["postgres"].from_url(admin.url("postgres"))
    try:
        return psycopg.connect(host=endpoint.host, port=endpoint.port, user=endpoint.username,
                               password=endpoint.password, dbname=database, connect_timeout=5,
                               autocommit=True)
    except psycopg.OperationalError as exc:
        raise services.ServiceError(
            f"the classroom's progress lives in database {database!r} at {endpoint.safe_url} "
            f"({services.ADMIN_ENV['postgres']}), which did not answer: {str(exc).strip()}"
        ) from None


_READY: set[str] = set()


def _ensure_database(admin: TenantAdmin) -> None:
    import psycopg
    from psycopg import sql

    key = admin.url("postgres")
    if key in _READY:
        return
    with _connect(admin, services.specs()["postgres"].from_url(key).database or "postgres") as conn:
        if not conn.execute("select 1 from pg_database where datname = %s",
                            (DATABASE,)).fetchone():
            try:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another trainer command made it meanwhile
            conn.execute(sql.SQL("revoke all on database {} from public")
                         .format(sql.Identifier(DATABASE)))
    with _connect(admin, DATABASE) as conn:
        conn.execute(SCHEMA)
    _READY.add(key)


def record(admin: TenantAdmin, room: str, learner: str, lesson: str, exercise: str,
           outcome: str, attempts: int = 1, seconds: float | None = None) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"an outcome is one of {', '.join(OUTCOMES)}; got {outcome!r}")
    for what, text in (("lesson", lesson), ("exercise", exercise)):
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
            raise ValueError(f"a {what} is a name of 1-{MAX_TEXT} characters; got {text!r}")
    if attempts < 0:
        raise ValueError(f"attempts counts checks run, so it is 0 or more; got {attempts}")
    _ensure_database(admin)
    with _connect(admin, DATABASE) as conn:
        conn.execute(UPSERT, {"room": room, "learner": learner, "lesson": lesson,
                              "exercise": exercise, "outcome": outcome, "attempts": attempts,
                              "seconds": seconds})


def rows(admin: TenantAdmin, room: str) -> list[ProgressRow]:
    _ensure_database(admin)
    with _connect(admin, DATABASE) as conn:
        found = conn.execute(
            "select learner, lesson, exercise, outcome, attempts, seconds, first_seen, "
            "last_seen from progress where room = %s order by learner, lesson, exercise",
            (room,)).fetchall()
    return [ProgressRow(*row) for row in found]
