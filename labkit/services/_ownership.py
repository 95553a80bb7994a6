"""Who owns what labkit started, and sweeping what a dead owner left behind.

Testcontainers' Ryuk reaper removes containers when their test process dies, but it
cannot run everywhere (no registry to pull it from, rootless engines). labkit marks
everything it starts with its owner's pid and start time instead: a container by
labels, a local server by an environment variable and a state file. Each owner's own
reaper (`_reaper`) removes what it left the moment it dies; a start, or `labkit down`,
removes whatever belongs to an owner that is no longer alive, should a reaper have died
with its owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from labkit.services._base import Owner, owner_alive
from labkit.services._state import instances_dir, write_private

INSTANCE_ENV = "LABKIT_INSTANCE"
# The label naming the project (its state dir) a container was started for.
STATE_LABEL = "labkit.state"
SYSV_SHM = Path("/proc/sysvipc/shm")
POSIX_SHM = "/dev/shm/"
IPC_RMID = 0  # shmctl's command: remove the segment (<sys/ipc.h>)


@dataclass
class LocalRecord:
    """A local server's state file: enough to find and remove it after a crash."""

    service: str
    instance: str
    owner_pid: int
    owner_started: float
    workdir: str
    url: str
    group: int = 0
    group_started: float = 0.0

    def __post_init__(self) -> None:
        # Fixed at creation: a kernel that changes directory still finds its own records.
        self._path = instances_dir() / f"{self.service}-{self.instance}.json"

    @classmethod
    def load(cls, path: Path) -> LocalRecord:
        """The record saved at `path`, wherever the state dir of the process reading it is.

        Raises OSError if the file is gone, ValueError or TypeError if it is no record.
        """
        record = cls(**json.loads(path.read_text()))
        record._path = path
        return record

    @property
    def path(self) -> Path:
        return self._path

    def save(self) -> None:
        write_private(self.path, json.dumps(asdict(self), indent=2))

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def orphaned(self) -> bool:
        return not owner_alive(self.owner_pid, self.owner_started)


def local_records() -> Iterator[LocalRecord]:
    for path in sorted(instances_dir().glob("*.json")):
        try:
            yield LocalRecord.load(path)
        except OSError:
            continue  # another process swept it while we listed
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)


