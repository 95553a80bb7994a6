"""A classroom: learners as tenants of the room's shared servers, and their progress.

    >>> from labkit.classroom import Classroom
    >>> room = Classroom.from_env()            # the room's servers: LABKIT_*_ADMIN_URL or `labkit up`
    >>> alice = room.provision("alice")        # idempotent; alice.env holds her LABKIT_*_URL
    >>> room.record("alice", "02a", "count_orders", "solved")
    >>> room.progress()                        # one row per learner and exercise

A layer above `labkit.services`: it uses the kit's tenants, never the pytest plugin,
the load bench or the shop. A learner's kernel reports each `%%check` to the board
with `report` (in `labkit.classroom.reporting`, which `labkit.exercises` calls).
"""

from labkit.classroom._join import join_token, joined, leave, read_join_token, save_join
from labkit.classroom._progress import ProgressRow
from labkit.classroom._room import (
    Classroom,
    ClassroomError,
    Learner,
    LearnerStatus,
    RosterError,
    read_roster,
    tenant_name,
    validate_name,
)
from labkit.classroom.reporting import report

__all__ = [
    "Classroom",
    "ClassroomError",
    "Learner",
    "LearnerStatus",
    "ProgressRow",
    "RosterError",
    "join_token",
    "joined",
    "leave",
    "read_join_token",
    "read_roster",
    "report",
    "save_join",
    "tenant_name",
    "validate_name",
]
