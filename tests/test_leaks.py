"""Nothing left behind, whatever ends the owner (issue #14).

Each test starts services in a child process (the owner, as a Jupyter kernel or a pytest
run would be), lists what they are made of while they run (processes, data dirs, state
records, shared memory, containers), ends the child as a crash or an impatient user
would, and counts what is left. Nobody runs `labkit down` or a sweep: the owner's reaper
must remove everything within REAP_WITHIN_S, checked with a margin for a loaded 2-core
machine. Each test prints how long the removal took.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psutil
import pytest
from processes import alive, process_status

from labkit import services
from labkit.waiting import wait_until

REAP_WITHIN_S = 10  # the promise: a dead owner's services are gone within this
MARGIN_S = 20  # for a loaded 2-core machine (the reaper boots an interpreter, then kills)
START_TIMEOUT_S = 180  # RabbitMQ's boot on a loaded machine
SYSV_SHM = Path("/proc/sysvipc/shm")

OWNER = """
import sys, threading
from labkit import services
from labkit.waiting import wait_until
names = sys.argv[1:]
threads = [threading.Thread(target=services.get, args=(name,)) for name in names]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
running = services.running()
assert sorted(running) == sorted(names), f"started {sorted(running)} of {names}"
print(services.get(names[0]).port, flush=True)
sys.stdin.read()  # busy as a kernel in a cell: the end comes while it waits
"""

PAUSED_OWNER = """
import sys
from labkit import services
from labkit.waiting import wait_until
services.get("redis")
with services.paused("postgres") as endpoint:
    print(endpoint.port, flush=True)
    sys.stdin.read()  # lesson 03b's outage demo, when the kernel is killed
"""

FORKING_OWNER = """
import os, sys, time
from labkit import services
from labkit.waiting import wait_until
services.get("redis")
worker = os.fork()  # as multiprocessing's fork start method does
if worker == 0:
    time.sleep(600)  # a worker that outlives its parent, every fd of the parent copied
    os._exit(0)
print(worker, flush=True)
sys.stdin.read()
"""

STARTUP_DEMO_OWNER = """
from labkit.startup import watch_postgres_startup
watch_postgres_startup()  # lesson 01: a second PostgreSQL, started, crashed, restarted
"""

LOCAL = ("postgres", "redis", "rabbitmq")


def local_servers(*names: str) -> list[str]:
    """`names`, skipping the test where one of their servers is not installed here."""
    missing = [name for name in names if services.specs()[name].missing_binaries()]
    if missing:
        pytest.skip(f"needs the local servers of {', '.join(missing)} (see `labkit doctor`)")
    return list(names)


@dataclass
class Remains:
    """What an owner's services are made of, listed while they run."""

    records: list[services.LocalRecord] = field(default_factory=list)
    processes: dict[int, psutil.Process] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    posix_shm: set[str] = field(default_factory=set)
    sysv_shm: set[int] = field(default_factory=set)

    def add_processes(self, procs: list[psutil.Process],
                      mapped: tuple[set[str], set[int]] | None = None) -> None:
        """Add `procs` and the shared memory they map (`mapped`, if already read)."""
        for proc in procs:
            self.processes.setdefault(proc.pid, proc)
        posix, keys = mapped or _mapped_shared_memory(procs)
        self.posix_shm |= posix
        pids = {proc.pid for proc in procs}
        self.sysv_shm |= {seg["shmid"] for seg in _sysv_segments()
                          if seg["cpid"] in pids or seg["key"] in keys}

    def summary(self) -> str:
        return (f"{len(self.processes)} processes, {len(self.dirs)} data dirs, "
                f"{len(self.records)} records, {len(self.posix_shm) + len(self.sysv_shm)} "
                "shared-memory segments")

    def left(self) -> dict[str, list[str]]:
        """Whatever of it still exists (a zombie runs nothing: it counts as gone)."""
        procs = dict(self.processes)
        for record in self.records:  # anything marked with an instance, found anew
            procs.update((proc.pid, proc) for proc in services.processes_of(record))
        existing = {seg["shmid"] for seg in _sysv_segments()}
        return {
            "processes": [_describe(proc) for proc in procs.values() if alive(proc)],
            "data dirs": sorted(path for path in self.dirs if os.path.exists(path)),
            "state records": [str(r.path) for r in self.records if r.path.exists()],
            "shared memory": sorted(path for path in self.posix_shm if os.path.exists(path))
            + [f"SysV shmid {shmid}" for shmid in sorted(self.sysv_shm & existing)],
        }