def processes_of(record: LocalRecord) -> list[psutil.Process]:
    """The instance's processes: its process group, any carrying its LABKIT_INSTANCE, and
    every descendant of those.

    All three are needed: a server may leave the group (Erlang's epmd daemonizes),
    redis-server overwrites its own environment when it sets its process title, and
    PostgreSQL puts each child of the postmaster in a session of its own, its title over
    its environment. A child missed here outlives the sweep: a paused (SIGSTOPped) one
    never sees its postmaster die and stays for good.
    """
    group_alive = record.group and owner_alive(record.group, record.group_started)
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            in_group = group_alive and os.getpgid(proc.pid) == record.group
            if in_group or proc.environ().get(INSTANCE_ENV) == record.instance:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess,
                ProcessLookupError):
            continue
    tree = {proc.pid: proc for proc in found}
    for proc in found:
        try:
            tree.update((child.pid, child) for child in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return list(tree.values())


def kill_instance(record: LocalRecord) -> int:
    """Kill a local instance's processes and delete its files and shared memory.

    Returns the number of processes killed. The processes are frozen first, so that the
    shared memory they map is listed with none created behind the listing's back. The
    record goes last: whatever stops this half-way (its caller killed), the next sweep
    still finds what is left.
    """
    procs = processes_of(record)
    _signal(procs, signal.SIGSTOP)
    mapped = mapped_shared_memory(procs)
    _signal(procs, signal.SIGCONT)  # a paused server's children must wake to see it die
    _signal(procs, signal.SIGKILL)
    _wait_dead(procs, timeout=10)
    remove_shared_memory(record, procs)
    for path in mapped:
        path.unlink(missing_ok=True)
    shutil.rmtree(record.workdir, ignore_errors=True)
    record.forget()
    return len(procs)


def _signal(procs: list[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signum)


def mapped_shared_memory(procs: list[psutil.Process]) -> set[Path]:
    """The POSIX shared-memory files (/dev/shm/…) the processes map.

    PostgreSQL keeps its dynamic shared memory there (/dev/shm/PostgreSQL.<n>, a megabyte
    of RAM each); a server or initdb killed with SIGKILL never unlinks them.
    """
    found = set()
    for proc in procs:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue  # gone, or not Linux
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(POSIX_SHM):
                found.add(Path(fields[5].removesuffix(" (deleted)")))
    return found


def _wait_dead(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until each process is gone or a zombie.

    Not psutil.wait_procs: a killed server whose parent died too may stay a zombie for
    good where the init process collects no orphans (some containers and sandboxes), and
    wait_procs would wait its whole timeout for each. A zombie runs nothing and holds no
    memory, so its shared memory is detached.
    """
    deadline = time.monotonic() + timeout
    waiting = list(procs)
    while waiting and time.monotonic() < deadline:
        waiting = [proc for proc in waiting if _running(proc)]
        if waiting:
            time.sleep(0.02)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def shared_memory_segments() -> list[dict[str, int]]:
    """The machine's System V shared-memory segments (/proc/sysvipc/shm), [] where none
    can be listed (not Linux); each a dict of its columns: shmid, key, cpid, nattch, ctime…"""
    try:
        lines = SYSV_SHM.read_text().split("\n")
    except OSError:
        return []
    header = lines[0].split()
    return [dict(zip(header, map(int, line.split()), strict=True))
            for line in lines[1:] if line.strip()]


def remove_shared_memory(record: LocalRecord, procs: list[psutil.Process]) -> list[int]:
    """Remove the System V shared-memory segments a dead instance left; returns their ids.

    A PostgreSQL server killed with SIGKILL leaves the segment its postmaster created (a
    restart in the same data dir would reuse it; a removed data dir never comes back).
    Only segments provably the instance's are removed, and only once nothing is attached:
    one created by a process of the instance after that process started, or the one its
    data dir's postmaster.pid names (line 1 the postmaster's pid, line 7 "key shmid"),
    with that key, id and creator.
    """
    segments = [seg for seg in shared_memory_segments() if seg["nattch"] == 0]
    started = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            started[proc.pid] = proc.create_time()
    named = _postmaster_segments(Path(record.workdir))
    ours = [
        seg["shmid"] for seg in segments
        if (seg["cpid"] in started and seg["ctime"] >= int(started[seg["cpid"]]))
        or (seg["shmid"], seg["key"], seg["cpid"]) in named
    ]
    removed = []
    for shmid in ours:
        if _libc().shmctl(shmid, IPC_RMID, None) == 0:
            removed.append(shmid)
    return removed


def _postmaster_segments(workdir: Path) -> set[tuple[int, int, int]]:
    """(shmid, key, postmaster pid) from each postmaster.pid in the instance's workdir."""
    found = set()
    for pidfile in workdir.glob("*/postmaster.pid"):
        try:
            lines = pidfile.read_text().splitlines()
            key, shmid = (int(part) for part in lines[6].split())
            found.add((shmid, key, int(lines[0])))
        except (OSError, IndexError, ValueError):
            continue  # not written that far (killed while starting), or gone
    return found


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def sweep_local(everything: bool = False) -> list[LocalRecord]:
    """Remove local instances whose owner died (or all of them with everything=True)."""
    swept = []
    for record in local_records():
        if everything or record.orphaned:
            kill_instance(record)
            swept.append(record)
    return swept


def sweep_containers(client: Any, everything: bool = False, owner: Owner | None = None,
                     state: str | None = None) -> list[str]:
    """Remove labkit containers whose owner died (or all of them). Returns their names.

    With `owner`, exactly that owner's, whether it looks alive or not: its reaper calls
    this once the owner is gone, when a zombie owner may still look alive. With `state`
    (a project's state dir), only the containers started for that project.
    """
    wanted = ["labkit=true"]
    if owner is not None:
        wanted += [f"labkit.owner.pid={owner.pid}", f"labkit.owner.started={owner.started!r}"]
    if state is not None:
        wanted.append(f"{STATE_LABEL}={state}")
    from docker.errors import APIError, NotFound

    swept = []
    # Other processes sweep too (reapers, `labkit up`'s daemon, other tests): a container
    # listed here may be gone before it is inspected or removed; it is then swept already.
    for container in client.containers.list(all=True, filters={"label": wanted},
                                            ignore_removed=True):
        labels = container.labels
        try:
            pid = int(labels["labkit.owner.pid"])
            started = float(labels["labkit.owner.started"])
        except (KeyError, ValueError):
            pid, started = -1, 0.0
        if everything or owner is not None or not owner_alive(pid, started):
            try:
                container.remove(force=True, v=True)
            except NotFound:
                continue
            except APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress
                    raise
                continue
            swept.append(f"{labels.get('labkit.service', '?')}:{container.short_id}")
    return swept
