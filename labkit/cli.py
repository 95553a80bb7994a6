"""`labkit doctor | up | status | down | shop serve`: the workshop's command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from labkit import services
from labkit.services import docker as docker_backend
from labkit.services import local as local_backend
from labkit.services.base import free_port
from labkit.services.ownership import local_records, owner_alive, sweep_containers, sweep_local
from labkit.services.session import read_up_state, up_file

PACKAGES = (
    "jupyterlab", "ipytest", "pytest", "testcontainers", "sqlalchemy", "psycopg",
    "redis", "pika", "pandas", "matplotlib", "fastapi", "mirakuru",
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
    for package in PACKAGES:
        try:
            checks.append(Check(f"package {package}", True, version(package)))
        except PackageNotFoundError:
            checks.append(Check(f"package {package}", False, "missing", "pip install -e '.[dev]'"))
    engine = docker_backend.engine_answers()
    checks.append(
        Check(
            "docker engine",
            engine,
            f"answers at {docker_backend.docker_host()}" if engine else
            f"not reachable at {docker_backend.docker_host()}",
            "start Docker (Docker Desktop, or `sudo dockerd`), or use LABKIT_BACKEND=local",
            required=False,
        )
    )
    for spec in services.specs().values():
        if engine and spec.start_docker is not None:
            present = docker_backend.image_present(spec.image)
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
    for label, found, fix in (
        ("binary initdb/postgres", local_backend.postgres_bindir(), "apt-get install postgresql"),
        ("binary redis-server", local_backend.redis_server(), "apt-get install redis-server"),
        ("binary rabbitmq-server", local_backend.rabbitmq_server(), "apt-get install rabbitmq-server"),
    ):
        checks.append(Check(label, found is not None, str(found or "not found"), fix, required=False))
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
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "labkit.cli", "_hold", *args.services],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
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


def cmd_hold(args: argparse.Namespace) -> int:
    """The `labkit up` daemon: own the services until SIGTERM, then stop them."""
    urls = {}
    for name in args.services:
        began = time.perf_counter()
        print(f"starting {name} ({services.backend_for(name)[0]})…", flush=True)
        endpoint = services.get(name)
        urls[name] = endpoint.url
        print(f"{name} ready in {time.perf_counter() - began:.1f}s", flush=True)
    import psutil

    me = psutil.Process()
    up_file().write_text(json.dumps({"pid": me.pid, "started": me.create_time(), "urls": urls}))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    while not stopping:
        time.sleep(0.5)
    up_file().unlink(missing_ok=True)
    services.stop_all()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = read_up_state()
    if state:
        print(f"labkit up session (pid {state['pid']}); notebooks on the auto backend use it:")
        for name, url in state["urls"].items():
            print(f"  export LABKIT_{name.upper()}_URL={url}")
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


def _labkit_containers() -> list[str]:
    if not docker_backend.engine_answers():
        return []
    rows = []
    for c in docker_backend.docker_client().containers.list(all=True, filters={"label": "labkit=true"}):
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
    if docker_backend.engine_answers():
        swept += [f"container {c}" for c in sweep_containers(docker_backend.docker_client(), args.all)]
    for item in swept:
        print(f"removed {item}")
    if not (state or swept):
        print("nothing to stop: no labkit session, no orphans.")
    return 0


def cmd_shop_serve(args: argparse.Namespace) -> int:
    shop = importlib.import_module("labkit.shop.testing")
    shop.serve(host=args.host, port=args.port)
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
    down = sub.add_parser("down", help="stop the session and remove orphans")
    down.add_argument("--all", action="store_true",
                      help="also remove services of processes still running (e.g. open kernels)")
    shop = sub.add_parser("shop", help="the demo shop").add_subparsers(dest="shop_command", required=True)
    serve = shop.add_parser("serve", help="run the demo shop with uvicorn on labkit's services")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    return parser


COMMANDS = {
    "doctor": cmd_doctor, "up": cmd_up, "_hold": cmd_hold, "status": cmd_status,
    "down": cmd_down, "shop": cmd_shop_serve,
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