def remains_of(owner: subprocess.Popen[str], remains: Remains | None = None) -> Remains:
    """The owner's local servers: their records, processes, dirs and shared memory (added
    to `remains`, what was seen of them before)."""
    remains = remains or Remains()
    remains.records = [r for r in services.local_records() if r.owner_pid == owner.pid]
    for record in remains.records:
        remains.dirs.add(record.workdir)
        remains.add_processes(services.processes_of(record))
    remains.add_processes(psutil.Process(owner.pid).children(recursive=True))
    return remains


def start_owner(script: str, *args: str, backend: str = "local") -> subprocess.Popen[str]:
    env = {**os.environ, "LABKIT_BACKEND": backend, "TESTCONTAINERS_RYUK_DISABLED": "true"}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_started(owner: subprocess.Popen[str]) -> None:
    line = owner.stdout.readline() if owner.stdout else ""
    assert line.strip().isdigit(), f"the owner did not start its services (exit {owner.poll()})"


def end(owner: subprocess.Popen[str], signum: int) -> None:
    owner.send_signal(signum)
    status = owner.wait(timeout=START_TIMEOUT_S)
    assert status == -signum, f"the owner should die of signal {signum}, got status {status}"


def wait_for_nothing_left(left: Callable[[], dict[str, list[str]]], what: str) -> float:
    """Seconds until `left()` finds nothing; fails with what is left after the margin."""
    began = time.monotonic()
    while True:
        found = {kind: items for kind, items in left().items() if items}
        elapsed = time.monotonic() - began
        if not found:
            print(f"\n{what}: nothing left after {elapsed:.1f} s (promised {REAP_WITHIN_S} s)")
            return elapsed
        if elapsed > REAP_WITHIN_S + MARGIN_S:
            pytest.fail(f"{what}: left after {elapsed:.0f} s: {json.dumps(found, indent=1)}")
        time.sleep(0.1)


def cleanup(owner: subprocess.Popen[str]) -> None:
    """Whatever the test found, leave nothing for the next one (this sweep is not the test)."""
    if owner.poll() is None:
        owner.kill()
        owner.wait()
    services.sweep_local()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "names"),
    [(signal.SIGTERM, ("postgres", "redis")), (signal.SIGKILL, LOCAL)],
    ids=["SIGTERM", "SIGKILL"],
)
def test_an_ended_owner_leaves_nothing(signum: int, names: tuple[str, ...]) -> None:
    """SIGTERM (`timeout`, a cancelled CI job, Jupyter's shutdown of a busy kernel) and
    SIGKILL (the OOM killer, a kernel that would not die) of an owner that runs local
    servers: 0 processes, data dirs, records and shared-memory segments left.

    The owner starts its services from threads, as a notebook's setup(start=…) does:
    Python lets only the main thread set a SIGTERM handler, so the reaper does it all.
    """
    owner = start_owner(OWNER, *local_servers(*names))
    try:
        wait_started(owner)
        remains = remains_of(owner)
        assert sorted(r.service for r in remains.records) == sorted(names)
        assert remains.processes and remains.sysv_shm, "PostgreSQL should hold shared memory"
        end(owner, signum)
        what = f"{signal.Signals(signum).name} of {', '.join(names)} ({remains.summary()})"
        wait_for_nothing_left(remains.left, what)
    finally:
        cleanup(owner)


