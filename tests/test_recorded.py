"""Recorded evidence (labkit.recorded): a lesson whose demos need Docker still shows them.

Lesson 12's demos run live where a Docker engine answers; elsewhere they show what they
measured on a machine that had one. These tests prove the recording holds every section
the lesson shows (a demo added to the lesson without re-recording fails here, not in a
learner's kernel), says when and where it was made, and that `Evidence` runs live,
records and replays as its docstring says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from labkit.recorded import RECORD_ENV, Evidence, NotRecorded, load_recording, recording_path

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SECTION = re.compile(r"""evidence\.section\(\s*["']([^"']+)["']""")


def sections_shown(notebook: Path) -> list[str]:
    cells = nbformat.read(notebook, as_version=4).cells
    return [name for c in cells if c.cell_type == "code" for name in SECTION.findall(c.source)]


LESSONS = [path for path in sorted(NOTEBOOKS.glob("*.ipynb")) if sections_shown(path)]


def test_lesson_12_shows_recorded_evidence() -> None:
    assert "12_testcontainers" in [path.stem for path in LESSONS]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_the_recording_holds_every_section_the_lesson_shows(lesson: Path) -> None:
    recording = load_recording(recording_path(lesson.stem))
    shown, held = sections_shown(lesson), set(recording["sections"])
    assert len(shown) == len(set(shown)), f"{lesson.name} shows a section twice: {shown}"
    missing, stale = set(shown) - held, held - set(shown)
    fix = "re-record it where Docker runs: bash ci/record-evidence"
    assert not missing, f"{lesson.stem}'s recording lacks {sorted(missing)}: {fix}"
    assert not stale, f"{lesson.stem}'s recording holds sections the lesson no longer shows {sorted(stale)}: {fix}"
    for name in shown:
        assert recording["sections"][name] not in (None, [], {}), f"section {name!r} is empty"
    meta = recording["recorded"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", meta.get("date", "")), meta
    assert meta.get("machine"), "a recording says which machine it was made on"


def test_a_live_section_runs_records_and_is_replayed_where_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "lesson.json"
    monkeypatch.setenv(RECORD_ENV, str(target))
    live = Evidence("lesson", None, target, {"Docker": "27.0"})
    assert live.section("waits", lambda: [{"strategy": "port open", "seconds": 1.2}]) == [
        {"strategy": "port open", "seconds": 1.2}
    ]
    assert "live" in capsys.readouterr().out

    monkeypatch.delenv(RECORD_ENV)
    replayed = Evidence("lesson", "no Docker engine answers", target)
    ran: list[str] = []
    assert replayed.section("waits", lambda: ran.append("ran")) == [
        {"strategy": "port open", "seconds": 1.2}
    ]
    assert ran == [], "where the demo cannot run, it is not run"
    label = capsys.readouterr().out
    meta = json.loads(target.read_text())["recorded"]
    for expected in ("📼 recorded", meta["date"], meta["machine"], "Docker 27.0",
                     "no Docker engine answers"):
        assert expected in label, f"{expected!r} not in {label!r}"


def test_a_section_missing_from_the_recording_says_how_to_fix_it(tmp_path: Path) -> None:
    evidence = Evidence("lesson", "no Docker", tmp_path / "none.json")
    with pytest.raises(NotRecorded, match="ci/record-evidence"):
        evidence.section("waits", lambda: None)


def test_a_live_section_must_be_data_a_recording_can_hold(tmp_path: Path) -> None:
    evidence = Evidence("lesson", None, tmp_path / "lesson.json")
    with pytest.raises(TypeError):
        evidence.section("waits", lambda: {"when": object()})
