"""`labkit doctor | up | status | down | env | lessons | classroom | join | shop serve`: the
kit's command line.

`labkit up` keeps services running for this project (see `labkit.services.state_dir`),
and every kernel and pytest run of the project becomes a tenant of them (a database
and a vhost each; a private Redis); `labkit env` prints the servers as ``export`` lines
for another application's shell:

    $ labkit up postgres redis
    $ eval "$(labkit env)"        # LABKIT_*_URL, DATABASE_URL, PG*, REDIS_URL
    $ uvicorn myapp.main:app      # reads DATABASE_URL as in production
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from labkit import classroom, lessons, services
from labkit.services import (
    STATE_ENV,
    free_port,
    local_records,
    owner_alive,
    read_up_state,
    state_dir,
    sweep_containers,
    sweep_local,
    up_file,
    write_up_state,
)

# (package, the extra that brings it): the core serves another project's tests; the
# lessons need the [lessons] extra, which `make lab` installs.
PACKAGES = (
    *((name, "") for name in (
        "pytest", "testcontainers", "sqlalchemy", "psycopg", "redis", "pika", "mirakuru",
    )),
    *((name, "lessons") for name in (
        "jupyterlab", "ipytest", "pandas", "matplotlib", "fastapi", "locust",
    )),
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def doctor_checks() -> list[Check]:
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            "install Python 3.11 or newer (conda env create -f environment.yml)",
        )
    ]
    for package, extra in PACKAGES:
        name = f"package {package}" + (f" [{extra}]" if extra else "")
        try:
            checks.append(Check(name, True, version(package), required=not extra))
        except PackageNotFoundError:
            fix = f"pip install 'labkit[{extra}]' (in this checkout: make lab)" if extra else (
                "pip install labkit (in this checkout: make lab)"
            )
            checks.append(Check(name, False, "missing", fix, required=not extra))
    engine = services.engine_answers()
    checks.append(
        Check(
            "docker engine",
            engine,
            f"answers at {services.docker_host()}" if engine else
            f"not reachable at {services.docker_host()}",
            "start Docker (Docker Desktop, or `sudo dockerd`), or use LABKIT_BACKEND=local",
            required=False,
        )
    )
    for spec in services.specs().values():
        if engine and spec.start_docker is not None:
            present = services.image_present(spec.image)
            checks.append(
                Check(
                    f"image {spec.image}",
                    present,
                    "present" if present else "not pulled yet",
                    f"docker pull {spec.image} (or `labkit up` pulls it; without a registry: "
                    "bash ci/images/build)",
                    required=False,
                )
            )
    for spec in services.specs().values():
        for binary in spec.binaries:
            found = binary.find()
            checks.append(Check(f"binary {binary.name}", found is not None,
                                str(found or "not found"), binary.install, required=False))
    try:
        checks.append(Check("free ports on 127.0.0.1", True, f"e.g. {free_port()}"))
    except OSError as exc:
        checks.append(Check("free ports on 127.0.0.1", False, str(exc), "free some ports"))
    for name in services.specs():
        try:
            backend, reason = services.check(name)
            checks.append(Check(f"service {name}", True, f"{backend} ({reason})"))
        except services.ServiceError as exc:
            checks.append(Check(f"service {name}", False, "no backend", str(exc)))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"{mark}  {c.name:<{width}}  {c.detail}")
        if not c.ok:
            print(f"{'':6}{'':<{width}}  fix: {c.fix}")
    broken = [c for c in checks if c.required and not c.ok]
    print()
    if broken:
        print(f"labkit cannot run: {len(broken)} required check(s) failed (see fix: lines).")
        return 1
    print("labkit can run. Backends are chosen per service as shown above.")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    unknown = set(args.services) - set(services.specs())
    if unknown:
        print(f"labkit up: unknown service(s) {', '.join(sorted(unknown))}; "
              f"known: {', '.join(services.specs())}")
        return 2
    state = read_up_state()
    if state:
        print(f"labkit up is already running (pid {state['pid']}):")
        return cmd_status(args)
    log = up_file().with_suffix(".log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold URLs
    with os.fdopen(fd, "w") as out:
        # The daemon writes to this project's state dir whatever its working directory.
        daemon = subprocess.Popen(
            [sys.executable, "-m", "labkit.cli", "_hold", *args.services],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, STATE_ENV: str(state_dir())},
        )
    shown = 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        for line in lines[shown:]:
            print(f"  {line}", flush=True)
        shown = len(lines)
        if read_up_state():
            return cmd_status(args)
        if daemon.poll() is not None:
            print(f"labkit up failed (exit {daemon.returncode}); full log: {log}")
            return 1
        time.sleep(0.2)
    daemon.terminate()
    print(f"labkit up: services not ready within {args.timeout}s; log: {log}")
    return 1


# How often the `labkit up` daemon drops the tenants of processes that died.
SWEEP_SECONDS = 5.0
# How long the daemon waits for a server's admin access to answer (RabbitMQ's management
# API starts after AMQP's port opens, in a container especially).
ADMIN_WAIT_SECONDS = 60.0


def shared_admin(name: str, endpoint: services.Endpoint) -> str | None:
    """The admin URL that makes each process a tenant of `endpoint`, or None.

    Only for a server `labkit up` runs itself (its superuser, its management API):
    PostgreSQL and RabbitMQ are shared, a database and a vhost per process. Redis is
    not: lessons write unprefixed keys (``"greeting"``), which an ACL tenant confined to
    ``<tenant>:*`` may not, so each process gets a private redis-server instead
    (`shared_privately`). The AWS emulator has no isolation to give (moto checks no
    credentials), so it stays one server for all, as before.
    """
    if endpoint.backend not in ("local", "docker"):
        return None  # a server someone else runs: its URL is not an admin's
    if name == "postgres":
        return endpoint.dsn
    if name == "rabbitmq" and endpoint.extra.get("management_url"):
        # AMQP where clients reach it: a container's port is published elsewhere
        return f"{endpoint.extra['management_url']}?amqp_port={endpoint.port}"
    return None


def shared_privately(name: str) -> bool:
    """Whether each process of the project gets its own server of `name` (Redis)."""
    if name != "redis":
        return False
    spec = services.specs()[name]
    return ((spec.start_local is not None and not spec.missing_binaries())
            or (spec.start_docker is not None and services.engine_answers()))


def _checked_admin(admin: dict[str, str]) -> dict[str, str]:
    """`admin` without the servers whose admin access does not work, each said why."""
    working = {}
    for name, url in admin.items():
        deadline = time.monotonic() + ADMIN_WAIT_SECONDS
        while True:
            try:
                services.check_admin(services.TenantAdmin(**{name: url}), (name,))
                working[name] = url
                break
            except services.TenantError as exc:
                if time.monotonic() > deadline:
                    print(f"{name}: not shared as tenants ({exc}); processes use it as one "
                          "server, as an external one", flush=True)
                    break
                time.sleep(0.5)
    return working


def cmd_hold(args: argparse.Namespace) -> int:
    """The `labkit up` daemon: own the services until SIGTERM, then stop them.

    Besides the URLs (`labkit env`), it records the admin access that makes every
    kernel and pytest run of this project a tenant of its servers, and sweeps the
    tenants of processes that died every few seconds.
    """
    # A local RabbitMQ serves the management API: tenants' vhosts are made through it.
    os.environ.setdefault("LABKIT_RABBITMQ_MANAGEMENT", "1")
    urls, admin, private = {}, {}, []
    for name in args.services:
        began = time.perf_counter()
        print(f"starting {name} ({services.backend_for(name)[0]})…", flush=True)
        endpoint = services.get(name)
        urls[name] = endpoint.url
        admin_url = shared_admin(name, endpoint)
        if admin_url:
            admin[name] = admin_url
        elif shared_privately(name):
            private.append(name)
        print(f"{name} ready in {time.perf_counter() - began:.1f}s", flush=True)
    admin = _checked_admin(admin)
    import psutil

    me = psutil.Process()
    write_up_state(me.pid, me.create_time(), urls, admin, private)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    next_sweep = time.monotonic() + SWEEP_SECONDS
    while not stopping:
        time.sleep(0.5)
        if admin and time.monotonic() > next_sweep:
            _sweep(admin)
            next_sweep = time.monotonic() + SWEEP_SECONDS
    up_file().unlink(missing_ok=True)
    services.stop_all()
    return 0


def _sweep(admin: dict[str, str]) -> None:
    """Drop the tenants whose owner died (a SIGKILLed kernel's), saying which."""
    try:
        swept = services.sweep_tenants(services.TenantAdmin(**admin))
    except services.ServiceError as exc:
        print(f"sweep: {exc}", flush=True)
        return
    if swept:
        print(f"swept the tenants of dead processes: {', '.join(swept)}", flush=True)


def cmd_status(args: argparse.Namespace) -> int:
    room = classroom.joined()
    if room:
        services_of = sorted({variable.split("_")[1].lower() for variable in room["env"]
                              if variable.endswith("_BACKEND")})
        print(f"joined room {room['room']} as {room['learner']} (`labkit join`): kernels and "
              f"tests of this project use its {', '.join(services_of)}; "
              "`labkit join --leave` forgets it")
    state = read_up_state()
    if state:
        print(f"labkit up session (pid {state['pid']}, state in {state_dir()}); "
              "notebooks and tests of this project on the auto backend use it:")
        admin, private = state.get("admin", {}), state.get("private", [])
        for name, url in state["urls"].items():
            how = SHARING[name] if name in admin else PRIVATE if name in private else ONE_FOR_ALL
            print(f"  # {name}: {how}")
            print(f"  export LABKIT_{name.upper()}_URL={url}")
        if admin:
            _print_tenants(admin)
    else:
        print("no labkit up session running.")
    records = list(local_records())
    containers = _labkit_containers()
    if records or containers:
        print("started by labkit:")
        for r in records:
            print(f"  local {r.service:<9} owner pid {r.owner_pid} {'(dead: orphan)' if r.orphaned else ''}")
        for line in containers:
            print(f"  {line}")
    return 0


SHARING = {
    "postgres": "shared; each process a tenant (its own database and role)",
    "rabbitmq": "shared; each process a tenant (its own vhost and user)",
}
PRIVATE = "each process starts its own private server (lessons' keys stay unprefixed)"
ONE_FOR_ALL = "one server for every process, not isolated between them"


def _print_tenants(admin: dict[str, str]) -> None:
    try:
        tenants = services.list_tenants(services.TenantAdmin(**admin))
    except services.ServiceError as exc:
        print(f"tenants: cannot list them ({exc})")
        return
    print(f"tenants ({len(tenants)}):" if tenants else "tenants: none yet (each process that "
          "uses a service becomes one)")
    for name, (owner, on) in sorted(tenants.items()):
        if owner.room:
            print(f"  {name}  a learner of room {owner.room} (labkit classroom)  "
                  f"on {', '.join(on)}")
            continue
        alive = "" if owner.alive else " (dead: swept within seconds)"
        print(f"  {name}  owner pid {owner.pid}  on {', '.join(on)}{alive}")


def cmd_env(args: argparse.Namespace) -> int:
    """Print `export` lines for servers that outlive this command (URLs, `labkit up`)."""
    names = args.services or list(services.specs())
    lines, missing = [], []
    for name in names:
        endpoint = services.given(name)
        if endpoint is None:
            missing.append(name)
            continue
        lines.append(f"# {name} ({endpoint.origin})")
        spec = services.specs()[name]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in spec.environ(endpoint).items()]
    if missing and (args.services or not lines):
        absent = f"{', '.join(missing)} not" if args.services else "nothing"
        command = " ".join(["labkit up", *(missing if args.services else [])])
        print(
            f"labkit env: {absent} running for this project ({state_dir()}): start "
            f"{'it' if len(missing) == 1 else 'them'} with `{command}` first (what "
            "`labkit env` names must outlive it), or set LABKIT_<SERVICE>_URL",
            file=sys.stderr,
        )
        return 1
    print("\n".join(lines))
    return 0


