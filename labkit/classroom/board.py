"""The trainer's board: a JupyterHub service showing who solved what, live, and who is stuck.

Run by the hub as a managed service (`labkit.classroom.hub.configure`), so the hub's login
and scopes guard it: the page and its data need ``access:services!service=board``, which
only the trainer role grants (a learner who opens it gets 403 from the hub's OAuth step).

- ``GET  <prefix>``          the grid page: learner x exercise, refreshed every few seconds
- ``GET  <prefix>api/board`` the same as JSON (what the page polls)
- ``POST <prefix>progress``  a learner's kernel reports one check (`labkit.classroom.report`):
  ``Authorization: Bearer $LABKIT_CLASSROOM_TOKEN`` and ``{"lesson", "exercise", "outcome",
  "seconds"}``. The token is the learner's room token (a laptop that ran `labkit join`) or
  their server's hub token (what the spawn hook gives), which the hub resolves to its user;
  the row is recorded for that learner only: a body naming another learner gets 403.

A learner is *stuck* when they made no progress for `stuck_minutes` or one check failed
`stuck_attempts` times or more without being solved.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httpserver, ioloop, web

from labkit.classroom import Classroom, LearnerStatus, ProgressRow
from labkit.classroom.reporting import OUTCOMES

STUCK_MINUTES = float(os.environ.get("LABKIT_BOARD_STUCK_MINUTES", "10"))
STUCK_ATTEMPTS = int(os.environ.get("LABKIT_BOARD_STUCK_ATTEMPTS", "3"))
POLL_SECONDS = 3


@dataclass
class Cell:
    outcome: str
    attempts: int


@dataclass
class LearnerRow:
    name: str
    cells: dict[str, Cell] = field(default_factory=dict)  # "lesson/exercise" -> its cell
    last_progress: str | None = None  # ISO time of the newest report
    stuck: list[str] = field(default_factory=list)  # why, in words; empty: not stuck
    health: str = "unknown"
    server: str = ""  # the learner's server, for a helper to open


@dataclass
class Board:
    exercises: list[str]
    learners: list[LearnerRow]


def build_board(progress: list[ProgressRow], statuses: list[LearnerStatus], now: datetime,
                stuck_minutes: float = STUCK_MINUTES,
                stuck_attempts: int = STUCK_ATTEMPTS) -> Board:
    """The grid from the room's progress rows and its learners' status."""
    learners: dict[str, LearnerRow] = {}
    for status in statuses:
        learners[status.name] = LearnerRow(status.name, health=_health(status),
                                           server=f"/user/{status.name}/")
    exercises: list[str] = []
    for row in progress:
        learner = learners.setdefault(
            row.learner, LearnerRow(row.learner, server=f"/user/{row.learner}/"))
        key = f"{row.lesson}/{row.exercise}"
        if key not in exercises:
            exercises.append(key)
        learner.cells[key] = Cell(row.outcome, row.attempts)
        if learner.last_progress is None or row.last_seen.isoformat() > learner.last_progress:
            learner.last_progress = row.last_seen.isoformat()
    for learner in learners.values():
        for key, cell in learner.cells.items():
            if cell.outcome == "wrong" and cell.attempts >= stuck_attempts:
                learner.stuck.append(f"{key} failed {cell.attempts} times")
        if learner.last_progress is None:
            continue
        idle = now - datetime.fromisoformat(learner.last_progress)
        if idle >= timedelta(minutes=stuck_minutes):
            learner.stuck.append(f"no progress for {idle.total_seconds() / 60:.0f} min")
    return Board(sorted(exercises), sorted(learners.values(), key=lambda r: r.name))


def _health(status: LearnerStatus) -> str:
    """'ok', or each service that does not answer the learner's credentials and why."""
    down = [f"{service}: {state}" for service, state in status.services.items() if state != "ok"]
    return "; ".join(down) or "ok"


class BoardHandler(HubOAuthenticated, web.RequestHandler):
    """Shared by the page and its JSON: only users the hub lets into this service."""

    @property
    def room(self) -> Classroom:
        room: Classroom = self.settings["room"]
        return room

    async def board(self) -> Board:
        progress, statuses = await asyncio.gather(
            asyncio.to_thread(self.room.progress), asyncio.to_thread(self.room.status))
        return build_board(progress, statuses, datetime.now(UTC))


class PageHandler(BoardHandler):
    @web.authenticated
    async def get(self) -> None:
        # the page's fetches carry the hub's XSRF token: the hub's OAuth accepts a cookie
        # on a script's request only with it (a page load needs none)
        xsrf = self.xsrf_token
        self.write(PAGE.replace("{{prefix}}", html.escape(self.settings["prefix"]))
                   .replace("{{xsrf}}", html.escape(xsrf.decode() if isinstance(xsrf, bytes) else xsrf))
                   .replace("{{poll}}", str(POLL_SECONDS * 1000)))


class DataHandler(BoardHandler):
    @web.authenticated
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(asdict(await self.board())))