@pytest.mark.slow
def test_an_owner_killed_while_postgres_is_paused_leaves_nothing() -> None:
    """Lesson 03b freezes PostgreSQL (SIGSTOP to each of its processes); a kernel killed
    then must not leave the stopped processes, which never see their postmaster die."""
    local_servers("postgres", "redis")
    owner = start_owner(PAUSED_OWNER)
    try:
        wait_started(owner)
        remains = remains_of(owner)
        procs = remains.processes.values()
        stopped = [p for p in procs if process_status(p) == psutil.STATUS_STOPPED]
        assert len(stopped) > 1, "the postmaster and its children should be paused"
        end(owner, signal.SIGKILL)
        what = f"SIGKILL while PostgreSQL is paused ({remains.summary()})"
        wait_for_nothing_left(remains.left, what)
    finally:
        cleanup(owner)


@pytest.mark.slow
def test_an_owner_killed_during_initdb_leaves_nothing() -> None:
    """A kernel killed while initdb runs (its bootstrap backend writing a 39 MB data dir)
    leaves no process, no data dir and no shared memory, known to labkit or not."""
    local_servers("postgres")
    owner = start_owner(OWNER, "postgres")
    try:
        seen = Remains()
        pgdata = _wait_for_bootstrap_backend(owner, seen)
        remains = remains_of(owner, seen)
        remains.dirs.add(str(Path(pgdata).parent))  # what initdb writes, recorded or not
        assert remains.sysv_shm or remains.posix_shm, "the backend should map shared memory"
        end(owner, signal.SIGKILL)
        wait_for_nothing_left(remains.left, f"SIGKILL during initdb ({remains.summary()})")
    finally:
        cleanup(owner)


def _wait_for_bootstrap_backend(owner: subprocess.Popen[str], seen: Remains) -> str:
    """initdb's data dir, once the backend it runs (postgres --boot, then --single) maps
    its shared memory (added to `seen`: the backend may end before the next look)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and owner.poll() is None:
        for proc in psutil.Process(owner.pid).children(recursive=True):
            try:
                backends = [child for child in proc.children(recursive=True)
                            if child.name() == "postgres"]
                mapped = _mapped_shared_memory(backends)
                if proc.name() == "initdb" and any(mapped):
                    seen.add_processes(backends, mapped)
                    command = proc.cmdline()
                    return command[command.index("--pgdata") + 1]
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.01)
    pytest.fail("initdb never ran a backend: the owner started PostgreSQL without initdb?")


@pytest.mark.slow
def test_a_forked_worker_does_not_keep_a_dead_owners_servers_alive() -> None:
    """A process forked by the owner (a multiprocessing worker) copies every fd of the
    owner's: if it kept the reaper's pipe open, the owner's death would go unseen."""
    local_servers("redis")
    owner = start_owner(FORKING_OWNER)
    worker = None
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        assert line.strip().isdigit(), f"the owner did not start redis (exit {owner.poll()})"
        worker = psutil.Process(int(line))
        remains = remains_of(owner)
        remains.processes.pop(worker.pid)  # the worker is the application's, not labkit's
        end(owner, signal.SIGKILL)
        what = f"SIGKILL of an owner whose forked worker lives on ({remains.summary()})"
        wait_for_nothing_left(remains.left, what)
        assert alive(worker), "the worker should still run: it is not labkit's to kill"
    finally:
        if worker is not None:
            worker.kill()
        cleanup(owner)


@pytest.mark.slow
def test_a_kernel_killed_during_lesson_01s_startup_demo_leaves_nothing() -> None:
    """Lesson 01 starts a PostgreSQL of its own to watch it start: it dies with the
    kernel too, though no service cache knows it."""
    local_servers("postgres")
    owner = start_owner(STARTUP_DEMO_OWNER)
    try:
        server = wait_until(lambda: _demo_server(owner), timeout=START_TIMEOUT_S,
                            message="lesson 01's PostgreSQL running")
        remains = remains_of(owner)
        command = server.cmdline()
        remains.dirs.add(str(Path(command[command.index("-D") + 1]).parent))
        end(owner, signal.SIGKILL)
        what = f"SIGKILL during lesson 01's startup demo ({remains.summary()})"
        wait_for_nothing_left(remains.left, what)
    finally:
        cleanup(owner)