def _labkit_containers() -> list[str]:
    if not services.engine_answers():
        return []
    rows = []
    for c in services.docker_client().containers.list(all=True, filters={"label": "labkit=true"}):
        pid = int(c.labels.get("labkit.owner.pid", -1))
        alive = owner_alive(pid, float(c.labels.get("labkit.owner.started", 0)))
        rows.append(
            f"container {c.labels.get('labkit.service', '?'):<9} {c.short_id} owner pid {pid}"
            f"{'' if alive else ' (dead: orphan)'}"
        )
    return rows


def cmd_down(args: argparse.Namespace) -> int:
    state = read_up_state()
    if state:
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 30
        while owner_alive(state["pid"], state["started"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"stopped the labkit up session (pid {state['pid']}).")
    swept = [f"local {r.service} ({r.workdir})" for r in sweep_local(everything=args.all)]
    if services.engine_answers():
        # --all: this project's containers only (labelled with its state dir), never
        # another checkout's, whose kernels may be running
        project = str(state_dir()) if args.all else None
        swept += [f"container {c}" for c in
                  sweep_containers(services.docker_client(), args.all, state=project)]
    for item in swept:
        print(f"removed {item}")
    if not (state or swept):
        print("nothing to stop: no labkit session, no orphans.")
    return 0


def cmd_shop_serve(args: argparse.Namespace) -> int:
    shop = importlib.import_module("labkit.shop.testing")
    shop.serve(host=args.host, port=args.port)
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    """`labkit lessons copy | list | reset`: the learner's working copy (labkit.lessons)."""
    try:
        root = lessons.checkout()
        work = root / lessons.WORK
        if args.lessons_command == "copy":
            copied = lessons.copy_new(root)
            names = f": {', '.join(lesson.name for lesson in copied)}" if copied else ""
            print(f"lessons: your working copies are in {work} ({len(copied)} copied{names}); "
                  "notebooks/ keeps the originals.")
            for lesson in lessons.lessons(root):
                if lesson.original_updated:
                    print(f"  {lesson.name}: its original changed since you copied it; "
                          f"`labkit lessons reset {lesson.name}` takes the new one "
                          f"(your copy goes to {work / lessons.BACKUPS}).")
            return 0
        if args.lessons_command == "list" or not (args.name or args.all):
            _print_lessons(lessons.lessons(root), work)
            if args.lessons_command == "reset":
                print("\nlabkit lessons reset: name a lesson (e.g. `labkit lessons reset 03`) "
                      "or give --all.")
                return 2
            return 0
        chosen = lessons.lessons(root) if args.all else lessons.select(root, args.name)
        for lesson in chosen:
            if lesson.state == "clean":
                if not args.all:
                    print(f"{lesson.name}: already the original.")
                continue
            backup = lessons.reset(root, lesson)
            kept = f"; your copy is kept as {backup}" if backup else ""
            print(f"{lesson.name}: restored from {lesson.original}{kept}")
        return 0
    except lessons.LessonsError as exc:
        print(f"labkit lessons: {exc}", file=sys.stderr)
        return 2


def _print_lessons(found: list[lessons.Lesson], work: Path) -> None:
    labels = {"not copied": "not copied yet (make lab copies it)", "clean": "clean",
              "run": "run (outputs saved, cells as the original)", "edited": "edited"}
    width = max((len(lesson.name) for lesson in found), default=6)
    print(f"{'lesson':<{width}}  your copy in {work}")
    for lesson in found:
        note = " · the original changed since it was copied" if lesson.original_updated else ""
        print(f"{lesson.name:<{width}}  {labels[lesson.state]}{note}")


def cmd_classroom(args: argparse.Namespace) -> int:
    """The trainer's commands: learners as tenants of the room's servers."""
    room = classroom.Classroom.from_env(args.room)
    if args.classroom_command == "provision":
        if bool(args.names) == bool(args.roster):
            print("labkit: name the learners, or give --roster FILE (one of them)",
                  file=sys.stderr)
            return 2
        made = (room.provision_roster(args.roster) if args.roster
                else room.provision_many(args.names))
        print(f"room {room.name}: {len(made)} learner(s) on {', '.join(room.services)}")
        for learner in made:
            token = f"  {classroom.join_token(room.name, learner)}" if args.tokens else ""
            print(f"  {learner.name:<20} {learner.tenant}{token}")
    elif args.classroom_command == "token":
        print(classroom.join_token(room.name, room.learner(args.name)))
    elif args.classroom_command == "revoke":
        for name in args.names:
            room.revoke(name)
            print(f"revoked {name}: their tenant is gone from {', '.join(room.services)}")
    else:
        statuses = room.status()
        print(f"room {room.name}: {len(statuses)} learner(s)")
        columns = room.services
        print(f"  {'learner':<20} {'tenant':<28} {'created':<26} " + " ".join(
            f"{service:<9}" for service in columns))
        for status in statuses:
            print(f"  {status.name:<20} {status.tenant:<28} {status.created:<26} " + " ".join(
                f"{'ok' if status.services[s] == 'ok' else 'DOWN':<9}" for s in columns) + " ")
            for service, problem in status.services.items():
                if problem != "ok":
                    print(f"      {service}: {problem}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    """A learner's laptop joins a room's shared servers with the token the trainer gave."""
    if args.leave:
        print("left the room: this project's kernels use their own servers again"
              if classroom.leave() else "no room was joined")
        return 0
    if not args.token:
        print("labkit: give the token (or URL) the trainer gave you: labkit join TOKEN",
              file=sys.stderr)
        return 2
    joined = classroom.save_join(args.token)
    print(f"joined room {joined['room']} as {joined['learner']}: kernels and tests started "
          f"in this project from now on use the room's servers (`labkit status` shows it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check this machine can run the kit; say how to fix what can't")
    default = list(services.specs())
    for name, helptext in (("up", "start services for a workshop session"),
                           ("_hold", argparse.SUPPRESS)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("services", nargs="*", default=["postgres", "redis", "rabbitmq"],
                       metavar="SERVICE", help=f"any of {', '.join(default)}")
        p.add_argument("--timeout", type=float, default=300)
    sub.add_parser("status", help="show the session and whatever labkit started")
    env = sub.add_parser(
        "env", help="print `export` lines for this project's services (eval \"$(labkit env)\")",
        description="Print shell `export` lines naming the services `labkit up` runs for this "
        "project (or that LABKIT_<SERVICE>_URL gives): LABKIT_<SERVICE>_URL for labkit, and "
        "the names other tools read: DATABASE_URL and PGHOST/PGPORT/PGUSER/PGPASSWORD/"
        "PGDATABASE (postgres), REDIS_URL, AMQP_URL, AWS_ENDPOINT_URL and AWS_* (aws).",
    )
    env.add_argument("services", nargs="*", metavar="SERVICE",
                     help="only these (default: every one that runs)")
    down = sub.add_parser("down", help="stop the session and remove orphans")
    down.add_argument("--all", action="store_true",
                      help="also remove this project's services of processes still running "
                      "(e.g. open kernels)")
    shop = sub.add_parser("shop", help="the demo shop").add_subparsers(dest="shop_command", required=True)
    serve = shop.add_parser("serve", help="run the demo shop with uvicorn on labkit's services")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    les = sub.add_parser(
        "lessons", help="the working copy of the lessons that make lab opens (work/)",
        description="make lab opens copies of the lessons in work/ (ignored by git), so "
        "notebooks/ keeps the originals clean.",
    ).add_subparsers(dest="lessons_command", required=True)
    les.add_parser("copy", help="copy lessons not yet in work/ (make lab runs it); a copy "
                   "you saved is never overwritten")
    les.add_parser("list", help="each lesson and whether your copy differs from the original")
    reset = les.add_parser("reset", help="restore a lesson from its original; your copy is "
                           "kept in work/backups/ (no name: list the lessons)")
    reset.add_argument("name", nargs="?", metavar="NAME",
                       help="the lesson, e.g. 03a_api_requests or 03a; 03 is every part of lesson 03")
    reset.add_argument("--all", action="store_true", help="restore every lesson")
    room = sub.add_parser(
        "classroom", help="the trainer's commands: learners as tenants of the room's servers",
        description="Learners as tenants of the room's shared servers (admin URLs from "
        "LABKIT_*_ADMIN_URL, else `labkit up`). Each learner gets their own database, vhost "
        "and Redis namespace; a join token carries only their own credentials.",
    ).add_subparsers(dest="classroom_command", required=True)
    for name, helptext in (("provision", "make learners (again: nothing changes for them)"),
                           ("revoke", "drop learners' tenants on every server"),
                           ("status", "each learner's services, tried with their credentials"),
                           ("token", "print a learner's join token (`labkit join TOKEN`)")):
        command = room.add_parser(name, help=helptext)
        command.add_argument("--room", help="the room's name (default: LABKIT_CLASSROOM_ROOM, "
                             "else 'room')")
        if name == "provision":
            command.add_argument("names", nargs="*", metavar="NAME")
            command.add_argument("--roster", metavar="FILE",
                                 help="one learner per line, '#' comments")
            command.add_argument("--tokens", action="store_true",
                                 help="print each learner's join token")
        elif name == "revoke":
            command.add_argument("names", nargs="+", metavar="NAME")
        elif name == "token":
            command.add_argument("name", metavar="NAME")
    join = sub.add_parser("join", help="use a room's shared servers as a learner (the "
                          "token or URL the trainer gave you)")
    join.add_argument("token", nargs="?", metavar="TOKEN-OR-URL")
    join.add_argument("--leave", action="store_true", help="forget the room joined")
    return parser


COMMANDS = {
    "doctor": cmd_doctor, "up": cmd_up, "_hold": cmd_hold, "status": cmd_status,
    "down": cmd_down, "env": cmd_env, "shop": cmd_shop_serve, "lessons": cmd_lessons,
    "classroom": cmd_classroom, "join": cmd_join,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except services.ServiceError as exc:
        print(f"labkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
