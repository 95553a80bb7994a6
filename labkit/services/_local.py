"""Private servers from the binaries on this machine: no Docker needed.

Each instance lives in its own temporary directory, listens on 127.0.0.1 on a free
port, has random credentials, and is started and stopped by a mirakuru executor
(which waits for the port and kills the whole process group). PostgreSQL refuses to
run as root, so as root every server runs as an unprivileged user (LABKIT_RUN_AS,
default ``nobody``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from mirakuru import TCPExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from labkit.services._base import LOOPBACK, Endpoint, Handle, Owner, ServiceError, ServiceSpec
from labkit.services._ownership import INSTANCE_ENV, LocalRecord, kill_instance, sweep_local
from labkit.services._reaper import watch_record


class ReadyTCPExecutor(TCPExecutor):
    """A TCP executor that also asks the server itself whether it is ready.

    An open port is not a ready server: PostgreSQL answers "the database system is
    starting up" and RabbitMQ closes connections until its boot steps are done.
    """

    def __init__(
        self,
        *args: Any,
        probe: Callable[[], object],
        on_spawn: Callable[[int], object] = lambda pid: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._probe = probe
        self._on_spawn = on_spawn
        self._spawned = False

    def after_start_check(self) -> bool:
        if not self._spawned and self.process is not None:
            # Before the wait for readiness, not after: the process must be findable if
            # the owner dies while the server boots (Redis clobbers its environment).
            self._spawned = True
            self._on_spawn(self.process.pid)
        if not super().after_start_check():
            return False
        try:
            self._probe()
        except Exception:  # noqa: BLE001 (any error from the probe means 'not yet')
            return False
        return True


class LocalHandle:
    """A private server process: its endpoint, stop, and pause/resume by SIGSTOP/SIGCONT."""

    def __init__(self, executor: TCPExecutor, record: LocalRecord, endpoint: Endpoint) -> None:
        self.executor = executor
        self.record = record
        self.endpoint = endpoint

    def _processes(self) -> list[psutil.Process]:
        # PostgreSQL moves each connection's backend into a process group of its own,
        # so stopping the group alone would leave open connections answering.
        leader = psutil.Process(_pid(self.executor))
        return [leader, *leader.children(recursive=True)]

    def pause(self) -> None:
        for proc in self._processes():
            # A connection's backend that exits between the listing and the signal (a
            # client just disconnected) needs no pausing.
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()

    def resume(self) -> None:
        for proc in reversed(self._processes()):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()

    def stop(self) -> None:
        try:
            self.resume()
        except psutil.NoSuchProcess:
            pass
        try:
            self.executor.stop()
        finally:
            kill_instance(self.record)


def _pid(executor: TCPExecutor) -> int:
    if executor.process is None:
        raise ServiceError("the local server's process is gone: start the service again")
    return executor.process.pid


def run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account servers run as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LABKIT_RUN_AS", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(
            f"running as root, labkit starts servers as user {name!r}, which does not exist — "
            "set LABKIT_RUN_AS to an unprivileged user"
        ) from None


def privilege_prefix() -> list[str]:
    user = run_as_user()
    if user is None:
        return []
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


def make_workdir(service: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"labkit-{service}-"))
    user = run_as_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def chown_tree(path: Path) -> None:
    user = run_as_user()
    if user is None:
        return
    for item in [path, *path.rglob("*")]:
        os.chown(item, user.pw_uid, user.pw_gid)


def find_binary(name: str, env: str, patterns: tuple[str, ...] = ()) -> str | None:
    """A server binary: the env override, then PATH, then well-known install dirs."""
    override = os.environ.get(env)
    if override:
        candidate = Path(override) / name if Path(override).is_dir() else Path(override)
        return str(candidate) if candidate.exists() else None
    for pattern in patterns:
        matches = sorted(glob.glob(pattern), key=_version_key)
        if matches:
            return matches[-1]
    return shutil.which(name)


def _version_key(path: str) -> list[int]:
    return [int(part) for part in Path(path).parts if part.isdigit()]


def new_instance(service: str, owner: Owner) -> LocalRecord:
    """A private working directory for a new local server, recorded before anything runs.

    The record is saved, and this process's reaper told, before the first byte of the
    server is written (initdb's data dir, RabbitMQ's config): whenever the owner dies
    from here on, its reaper (or else the next sweep) finds the directory and every
    process marked with the instance, and removes them.
    """
    workdir = make_workdir(service)
    record = LocalRecord(
        service=service,
        instance=owner.instance,
        owner_pid=owner.pid,
        owner_started=owner.started,
        workdir=str(workdir),
        url="",
    )
    record.save()
    watch_record(record)
    return record


def run_recorded(record: LocalRecord, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a preparatory command (initdb) as part of `record`'s instance.

    It runs in its own session, recorded as the instance's process group and marked with
    its LABKIT_INSTANCE, so a reaper or sweep finds it and its children if the owner
    dies meanwhile; an error or an interrupt in the owner kills the whole instance.
    """
    process = None
    try:
        process = subprocess.Popen(
            privilege_prefix() + command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=record.workdir,
            env={**os.environ, INSTANCE_ENV: record.instance},
            start_new_session=True,
        )
        _record_group(record, process.pid)
        out, err = process.communicate()
    except BaseException:
        kill_instance(record)
        if process is not None:
            process.wait()  # killed with the instance: only collected here
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def launch(
    record: LocalRecord,
    command: list[str],
    port: int,
    url: str,
    probe: Callable[[], object],
    timeout: int,
    envvars: dict[str, str] | None = None,
    sig_stop: int = signal.SIGTERM,
) -> tuple[TCPExecutor, LocalRecord, float]:
    """Start the server of `record` (from `new_instance`) and wait until `probe` passes.

    If it fails, or the owner is interrupted meanwhile, the instance is removed.
    """
    record.url = url
    record.save()
    workdir = Path(record.workdir)
    executor = ReadyTCPExecutor(
        privilege_prefix() + command,
        host=LOOPBACK,
        port=port,
        timeout=timeout,
        sleep=0.05,
        probe=probe,
        on_spawn=lambda pid: _record_group(record, pid),
        cwd=str(workdir),
        envvars={INSTANCE_ENV: record.instance, **(envvars or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stop_signal=sig_stop,
    )
    began = time.perf_counter()
    try:
        executor.start()
    except (TimeoutExpired, ProcessExitedWithError) as exc:
        logs = _tail_logs(workdir)
        kill_instance(record)
        raise ServiceError(
            f"local {record.service} did not become ready within {timeout}s "
            f"({exc.__class__.__name__}).\n"
            f"{logs}\nCheck the binary works (`{command[0]} --version`), or use another backend."
        ) from None
    except BaseException:
        kill_instance(record)
        raise
    return executor, record, time.perf_counter() - began


def _record_group(record: LocalRecord, pid: int) -> None:
    """Record `pid`, the leader of a new session (mirakuru starts every server in one,
    run_recorded initdb), as the instance's process group to kill."""
    try:
        record.group_started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return  # exited already: the caller reports how
    record.group = pid
    record.save()


def _tail_logs(workdir: Path, lines: int = 15) -> str:
    tails = []
    for log in sorted(workdir.rglob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails) or "(no log written)"


class LocalBackend:
    """Private servers from the binaries on this machine."""

    name = "local"

    def available(self, spec: ServiceSpec) -> bool:
        return spec.start_local is not None and not spec.missing_binaries()

    def check(self, spec: ServiceSpec) -> str:
        missing = spec.missing_binaries()
        if missing or spec.start_local is None:
            how = "; ".join(b.install for b in spec.binaries if b.name in missing)
            raise ServiceError(
                f"LABKIT_BACKEND=local but {spec.name}'s server is not installed "
                f"({', '.join(missing) or 'no local backend'} not found): "
                f"{how or 'install it'}, or use docker"
            )
        return ""

    def start(self, spec: ServiceSpec, owner: Owner) -> Handle:
        if spec.start_local is None:
            raise ServiceError(
                f"{spec.name} has no local backend: use docker or give {spec.url_env}"
            )
        sweep_local()  # what a dead kernel left behind goes before a new server comes
        return spec.start_local(owner)