def _demo_server(owner: subprocess.Popen[str]) -> psutil.Process | None:
    assert owner.poll() is None, f"the owner exited ({owner.returncode}) before its server ran"
    for proc in psutil.Process(owner.pid).children(recursive=True):
        try:  # initdb's short-lived children may be gone between two reads
            command, name = proc.cmdline(), proc.name()
        except psutil.NoSuchProcess:
            continue
        if name == "postgres" and "-p" in command:  # a server, not initdb's backend
            return proc
    return None


REDIS_IMAGE = services.specs()["redis"].image


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_ended_owner_leaves_no_container(signum: int) -> None:
    """The same on the docker backend: 0 containers labelled with the owner left."""
    unavailable = services.why_no_containers(REDIS_IMAGE)
    if unavailable:
        pytest.skip(f"no containers here: {unavailable}")
    client = services.docker_client()
    owner = start_owner(OWNER, "redis", backend="docker")

    def containers() -> dict[str, list[str]]:
        found = client.containers.list(
            all=True, filters={"label": f"labkit.owner.pid={owner.pid}"})
        return {"containers": [f"{c.short_id} ({c.status})" for c in found]}

    try:
        wait_started(owner)
        assert containers()["containers"], "the owner's redis container should run"
        end(owner, signum)
        wait_for_nothing_left(containers, f"{signal.Signals(signum).name} on docker")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        services.sweep_containers(client)


def test_local_servers_are_private_to_their_user() -> None:
    """A local server's working dir is 0700 and owned by the user it runs as, its state
    record 0600: on a shared machine, no other user reads its data or passwords."""
    local_servers("redis")
    server = services.start("redis", "local")
    try:
        [record] = [r for r in services.local_records() if r.url == server.endpoint.url]
        workdir = os.stat(record.workdir)
        assert oct(workdir.st_mode & 0o777) == oct(0o700)
        assert workdir.st_uid == psutil.Process(record.group).uids().real, (
            "the dir should belong to the user the server runs as")
        assert oct(record.path.stat().st_mode & 0o777) == oct(0o600)
    finally:
        server.stop()


def _mapped_shared_memory(procs: list[psutil.Process]) -> tuple[set[str], set[int]]:
    """(/dev/shm files, SysV keys) the processes map, from /proc/<pid>/maps."""
    files, keys = set(), set()
    for proc in procs:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)
            name = fields[5].removesuffix(" (deleted)") if len(fields) == 6 else ""
            if name.startswith("/dev/shm/"):
                files.add(name)
            elif name.startswith("/SYSV"):
                keys.add(int(name.removeprefix("/SYSV"), 16))
    return files, keys


def _sysv_segments() -> list[dict[str, int]]:
    if not SYSV_SHM.exists():
        return []
    lines = SYSV_SHM.read_text().splitlines()
    header = lines[0].split()
    return [dict(zip(header, map(int, line.split()), strict=True)) for line in lines[1:]]


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.name()} ({proc.status()})"
    except psutil.NoSuchProcess:
        return f"{proc.pid} (gone)"


def test_a_sweep_skips_a_container_another_sweeper_removed_meanwhile() -> None:
    """Reapers, `labkit up`'s daemon and tests sweep at once: a container listed by one
    sweep and removed by another before it is looked at is swept, not an error (a
    learner's run of lesson 10 failed on docker's 404 for it)."""
    unavailable = services.why_no_containers(REDIS_IMAGE)
    if unavailable:
        pytest.skip(f"no containers here: {unavailable}")
    client = services.docker_client()
    project = f"/nonexistent/test-sweep-{os.getpid()}"  # only this test's container
    dead_owner = {"labkit": "true", "labkit.owner.pid": "999999999", "labkit.state": project,
                  "labkit.owner.started": "0.0", "labkit.service": "redis"}
    container = client.containers.create(REDIS_IMAGE, labels=dead_owner)
    listed = client.api.containers

    def listed_then_removed_by_another_sweeper(*args: object, **kwargs: object) -> object:
        found = listed(*args, **kwargs)
        client.api.remove_container(container.id, force=True)
        return found

    client.api.containers = listed_then_removed_by_another_sweeper
    try:
        assert services.sweep_containers(client, state=project) == []
    finally:
        client.api.containers = listed
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
