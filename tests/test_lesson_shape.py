"""The shape of a lesson a learner does, not only reads (issue #9).

Each lesson opens with what it takes and what it gives: a title, a time estimate at
workshop pace (45 minutes at most: longer lessons are split into parts), prerequisites,
and 3-5 objectives, each a thing the learner will be able to do. It ends with a recap and
where the lesson's ideas show up in real projects. It is thin: a setup cell of at most 10
lines, no code cell over 25 lines but solutions and checks (what a learner need not read
lives in labkit behind a public name), and no reaching into private attributes. It gives
practice: an exercise at least every 15 minutes, 45 or more across the kit.

The opening cell reads::

    # 02a · Databases, part 1: sessions and transactions

    **Time:** about 40 minutes · **Prerequisites:** lesson 01

    **You will be able to:**
    - …three to five things, each starting with a verb…
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
MOST_MINUTES = 45
MOST_LINES, MOST_SETUP_LINES = 25, 10
MINUTES_PER_EXERCISE_AT_MOST = 15
EXERCISES_IN_THE_KIT = 45
# How long a lesson takes at workshop pace, estimated from what it holds: prose read with
# care (100 words a minute), a code cell run and its output read (30 s), an exercise done
# (5 min). A declared time far below the estimate is a lesson that will overrun.
WORDS_PER_MINUTE, MINUTES_PER_CODE_CELL, MINUTES_PER_EXERCISE = 100, 0.5, 5

TITLE = re.compile(r"^# (\d\d[a-z]?) · \S")
TIME = re.compile(r"\*\*Time:\*\* about (\d+) minutes")
PREREQUISITES = re.compile(r"\*\*Prerequisites:\*\* \S")
OBJECTIVES = re.compile(r"\*\*You will be able to:\*\*\n((?:- .+\n?)+)")
RECAP = re.compile(r"^## Recap\b", re.MULTILINE)
REAL_PROJECTS = re.compile(r"^## (Where this shows up )?[Ii]n real projects\b", re.MULTILINE)

def cells_of(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def is_exercise_machinery(cell: nbformat.NotebookNode) -> bool:
    return cell.source.startswith(("%%solution", "%%check"))


def checks(cells: list[nbformat.NotebookNode]) -> int:
    return sum(c.cell_type == "code" and c.source.startswith("%%check") for c in cells)


def estimated_minutes(cells: list[nbformat.NotebookNode]) -> float:
    words = sum(len(c.source.split()) for c in cells if c.cell_type == "markdown")
    code = sum(c.cell_type == "code" and not is_exercise_machinery(c) for c in cells)
    return (
        words / WORDS_PER_MINUTE + code * MINUTES_PER_CODE_CELL
        + checks(cells) * MINUTES_PER_EXERCISE
    )


def opening_problems(cells: list[nbformat.NotebookNode], stem: str) -> list[str]:
    opening = cells[0]
    if opening.cell_type != "markdown":
        return ["open with a markdown cell"]
    text, problems = opening.source, []
    title = TITLE.match(text)
    if not (title and stem.startswith(title[1])):
        problems.append(f"the first line is '# {stem.split('_')[0]} · Title'")
    if not TIME.search(text):
        problems.append("say '**Time:** about N minutes' in the opening cell")
    if not PREREQUISITES.search(text):
        problems.append("say '**Prerequisites:** …' in the opening cell")
    objectives = OBJECTIVES.search(text)
    if not objectives:
        problems.append("list objectives under '**You will be able to:**'")
    elif not 3 <= len(objectives[1].strip().splitlines()) <= 5:
        problems.append(f"3-5 objectives, not {len(objectives[1].strip().splitlines())}")
    return problems


def closing_problems(cells: list[nbformat.NotebookNode]) -> list[str]:
    closing = "\n".join(c.source for c in cells[-3:] if c.cell_type == "markdown")
    problems = []
    if not RECAP.search(closing):
        problems.append("end with a '## Recap'")
    if not REAL_PROJECTS.search(closing):
        problems.append("end with '## Where this shows up in real projects'")
    return problems


def size_problems(cells: list[nbformat.NotebookNode]) -> list[str]:
    match = TIME.search(cells[0].source) if cells[0].cell_type == "markdown" else None
    if not match:
        return []  # reported by opening_problems
    declared, estimated, problems = int(match[1]), estimated_minutes(cells), []
    if declared > MOST_MINUTES:
        problems.append(f"{declared} min is over {MOST_MINUTES}: split it into parts")
    if estimated > MOST_MINUTES:
        problems.append(
            f"estimated {estimated:.0f} min at workshop pace (over {MOST_MINUTES}): "
            "split it into parts, or cut prose"
        )
    if declared < estimated - 10:
        problems.append(f"says {declared} min, but its content takes about {estimated:.0f}")
    needed = math.ceil(declared / MINUTES_PER_EXERCISE_AT_MOST)
    if checks(cells) < needed:
        problems.append(
            f"{checks(cells)} exercise(s) in {declared} min: at least {needed} "
            f"(one every {MINUTES_PER_EXERCISE_AT_MOST} min)"
        )
    return problems


def code_problems(cells: list[nbformat.NotebookNode]) -> list[str]:
    code = [c for c in cells if c.cell_type == "code"]
    problems = []
    setup_lines = len(code[0].source.splitlines())
    if setup_lines > MOST_SETUP_LINES:
        problems.append(f"the setup cell has {setup_lines} lines (at most {MOST_SETUP_LINES})")
    long = [
        f"code cell {i} ({len(c.source.splitlines())} lines)"
        for i, c in enumerate(code)
        if not is_exercise_machinery(c) and len(c.source.splitlines()) > MOST_LINES
    ]
    if long:
        problems.append(
            f"over {MOST_LINES} lines: {', '.join(long)}; move what a learner need not read "
            "into labkit behind a public name"
        )
    private = [f"code cell {i}: {n}" for i, c in enumerate(code) for n in private_names(c.source)]
    if private:
        problems.append(f"private names a learner would copy: {', '.join(private)}")
    return problems


def private_names(source: str) -> list[str]:
    """Attributes and imported names starting with one underscore (`obj._x`, `import _x`)."""
    python = "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return []  # an exercise stub with `...`-holes: nbmake runs it anyway
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names += [*(node.module or "").split("."), *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names += [part for a in node.names for part in a.name.split(".")]
    return [n for n in names if n.startswith("_") and not n.startswith("__")]


def problems_of(path: Path) -> list[str]:
    cells = cells_of(path)
    return [
        *opening_problems(cells, path.stem), *closing_problems(cells),
        *size_problems(cells), *code_problems(cells),
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_has_the_shape_of_practice(path: Path) -> None:
    problems = problems_of(path)
    assert not problems, f"{path.name}:\n- " + "\n- ".join(problems)


def test_the_kit_has_45_exercises_or_more() -> None:
    count = sum(checks(cells_of(path)) for path in NOTEBOOKS)
    assert count >= EXERCISES_IN_THE_KIT, f"{count} exercises in the kit, not {EXERCISES_IN_THE_KIT}"



def test_the_shape_rules_catch_a_bare_lesson() -> None:
    """The rules can fail: a lesson with none of the parts gets a problem for each."""
    bare = [
        nbformat.v4.new_markdown_cell("# A lesson\n\nSome words."),
        nbformat.v4.new_code_cell("\n".join(["import labkit.notebook"] * 11)),
        nbformat.v4.new_code_cell("\n".join(f"x{i} = obj._private" for i in range(26))),
        nbformat.v4.new_markdown_cell("The end."),
    ]
    found = " | ".join(
        [*opening_problems(bare, "07_bare"), *closing_problems(bare), *code_problems(bare)]
    )
    for expected in ("# 07 · Title", "**Time:**", "**Prerequisites:**", "You will be able to",
                     "Recap", "real projects", "setup cell has 11 lines", "over 25 lines",
                     "code cell 1: _private"):
        assert expected in found, f"{expected!r} not in {found}"
    long = [nbformat.v4.new_markdown_cell("**Time:** about 60 minutes " + "word " * 5000)]
    sized = " | ".join(size_problems(long))
    for expected in ("60 min is over 45", "estimated 50 min", "0 exercise(s) in 60 min"):
        assert expected in sized, f"{expected!r} not in {sized}"
