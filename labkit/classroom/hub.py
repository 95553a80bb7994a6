"""JupyterHub glue: each learner's server starts with their tenant and a copy of the lessons.

`configure(c)` in a ``jupyterhub_config.py`` (see ``classroom/jupyterhub_config.py``) sets
three things on the hub:

- a ``pre_spawn_hook`` that provisions the hub user as a learner of the room
  (`Classroom.provision`, idempotent: a restarted server keeps its data) and gives the
  single-user server only that learner's environment (``LABKIT_*_URL``, the board's URL and
  the server's own hub token to report progress with), plus a working copy of the lessons
  in ``lessons/`` of the learner's home (`labkit lessons copy`: new lessons are added,
  nothing the learner edited is overwritten; nbgitpuller is the ecosystem's way to pull
  updates of a lessons repository into every server instead);
- the trainer's board as a managed hub service (`labkit.classroom.board`), the only place
  that holds the room's admin access besides the hub itself;
- a role giving the trainers (and only them) access to the board.

Admin credentials never reach a learner: JupyterHub starts a single-user server with a
fresh environment (`Spawner.env_keep` names the few variables it passes on: PATH, LANG…),
and the hook adds only the learner's own. The hub's process holds the admin URLs, so run it
as a user the learners are not (LocalProcessSpawner with system users, or containers).
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import Any

from labkit import lessons
from labkit.classroom import Classroom, Learner

BOARD = "board"
TRAINER_ROLE = "labkit-trainer"
# Where the lessons are copied in each learner's home: JupyterHub opens the home.
LESSONS_FOLDER = "lessons"
# Variables the board needs from the hub's environment (the room's admin access and
# where its state lives); nothing else of the hub's passes to it.
_BOARD_ENV_PREFIXES = ("LABKIT_",)


def home_of(spawner: Any) -> Path | None:
    """The learner's home where the hub can write it: SimpleLocalProcessSpawner's folder,
    else their system user's (LocalProcessSpawner); None for servers elsewhere
    (KubeSpawner, DockerSpawner), whose image or nbgitpuller brings the lessons."""
    home = getattr(spawner, "home_dir", None)
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwnam(spawner.user.name).pw_dir)
    except KeyError:
        return None


def copy_lessons(checkout: Path, home: Path) -> list[lessons.Lesson]:
    """`labkit lessons copy` into ``home/lessons``: adds lessons not copied yet and never
    overwrites one the learner changed."""
    return lessons.copy_new(checkout, work=home / LESSONS_FOLDER)


def learner_environment(learner: Learner, board_url: str, hub_token: str) -> dict[str, str]:
    """What a learner's server gets: their tenant's URLs, where to report progress and the
    token to report with (the server's own hub token: the board asks the hub whose it is,
    so a learner cannot report as someone else)."""
    env = dict(learner.env)
    env["LABKIT_CLASSROOM_URL"] = board_url
    env["LABKIT_CLASSROOM_TOKEN"] = hub_token
    # the kit's JupyterLab settings (no news pop-up), as `make lab` uses them
    env["JUPYTER_CONFIG_PATH"] = str(lessons.checkout(Path(__file__)) / "jupyter")
    return env


async def provision_learner(spawner: Any, *, board_url: str) -> None:
    """The pre_spawn_hook: the hub user becomes a learner of the room (idempotent)."""
    name = spawner.user.name
    room = Classroom.from_env()
    learner = await asyncio.to_thread(room.provision, name)
    home = home_of(spawner)
    if home is None:
        spawner.log.info("labkit: %s's server runs elsewhere: its image or nbgitpuller "
                         "brings the lessons", name)
    else:
        home.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(copy_lessons, lessons.checkout(Path(__file__)), home)
        # LocalProcessSpawner runs the server as the learner's system user: theirs to edit
        if os.geteuid() == 0 and not getattr(spawner, "home_dir", None):
            user = pwd.getpwnam(name)
            for path in (home / LESSONS_FOLDER, *(home / LESSONS_FOLDER).rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid)
    spawner.environment.update(learner_environment(learner, board_url, spawner.api_token))
    spawner.log.info("labkit: %s provisioned as a learner of room %s", name, room.name)


def configure(c: Any, *, trainers: list[str], board_port: int = 10101,
              board_host: str = "127.0.0.1", board_url: str | None = None) -> None:
    """Set the hook, the board service and the trainer role on a JupyterHub config `c`.

    Learners' kernels post their checks to `board_url` + ``/progress``: by default the
    board's own loopback port (every server runs on this machine); give the hub's public
    URL + ``services/board`` where servers run elsewhere (Kubernetes). `board_host` is
    where the proxy reaches the board: loopback on one machine, the hub's service name
    (``hub``) on Kubernetes, where the board then listens on every interface of its pod.
    """
    board_url = board_url or f"http://127.0.0.1:{board_port}/services/{BOARD}"
    c.Spawner.pre_spawn_hook = functools.partial(provision_learner, board_url=board_url)
    # append: a config file may list services and roles of its own before or after this
    c.JupyterHub.services.append(
        {
            "name": BOARD,
            "url": f"http://{board_host}:{board_port}",
            "cwd": str(lessons.checkout(Path(__file__))),  # `labkit up`'s state is found there
            "command": [sys.executable, "-m", "labkit.classroom.board"],
            "environment": {k: v for k, v in os.environ.items()
                            if k.startswith(_BOARD_ENV_PREFIXES)},
            "oauth_no_confirm": True,
            "display": True,
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": TRAINER_ROLE,
            "description": "sees the labkit board and opens learners' servers to help",
            "scopes": [f"access:services!service={BOARD}", "access:servers", "read:users"],
            "users": trainers,
        }
    )


def proxy_command() -> str | None:
    """configurable-http-proxy on PATH, else where `ci/classroom-proxy` installs it."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    installed = cache / "labkit" / "configurable-http-proxy" / "node_modules" / ".bin"
    return shutil.which("configurable-http-proxy") or shutil.which(
        "configurable-http-proxy", path=str(installed))
