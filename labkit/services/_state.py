"""Where labkit keeps its state: per project, readable by its owner only.

State is what `labkit up` writes (``up.json``: the daemon and its URLs), what local
servers record for the sweep (``instances/``), the room a learner joined
(``joined.json``) and a trainer's rooms (``classroom/``). It lives in LABKIT_STATE_DIR when set,
else in ``.labkit/`` at the root of the project the working directory is in (the
nearest ancestor holding ``pyproject.toml`` or ``.git``), so `labkit up` in one
checkout never redirects the notebooks or tests of another. Outside any project it
lives in ``~/.cache/labkit/dirs/<hash of the directory>``. Directories are 0700 and
files 0600: they hold passwords.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from labkit.services._base import owner_alive

STATE_ENV = "LABKIT_STATE_DIR"
PROJECT_MARKERS = ("pyproject.toml", ".git")
PROJECT_STATE = ".labkit"
JOINED = "joined.json"  # the room a learner joined (`labkit join`)


def project_root(start: Path | None = None) -> Path | None:
    """The nearest ancestor of `start` (the working directory) that is a project, or None."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return None


def state_path() -> Path:
    """Where this project's state directory is, made or not."""
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    root = project_root()
    if root is not None:
        return root / PROJECT_STATE
    key = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "labkit" / "dirs" / key


def state_dir() -> Path:
    """This project's state directory, created private (0700) on first use."""
    path = state_path()
    _private_dir(path)
    ignore = path / ".gitignore"
    if path.name == PROJECT_STATE and not ignore.exists():
        # Like .pytest_cache: the folder hides itself from git in any project it lands in.
        write_private(ignore, "# written by labkit: its state (passwords) stays out of git\n*\n")
    return path


def instances_dir() -> Path:
    """Where local servers are recorded so that a dead owner's can be swept."""
    path = state_dir() / "instances"
    _private_dir(path)
    return path


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        path.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def up_file() -> Path:
    return state_dir() / "up.json"


def write_up_state(pid: int, started: float, urls: dict[str, str],
                   admin: dict[str, str] | None = None, private: list[str] | None = None) -> None:
    """Record the `labkit up` daemon and its servers (0600: the URLs hold passwords).

    `urls` are the servers as their owner sees them (`labkit env` prints them); `admin`
    holds the admin URLs that make every process of this project a tenant of them;
    `private` names the services each process gets a private server of instead (Redis:
    lessons write unprefixed keys, which an ACL tenant may not).
    """
    write_private(up_file(), json.dumps({"pid": pid, "started": started, "urls": urls,
                                         "admin": admin or {}, "private": private or []}))


def read_up_state() -> dict[str, Any] | None:
    """The running `labkit up` session, or None (a stale file from a dead daemon is removed)."""
    path = up_file()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not owner_alive(state.get("pid", -1), state.get("started", 0.0)):
        path.unlink(missing_ok=True)
        return None
    return state


def up_urls() -> dict[str, str]:
    state = read_up_state()
    return dict(state["urls"]) if state else {}


def up_admin() -> dict[str, str]:
    """Admin URLs of the servers `labkit up` shares with this project's processes."""
    state = read_up_state()
    return dict(state.get("admin", {})) if state else {}


def up_private() -> list[str]:
    """Services of which `labkit up` gives each process a private server (Redis)."""
    state = read_up_state()
    return list(state.get("private", [])) if state else []


def write_joined(room: str, learner: str, env: dict[str, str]) -> None:
    """Record the room this project joined (`labkit join`): the learner's own URLs and
    board token, 0600. Every labkit process of the project then uses them."""
    write_private(state_dir() / JOINED, json.dumps({"room": room, "learner": learner, "env": env}))


def read_joined() -> dict[str, Any] | None:
    """The room this project joined ({"room", "learner", "env"}), or None."""
    try:
        # state_path, not state_dir: reading creates no directory where nothing was joined
        joined: dict[str, Any] = json.loads((state_path() / JOINED).read_text())
    except (OSError, ValueError):
        return None
    return joined


def forget_joined() -> bool:
    """Forget the room this project joined (`labkit join --leave`); True if there was one."""
    path = state_path() / JOINED
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def apply_joined() -> None:
    """Put a joined room's variables into this process's environment, under those set
    explicitly: a kernel of a learner who ran `labkit join` uses the room's servers as
    their own, with no setting, and one variable set by hand still wins."""
    joined = read_joined()
    for variable, value in (joined or {}).get("env", {}).items():
        os.environ.setdefault(variable, value)
