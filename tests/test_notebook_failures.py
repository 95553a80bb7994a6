"""A notebook whose test fails must fail nbmake: the guarantee CI's green rests on.

And what a failure shows must help the one who reads it: a wrong exercise answer reads as
a short report (which check, the assertion with its values, the exercise's hint) and one
red line, and ipytest's temporary module stays out of the lesson folder and its reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

SETUP = "import labkit.notebook\nlabkit.notebook.setup()"

HINT = "double means times two: 2 * x, not 2 + x."
EXERCISE = [
    "def double(x):\n    raise NotImplementedError",
    "%%solution double\ndef double(x):\n    # BEGIN SOLUTION\n    return {body}\n    # END SOLUTION",
    f"%%check double\n# hint: {HINT}\ndef test_doubles_a_number():\n    assert double(21) == 42",
]


def lesson(tmp_path: Path, *cells: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(SETUP), *(new_code_cell(c) for c in cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    return path


def run_keeping_outputs(run_nbmake, path: Path, solutions: str = "run"):
    """Run `path` under nbmake and read back what each cell showed.

    nbmake's log has a failing cell's error only, not what cells printed; its --overwrite
    writes the outputs into the notebook (a copy in tmp_path). A pytest.ini beside it
    passes the option to nbmake's pytest only: the kernel's cells run under their own.
    """
    (path.parent / "pytest.ini").write_text("[pytest]\naddopts = --overwrite\n")
    result = run_nbmake(path, solutions)
    return result, nbformat.read(path, as_version=4)


def shown(cell: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """A cell's printed text, and its error's lines (what Jupyter shows in red)."""
    printed = "".join(o.text for o in cell.outputs if o.output_type == "stream")
    errors = [o for o in cell.outputs if o.output_type == "error"]
    return printed, [line for e in errors for line in e.traceback]


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


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
    # nbmake's log shows the cell's error only: in CI the error carries the report
    log = plain(result.stdout)
    assert "'double' is not solved yet: 1 of 1 check(s) failed" in log, log
    assert "✗ doubles a number" in log and "assert 23 == 42" in log and HINT in log, log
    assert "Traceback" not in log and "labkit/" not in log, log


VISITS = [
    # a learner's wrong answer: counts from 0, and passes a Redis client about
    "def visits(client, page):\n    return client.incr(f'visits:{page}') - 1",
    (
        "%%check visits\n# hint: INCR returns the count after it adds one.\n"
        "def test_counts_the_first_visit(redis_client):\n"
        "    assert visits(redis_client, 'home') == 1\n\n"
        "def test_pages_count_apart(redis_client):\n"
        "    visits(redis_client, 'home')\n"
        "    assert visits(redis_client, 'about') == 1\n\n"
        "def test_returns_a_number(redis_client):\n"
        "    assert isinstance(visits(redis_client, 'home'), int)"
    ),
]


def test_a_wrong_answer_reads_as_a_report_and_one_red_line(tmp_path, run_nbmake):
    result, nb = run_keeping_outputs(run_nbmake, lesson(tmp_path, *VISITS), "hide")
    assert result.returncode != 0, "a wrong answer must fail its cell, and so nbmake"
    printed, red = shown(nb.cells[-1])
    assert printed.startswith("❌ 'visits' is not solved yet: 2 of 3 check(s) failed."), printed
    # which check, the one assertion with its values, the hint written for the exercise
    assert "✗ counts the first visit\n      assert 0 == 1\n" in printed, printed
    assert "✗ pages count apart\n      assert 0 == 1\n" in printed, printed
    assert "returns a number" not in printed, "a check that passed is not a failure"
    assert "💡 Hint: INCR returns the count after it adds one." in printed, printed
    # the Redis client it was given shows as its type, not its connection pool's repr
    assert "visits(<Redis …>, 'home')" in printed, printed
    assert len(red) == 1 and plain(red[0]).startswith("ExerciseNotSolved: 'visits'"), red
    everything = printed + "\n".join(red)
    for noise in ("Traceback", "labkit/", "ConnectionPool(", "site-packages", ".py"):
        assert noise not in everything, f"{noise!r} in what the learner sees:\n{everything}"


def test_untouched_stub_is_reported_not_attempted_for_learners(tmp_path, run_nbmake):
    cells = [c.format(body="2 * x") for c in EXERCISE]
    cells.append("print('the lesson goes on')")
    result, nb = run_keeping_outputs(run_nbmake, lesson(tmp_path, *cells), "hide")
    assert result.returncode == 0, result.stdout + result.stderr
    printed, red = shown(nb.cells[-2])
    assert printed == (
        "⏳ 'double' not attempted yet: your function still raises NotImplementedError.\n"
    )
    assert red == [] and HINT not in printed


def test_a_prediction_not_made_yet_reads_as_not_attempted_and_a_wrong_one_fails(
    tmp_path, run_nbmake
):
    solution = (
        "%%solution guess\n# BEGIN SOLUTION\nprediction = 3\n# STUB\n"
        "# prediction = ...  # how many?\n# END SOLUTION"
    )
    check = (
        "%%check guess\n# hint: count the rows.\nfrom labkit.exercises import answer\n\n"
        "def test_your_prediction_matches_the_run():\n    assert answer(prediction) == 3"
    )
    cells = ["prediction = ...  # how many?", solution, check, "prediction = 4", check]
    result, nb = run_keeping_outputs(run_nbmake, lesson(tmp_path, *cells), "hide")
    assert result.returncode != 0, "the wrong prediction must fail its check"
    printed, red = shown(nb.cells[3])
    assert printed == (
        "⏳ 'guess' not attempted yet: your prediction is still `...`: replace it with your answer.\n"
    ) and not red, printed
    printed, red = shown(nb.cells[5])
    assert "✗ your prediction matches the run\n      assert 4 == 3" in printed, printed


def test_ipytest_writes_nothing_beside_the_lesson_and_reports_name_the_test(
    tmp_path, run_nbmake
):
    cells = [
        (
            "%%ipytest\nfrom pathlib import Path\n\n"
            "def test_the_cell_runs_outside_the_lesson_folder():\n"
            "    module = Path(__file__)  # the file ipytest wrote for this cell's run\n"
            "    assert module.exists() and module.name == 'cell.py'\n"
            "    assert module.parent != Path.cwd()\n"
            "    assert sorted(p.name for p in Path.cwd().iterdir()) == "
            "['lesson.ipynb', 'pytest.ini']"
        ),
        "%%ipytest\ndef test_broken():\n    assert 1 + 1 == 3",
    ]
    result, nb = run_keeping_outputs(run_nbmake, lesson(tmp_path, *cells))
    assert result.returncode != 0
    passed, _ = shown(nb.cells[1])
    assert "1 passed" in passed, passed
    failed = plain(shown(nb.cells[2])[0])
    assert "FAILED ::test_broken - assert (1 + 1) == 3" in failed, failed
    assert not re.search(r"t_[0-9a-f]{32}", failed), failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lesson.ipynb", "pytest.ini"]


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


def test_a_stub_block_becomes_the_stub_uncommented():
    from labkit.exercises import make_stub

    solution = (
        "def units(order):\n"
        "    # BEGIN SOLUTION\n"
        "    if order is None:\n"
        "        return 0\n"
        "    # STUB\n"
        "    # raise NotImplementedError('fix the bug below, then delete this line')\n"
        "    # if order is None:\n"
        "    #     pass\n"
        "    #\n"
        "    # END SOLUTION\n"
        "    return order\n"
        "# BEGIN SOLUTION\n"
        "prediction = 3\n"
        "# STUB\n"
        "# prediction = ...  # your prediction\n"
        "# END SOLUTION\n"
    )
    assert make_stub(solution) == (
        "def units(order):\n"
        "    raise NotImplementedError('fix the bug below, then delete this line')\n"
        "    if order is None:\n"
        "        pass\n"
        "\n"
        "    return order\n"
        "prediction = ...  # your prediction\n"
    )


def test_a_stub_block_of_code_not_commented_out_is_refused():
    import pytest

    from labkit.exercises import ExerciseError, make_stub

    with pytest.raises(ExerciseError, match="commented out"):
        make_stub("# BEGIN SOLUTION\nx = 1\n# STUB\nx = ...\n# END SOLUTION\n")


def test_a_prediction_left_as_ellipsis_is_not_attempted():
    import pytest

    from labkit.exercises import answer

    with pytest.raises(NotImplementedError, match="still `...`"):
        answer(...)
    assert answer(0) == 0


def test_the_hint_is_the_comment_under_the_magic_and_the_lines_that_continue_it():
    from labkit.exercises import hint_of, readable

    cell = (
        "\n# hint: claim the order first;\n#   return False if it was claimed.\n\n"
        "# a comment of the check's, not the hint\ndef test_x():\n    pass\n"
    )
    assert hint_of(cell) == "claim the order first; return False if it was claimed."
    assert hint_of("# setup for the tests below\ndef test_x():\n    pass\n") == ""
    assert readable("test_fails_on_a_broken_shop[never-notifies]") == (
        "fails on a broken shop [never-notifies]"
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
