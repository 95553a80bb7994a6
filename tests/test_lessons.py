"""The learner's working copy of the lessons (labkit.lessons, `labkit lessons …`)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from labkit import lessons


def notebook(*sources: str, outputs: list[dict] | None = None) -> str:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": outputs or [], "source": [source]} for i, source in enumerate(sources)]
    body = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(body, indent=1) + "\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout with two tiny lessons."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_first.ipynb").write_text(notebook("print('first')"))
    (tmp_path / "notebooks" / "01_second.ipynb").write_text(notebook("print('second')"))
    return tmp_path


def states(root: Path) -> dict[str, str]:
    return {lesson.name: lesson.state for lesson in lessons.lessons(root)}


def labkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "lessons", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_first_copy_copies_every_lesson_and_leaves_the_originals(root):
    copied = lessons.copy_new(root)
    assert [lesson.name for lesson in copied] == ["00_first", "01_second"]
    for name in ("00_first", "01_second"):
        work, original = root / "work" / f"{name}.ipynb", root / "notebooks" / f"{name}.ipynb"
        assert work.read_bytes() == original.read_bytes()
    assert states(root) == {"00_first": "clean", "01_second": "clean"}


def test_a_second_copy_keeps_the_learners_edit_and_adds_a_new_lesson(root):
    lessons.copy_new(root)
    edited = notebook("print('my answer')")
    (root / "work" / "00_first.ipynb").write_text(edited)
    (root / "notebooks" / "02_third.ipynb").write_text(notebook("print('third')"))  # git pull

    copied = lessons.copy_new(root)

    assert [lesson.name for lesson in copied] == ["02_third"]
    assert (root / "work" / "00_first.ipynb").read_text() == edited
    assert states(root) == {"00_first": "edited", "01_second": "clean", "02_third": "clean"}


def test_saved_outputs_are_run_not_edited(root):
    lessons.copy_new(root)
    output = {"output_type": "stream", "name": "stdout", "text": ["first\n"]}
    (root / "work" / "00_first.ipynb").write_text(notebook("print('first')", outputs=[output]))
    assert states(root)["00_first"] == "run"


def test_a_pulled_original_replaces_an_unsaved_copy_but_not_an_edited_one(root):
    lessons.copy_new(root)
    (root / "work" / "01_second.ipynb").write_text(notebook("print('mine')"))
    for name in ("00_first", "01_second"):
        (root / "notebooks" / f"{name}.ipynb").write_text(notebook("print('new version')"))

    assert [lesson.name for lesson in lessons.copy_new(root)] == ["00_first"]

    assert states(root) == {"00_first": "clean", "01_second": "edited"}
    second = lessons.find(root, "01")
    assert second.original_updated
    assert (root / "work" / "01_second.ipynb").read_text() == notebook("print('mine')")


def test_reset_restores_the_original_and_keeps_the_copy_as_a_backup(root):
    lessons.copy_new(root)
    edited = notebook("print('my answer')")
    (root / "work" / "00_first.ipynb").write_text(edited)

    backup = lessons.reset(root, lessons.find(root, "00_first.ipynb"), datetime(2026, 1, 2, 3, 4, 5))

    assert backup == root / "work" / "backups" / "00_first-20260102-030405.ipynb"
    assert backup.read_text() == edited
    assert states(root)["00_first"] == "clean"
    assert lessons.reset(root, lessons.find(root, "00"), datetime(2026, 1, 2, 3, 4, 6)) is None
    (root / "work" / "00_first.ipynb").write_text(notebook("print('again')"))
    again = lessons.reset(root, lessons.find(root, "00"), datetime(2026, 1, 2, 3, 4, 5))
    assert again is not None and again.name == "00_first-20260102-030405-2.ipynb"
    assert backup.read_text() == edited  # the first backup is kept


def test_a_lesson_in_parts_is_every_part_by_its_number_and_one_by_its_own(root):
    for part in ("02a_third", "02b_fourth"):
        (root / "notebooks" / f"{part}.ipynb").write_text(notebook(f"print('{part}')"))
    assert [lesson.name for lesson in lessons.select(root, "02")] == ["02a_third", "02b_fourth"]
    assert lessons.find(root, "02b").name == "02b_fourth"
    with pytest.raises(lessons.LessonsError, match="its parts: 02a_third, 02b_fourth"):
        lessons.find(root, "02")


def test_an_unknown_lesson_names_the_known_ones(root):
    with pytest.raises(lessons.LessonsError, match="00_first, 01_second"):
        lessons.find(root, "07")


def test_the_cli_lists_resets_and_says_what_to_do_outside_a_checkout(root, tmp_path_factory):
    assert labkit("copy", cwd=root).returncode == 0
    (root / "work" / "01_second.ipynb").write_text(notebook("print('my answer')"))
    inside = root / "work"  # the copy's own folder: the checkout is found above it

    listed = labkit("list", cwd=inside)
    assert listed.returncode == 0, listed.stderr
    rows = dict(line.split(maxsplit=1) for line in listed.stdout.splitlines()[1:])
    assert rows == {"00_first": "clean", "01_second": "edited"}

    no_name = labkit("reset", cwd=root)
    assert no_name.returncode == 2 and "01_second  edited" in no_name.stdout
    assert "--all" in no_name.stdout

    reset = labkit("reset", "--all", cwd=root)
    assert reset.returncode == 0, reset.stderr
    assert "01_second: restored" in reset.stdout and "00_first" not in reset.stdout
    (backup,) = (root / "work" / "backups").iterdir()
    assert backup.name.startswith("01_second-")
    assert backup.read_text() == notebook("print('my answer')")
    assert states(root) == {"00_first": "clean", "01_second": "clean"}

    elsewhere = tmp_path_factory.mktemp("not-a-checkout")
    outside = labkit("list", cwd=elsewhere)
    assert outside.returncode == 2
    assert "no labkit checkout here" in outside.stderr and "Run this inside" in outside.stderr
    assert "Traceback" not in outside.stderr


def test_the_repository_ignores_the_working_copy():
    repo = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(["git", "check-ignore", "-q", "work/00_welcome.ipynb"], cwd=repo,
                             capture_output=True, check=False)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, "work/ must be in .gitignore: the copies are the learner's"


def test_jupyterlab_reads_the_kits_setting_that_turns_the_news_pop_up_off(monkeypatch):
    """`make lab` puts jupyter/ first on JUPYTER_CONFIG_PATH; JupyterLab 4 asks about news
    only while `fetchNews` is "none", and reads this file as the setting's default."""
    pytest.importorskip("jupyterlab")
    from jupyter_server.services.config.manager import ConfigManager

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(repo / "jupyter"))
    plugin = "@jupyterlab/apputils-extension:notification"
    # what jupyterlab_server does to find default_setting_overrides
    overrides = ConfigManager(config_dir_name="labconfig").get("default_setting_overrides")
    assert overrides[plugin]["fetchNews"] == "false"
    schema = Path(sys.prefix, "share/jupyter/lab/schemas/@jupyterlab/apputils-extension",
                  "notification.json")
    choices = [c["const"] for c in json.loads(schema.read_text())["properties"]["fetchNews"]["oneOf"]]
    assert "false" in choices and "none" in choices, choices
