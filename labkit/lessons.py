"""The learner's working copy of the lessons: `make lab` opens it, never `notebooks/` itself.

JupyterLab saves outputs into whatever notebook it opens, so lessons opened in place get
dirty: `git pull` conflicts, and a learner has no clean lesson to go back to. Instead
`make lab` runs `labkit lessons copy`, which copies each lesson not yet in ``work/`` (at
the checkout's root, ignored by git) and never overwrites a copy that is already there,
so a lesson added by a `git pull` arrives on the next `make lab` and a learner's edits
stay (a copy never saved since it was copied follows its original). `labkit lessons list` shows which copies differ from their originals;
`labkit lessons reset NAME` puts an original back and keeps the learner's copy in
``work/backups/``.

The copies run as the originals do: lessons find everything through labkit (services,
the shop, Locust's files), write figures under ``out/`` beside themselves (so
``work/out/``), and labkit's project state is found from any folder of the checkout.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

WORK = "work"
BACKUPS = "backups"
# What each copy was copied from (the original's digest), to tell "the learner edited
# it" from "a `git pull` changed the original since".
MANIFEST = ".originals.json"


class LessonsError(Exception):
    """Something the learner can fix; the message says how."""


def checkout(start: Path | None = None) -> Path:
    """The nearest ancestor of `start` (the working directory) holding the lessons."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "notebooks").is_dir() and (directory / "pyproject.toml").is_file():
            return directory
    raise LessonsError(
        f"no labkit checkout here: neither {here} nor a folder above it holds notebooks/ "
        "and pyproject.toml. Run this inside your clone of the labkit repository "
        "(where `make lab` works), e.g. `cd labkit && .venv/bin/labkit lessons list`."
    )


@dataclass(frozen=True)
class Lesson:
    """One lesson: its original in ``notebooks/`` and the learner's copy in ``work/``."""

    name: str
    original: Path
    copy: Path
    # "not copied", "clean" (as the original), "run" (outputs saved, cells unchanged) or
    # "edited" (a cell's text changed)
    state: str
    original_updated: bool  # the original changed (a `git pull`) since it was copied

    @property
    def number(self) -> str:
        """``02a`` for ``02a_database_sessions``: a lesson's number, with its part's letter."""
        return self.name.split("_", 1)[0]


def lessons(root: Path, work: Path | None = None) -> list[Lesson]:
    """Every lesson of the checkout at `root`, in order, with the state of its copy in
    `work` (``root/work`` unless given: a hub copies into each learner's home)."""
    work = work or root / WORK
    copied_from = _manifest(work)
    found = []
    for original in sorted((root / "notebooks").glob("*.ipynb")):
        copy = work / original.name
        state = _state(original, copy)
        updated = state not in ("not copied", "clean") and copied_from.get(original.name) not in (
            None, _digest(original)
        )
        found.append(Lesson(original.stem, original, copy, state, updated))
    return found


def copy_new(root: Path, work: Path | None = None) -> list[Lesson]:
    """Copy each lesson that has no copy yet, and refresh copies never saved since copied.

    A copy whose bytes are still those it was copied as holds no work of the learner's,
    so when a `git pull` changed its original it takes the new one; any other copy is
    left as it is. Returns the lessons copied.
    """
    work = work or root / WORK
    work.mkdir(exist_ok=True)
    copied_as = _manifest(work)
    copied = [
        lesson for lesson in lessons(root, work)
        if lesson.state == "not copied"
        or (lesson.original_updated and _digest(lesson.copy) == copied_as[lesson.original.name])
    ]
    for lesson in copied:
        _copy(lesson)
    return copied


def select(root: Path, name: str) -> list[Lesson]:
    """The lessons `name` names: its full name (with or without ``.ipynb``), or its number;
    a lesson in parts (``02a_…``, ``02b_…``) is every part by its number (``02``), one
    part by its own (``02a``)."""
    wanted = name.removesuffix(".ipynb")
    every = lessons(root)
    matches = [lesson for lesson in every if lesson.name == wanted] or [
        lesson for lesson in every
        if lesson.number == wanted or lesson.number.rstrip("abcdefghij") == wanted
    ]
    if not matches:
        raise LessonsError(
            f"no lesson named {name!r}: give one of {', '.join(lesson.name for lesson in every)} "
            "(or its number, e.g. 03)"
        )
    return matches


def find(root: Path, name: str) -> Lesson:
    """The one lesson `name` names (see `select`)."""
    matches = select(root, name)
    if len(matches) != 1:
        raise LessonsError(
            f"{name!r} names {len(matches)} lessons, its parts: "
            f"{', '.join(lesson.name for lesson in matches)}; name one of them"
        )
    return matches[0]


def reset(root: Path, lesson: Lesson, now: datetime | None = None) -> Path | None:
    """Put the original back in place of the copy; returns the backup of the copy, if any.

    The learner's copy is moved, not deleted, to ``work/backups/NAME-YYYYmmdd-HHMMSS.ipynb``
    (a notebook JupyterLab opens), so a reset never loses work. A copy that is byte for
    byte the original needs no backup.
    """
    backup = None
    if lesson.copy.exists() and lesson.copy.read_bytes() != lesson.original.read_bytes():
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        folder = root / WORK / BACKUPS
        folder.mkdir(parents=True, exist_ok=True)
        backup = folder / f"{lesson.name}-{stamp}.ipynb"
        for n in itertools.count(2):  # two resets in one second keep both copies
            if not backup.exists():
                break
            backup = folder / f"{lesson.name}-{stamp}-{n}.ipynb"
        lesson.copy.replace(backup)
    _copy(lesson)
    return backup


def _copy(lesson: Lesson) -> None:
    shutil.copyfile(lesson.original, lesson.copy)
    work = lesson.copy.parent
    manifest = {**_manifest(work), lesson.original.name: _digest(lesson.original)}
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _manifest(work: Path) -> dict[str, str]:
    try:
        return dict(json.loads((work / MANIFEST).read_text()))
    except (OSError, ValueError):
        return {}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(original: Path, copy: Path) -> str:
    if not copy.exists():
        return "not copied"
    if copy.read_bytes() == original.read_bytes():
        return "clean"
    cells = _cells(copy)
    return "run" if cells is not None and cells == _cells(original) else "edited"


def _cells(path: Path) -> list[tuple[str, str]] | None:
    """Each cell's type and text, what a learner edits (outputs and counts left out)."""
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        return [
            (cell["cell_type"], "".join(cell["source"]) if isinstance(cell["source"], list)
             else cell["source"])
            for cell in notebook["cells"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: not the original's cells
