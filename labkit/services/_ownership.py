"""Who owns what labkit started, and sweeping what a dead owner left behind.

Testcontainers' Ryuk reaper removes containers when their test process dies, but it
cannot run everywhere (no registry to pull it from, rootless engines). labkit marks
everything it starts with its owner's pid and start time instead: a container by
labels, a local server by an environment variable and a state file. A start, or
`labkit down`, removes whatever belongs to an owner that is no longer alive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from labkit.services._base import owner_alive
from labkit.services._state import instances_dir, write_private

INSTANCE_ENV = "LABKIT_INSTANCE"


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
            yield LocalRecord(**json.loads(path.read_text()))
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
    """Kill a local instance's processes and delete its files. Returns processes killed."""
    procs = processes_of(record)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGCONT)  # a paused server must wake to die
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    shutil.rmtree(record.workdir, ignore_errors=True)
    record.forget()
    return len(procs)


def sweep_local(everything: bool = False) -> list[LocalRecord]:
    """Remove local instances whose owner died (or all of them with everything=True)."""
    swept = []
    for record in local_records():
        if everything or record.orphaned:
            kill_instance(record)
            swept.append(record)
    return swept


def sweep_containers(client: Any, everything: bool = False) -> list[str]:
    """Remove labkit containers whose owner died (or all of them). Returns their names."""
    swept = []
    for container in client.containers.list(all=True, filters={"label": "labkit=true"}):
        labels = container.labels
        try:
            pid = int(labels["labkit.owner.pid"])
            started = float(labels["labkit.owner.started"])
        except (KeyError, ValueError):
            pid, started = -1, 0.0
        if everything or not owner_alive(pid, started):
            container.remove(force=True, v=True)
            swept.append(f"{labels.get('labkit.service', '?')}:{container.short_id}")
    return swept