class ProgressHandler(web.RequestHandler):
    """A learner's kernel reports a check; the learner is whoever the hub says owns the token."""

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no browser cookie is involved, so no XSRF to check."""

    async def post(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token:
            raise web.HTTPError(401, "send your token: Authorization: Bearer <LABKIT_CLASSROOM_TOKEN>")
        learner = await self.learner_of(token)
        if learner is None:
            raise web.HTTPError(403, "this token is no learner's: neither the room nor the hub knows it")
        try:
            report = json.loads(self.request.body)
            lesson, exercise, outcome = report["lesson"], report["exercise"], report["outcome"]
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPError(
                400, f"expected JSON with lesson, exercise, outcome; got {exc!r}") from exc
        claimed = report.get("learner", learner)
        if claimed != learner:
            raise web.HTTPError(403, f"this token is {learner}'s: it cannot report for {claimed}")
        if outcome not in OUTCOMES:
            raise web.HTTPError(400, f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        seconds = report.get("seconds")
        await asyncio.to_thread(
            self.settings["room"].record, learner, lesson, exercise, outcome,
            seconds=float(seconds) if seconds is not None else None)
        self.set_status(204)

    async def learner_of(self, token: str) -> str | None:
        """The room's own learner token (a laptop that ran `labkit join`), else a hub
        server's token, which the hub resolves to its user."""
        room: Classroom = self.settings["room"]
        learner = await asyncio.to_thread(room.learner_of_token, token)
        if learner is not None:
            return learner
        auth: HubOAuth = self.settings["hub_auth"]
        user = await asyncio.to_thread(auth.user_for_token, token, sync=True)
        if not user or user.get("kind", "user") != "user":
            return None
        name: str = user["name"]
        provisioned = await asyncio.to_thread(room.learners)
        return name if name in {learner.name for learner in provisioned} else None


def make_app(room: Classroom) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/board/")
    hub_auth = HubOAuth(api_token=os.environ["JUPYTERHUB_API_TOKEN"], cache_max_age=60)
    return web.Application(
        [
            (prefix, PageHandler),
            (url_path_join(prefix, "api/board"), DataHandler),
            (url_path_join(prefix, "progress"), ProgressHandler),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        hub_auth=hub_auth, room=room, prefix=prefix,
        cookie_secret=os.urandom(32), xsrf_cookies=False,
    )


def main() -> None:
    """Serve on the port the hub gave this service (JUPYTERHUB_SERVICE_URL)."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    # a loopback address is bound as given; a name (the hub's Kubernetes service) is not an
    # address of this pod, so every interface is (its network policy says who may come)
    loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
    server = httpserver.HTTPServer(make_app(Classroom.from_env()))
    server.listen(url.port or 80, url.hostname if loopback else "0.0.0.0")
    ioloop.IOLoop.current().start()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>labkit board</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: center; }
td.solved { background: #c8f0c8; } td.wrong { background: #f6c6c6; }
td.not-attempted { background: #f3f3f3; color: #888; }
tr.stuck th, tr.stuck td.why { background: #ffd966; font-weight: bold; }
</style></head>
<body>
<h1>labkit board</h1>
<p>✓ solved · ✗ wrong · … not attempted; the number is attempts. Highlighted: stuck.
Updated every few seconds: <span id="updated">never</span>.</p>
<table id="board"><thead></thead><tbody></tbody></table>
<script>
const prefix = "{{prefix}}";
const mark = {"solved": "✓", "wrong": "✗", "not attempted": "…"};
function cell(text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; return td;
}
async function refresh() {
  const response = await fetch(prefix + "api/board", {headers: {"X-XSRFToken": "{{xsrf}}"}});
  if (!response.ok) { document.getElementById("updated").textContent =
      "failed: HTTP " + response.status; return; }
  const board = await response.json();
  const head = document.createElement("tr");
  for (const title of ["learner", "health", ...board.exercises, "stuck", "server"]) {
    const th = document.createElement("th"); th.textContent = title; head.appendChild(th);
  }
  const rows = board.learners.map(learner => {
    const tr = document.createElement("tr");
    tr.dataset.learner = learner.name;
    if (learner.stuck.length) tr.className = "stuck";
    const th = document.createElement("th"); th.textContent = learner.name; tr.appendChild(th);
    tr.appendChild(cell(learner.health, learner.health === "ok" ? "" : "wrong"));
    for (const exercise of board.exercises) {
      const c = learner.cells[exercise];
      tr.appendChild(c ? cell(mark[c.outcome] + " " + c.attempts, c.outcome.replace(" ", "-"))
                       : cell("…", "not-attempted"));
    }
    tr.appendChild(cell(learner.stuck.join("; "), "why"));
    const link = document.createElement("a"); link.href = learner.server;
    link.textContent = "open"; const td = cell(""); td.appendChild(link); tr.appendChild(td);
    return tr;
  });
  document.querySelector("#board thead").replaceChildren(head);
  document.querySelector("#board tbody").replaceChildren(...rows);
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}
refresh(); setInterval(refresh, {{poll}});
</script>
</body></html>
"""

if __name__ == "__main__":
    main()
