"""A notebook whose test fails must fail nbmake: the guarantee CI's green rests on."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

SETUP = "import labkit.notebook\nlabkit.notebook.setup()"

EXERCISE = [
    "def double(x):\n    raise NotImplementedError",
    "%%solution double\ndef double(x):\n    # BEGIN SOLUTION\n    return {body}\n    # END SOLUTION",
    "%%check double\ndef test_double():\n    assert double(21) == 42",
]


def lesson(tmp_path: Path, *cells: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(SETUP), *(new_code_cell(c) for c in cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    return path


def test_passing_ipytest_cell_passes(tmp_path, run_nbmake):
    result = run_nbmake(lesson(tmp_path, "%%ipytest\ndef test_ok():\n    assert 1 + 1 == 2"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_failing_ipytest_cell_fails_nbmake(tmp_path, run_nbmake):
    result = run_nbmake(lesson(tmp_path, "%%ipytest\ndef test_broken():\n    assert 1 + 1 == 3"))
    assert result.returncode != 0
    assert "test_broken" in result.stdout


def test_correct_solution_passes_its_check(tmp_path, run_nbmake):
    cells = [c.format(body="2 * x") for c in EXERCISE]
    result = run_nbmake(lesson(tmp_path, *cells))
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_solution_fails_its_check_and_nbmake(tmp_path, run_nbmake):
    cells = [c.format(body="2 + x") for c in EXERCISE]
    result = run_nbmake(lesson(tmp_path, *cells))
    assert result.returncode != 0
    assert "not solved yet" in result.stdout


def test_untouched_stub_is_reported_not_attempted_for_learners(tmp_path, run_nbmake):
    cells = [c.format(body="2 * x") for c in EXERCISE]
    cells.append("print('the lesson goes on')")
    result = run_nbmake(lesson(tmp_path, *cells), "hide")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_check_whose_tests_all_skip_says_why_and_passes(tmp_path, run_nbmake):
    cells = [c.format(body="2 * x") for c in EXERCISE]
    cells[2] = (
        "%%check double\nimport pytest\n\n"
        "@pytest.mark.skipif(True, reason='no Docker engine here')\n"
        "def test_double():\n    assert double(21) == 42"
    )
    result = run_nbmake(lesson(tmp_path, *cells))
    assert result.returncode == 0, result.stdout + result.stderr


def test_stub_is_made_from_the_solution():
    from labkit.exercises import make_stub

    solution = EXERCISE[1].format(body="2 * x").split("\n", 1)[1]
    assert make_stub(solution) == (
        'def double(x):\n    raise NotImplementedError("your code here")\n'
    )


def test_run_expecting_failure_proves_a_test_catches_the_bug(tmp_path, run_nbmake):
    cells = [
        "from labkit.notebook import run_expecting_failure\nanswer = 41",
        "%%ipytest\ndef test_answer():\n    assert answer == 41",
        (
            "answer = 42\ncaught = run_expecting_failure(because='the wrong answer')\n"
            "assert caught and 'test_answer' in caught[0]"
        ),
        (
            "answer = 41\ntry:\n    run_expecting_failure(because='nothing')\n"
            "except AssertionError as exc:\n    assert 'should have caught nothing' in str(exc)\n"
            "else:\n    raise RuntimeError('a passing run must not count as caught')"
        ),
    ]
    result = run_nbmake(lesson(tmp_path, *cells))
    assert result.returncode == 0, result.stdout + result.stderr
