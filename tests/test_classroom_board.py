"""The board's grid and its stuck rule, from progress rows and learner status (no hub:
tests/test_classroom_hub.py shows the same board served by a real hub)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("jupyterhub",
                    reason="the board is a JupyterHub service: pip install -e '.[classroom]'")

from labkit.classroom import LearnerStatus, ProgressRow
from labkit.classroom.board import build_board

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def row(learner: str, exercise: str, outcome: str, attempts: int, minutes_ago: float) -> ProgressRow:
    seen = NOW - timedelta(minutes=minutes_ago)
    return ProgressRow(learner, "00_welcome", exercise, outcome, attempts, 1.0, seen, seen)


def status(name: str, **services: str) -> LearnerStatus:
    return LearnerStatus(name, f"lkt_{name}", "", {"postgres": "ok", "rabbitmq": "ok", **services})


def test_a_learner_is_stuck_after_three_failures_of_one_check_or_ten_idle_minutes():
    board = build_board(
        [row("ada", "a", "solved", 1, 1), row("bob", "a", "wrong", 3, 1),
         row("cyd", "a", "wrong", 2, 11), row("dee", "a", "wrong", 2, 9)],
        [status(n) for n in ("ada", "bob", "cyd", "dee", "eve")], NOW)
    stuck = {learner.name: learner.stuck for learner in board.learners}
    assert stuck == {"ada": [], "bob": ["00_welcome/a failed 3 times"],
                     "cyd": ["no progress for 11 min"], "dee": [], "eve": []}


def test_the_grid_has_every_learner_every_exercise_and_each_learners_health():
    board = build_board([row("ada", "b", "solved", 2, 0), row("bob", "a", "not attempted", 1, 0)],
                        [status("ada"), status("bob", rabbitmq="DOWN: access refused")], NOW)
    assert board.exercises == ["00_welcome/a", "00_welcome/b"]
    ada, bob = board.learners
    assert (ada.cells["00_welcome/b"].outcome, ada.cells["00_welcome/b"].attempts) == ("solved", 2)
    assert "00_welcome/a" not in ada.cells  # shown as not attempted
    assert (ada.health, bob.health) == ("ok", "rabbitmq: DOWN: access refused")
    assert ada.server == "/user/ada/"
