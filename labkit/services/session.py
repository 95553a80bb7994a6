"""Services that `labkit up` keeps running for a whole workshop session.

`labkit up` starts a small daemon that owns the services and writes their URLs to
``<state dir>/up.json``; notebooks on the auto backend then use them as external.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from labkit.services.ownership import owner_alive


def up_file() -> Path:
    base = os.environ.get("LABKIT_STATE_DIR") or Path.home() / ".cache" / "labkit"
    return Path(base) / "up.json"


def read_up_state() -> dict | None:
    """The running `labkit up` session, or None (a stale file from a dead daemon is removed)."""
    path = up_file()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not owner_alive(state.get("pid", -1), state.get("started", 0.0)):
        path.unlink(missing_ok=True)
        return None
    return state


def up_urls() -> dict[str, str]:
    state = read_up_state()
    return dict(state["urls"]) if state else {}
