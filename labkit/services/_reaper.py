"""A watchdog per owner: what a process starts dies with it, even when it dies of SIGKILL.

The sweep (`_ownership`) removes a dead owner's servers only when someone starts another
one or runs `labkit down`; a kernel killed by the OOM killer or a pytest run killed by a
CI timeout would leave its servers running until then. So, like Testcontainers' Ryuk
(which removes a session's containers when the session's connection drops), each owner
starts one small process with its first service and tells it, over a pipe, what it
starts: each local server's state file, and that it labelled containers. The owner holds
the pipe's only write end, so whatever ends the owner (exit, SIGTERM, SIGKILL) the
kernel closes it and the reaper reads EOF. It then removes what the owner left (nothing
after a normal exit: the owner stopped its services itself) and exits.

The reaper runs in a session of its own (a kill of the owner's process group spares it)
and is nobody's child (the owner waits only for the launcher, which forks it and exits).
The write end is close-on-exec (servers never inherit it) and is closed in a forked
child (a worker forked by multiprocessing would otherwise keep the owner "alive").

PR_SET_PDEATHSIG would not do: it is Linux only, it fires when the *thread* that started
a server exits (notebook setup() starts services from background threads), and a
signal removes neither a container, nor a data dir, nor a shared-memory segment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

import psutil

import labkit
from labkit.services._base import Owner, owner_alive
from labkit.services._ownership import LocalRecord, kill_instance, sweep_containers

MODULE = "labkit.services._reaper"
CONTAINERS = "containers"
OWNER_POLL_S = 0.2
WITHOUT_REAPER = "if this process is killed, the next start or `labkit down` removes what it left"

_lock = threading.Lock()
_write_end: int | None = None
_told: list[bytes] = []  # every message so far, for a reaper that has to be replaced


def watch_record(record: LocalRecord) -> None:
    """Have this process's reaper remove `record`'s server if this process dies first."""
    _tell({"record": str(record.path.absolute())})


def watch_containers() -> None:
    """Have this process's reaper remove the containers labelled with this process."""
    _tell({CONTAINERS: True})


def reaper_of(pid: int) -> psutil.Process | None:
    """The reaper watching process `pid`, or None (it has none, or the reaper is gone).

    For tests that need the sweep alone, as when the reaper was killed too (the OOM
    killer, `kill -9 -1`).
    """
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        command = proc.info["cmdline"] or []
        watches = MODULE in command and command[command.index(MODULE) + 1:][:1] == [str(pid)]
        if watches and proc.info["ppid"] != pid:  # the launcher, not yet forked, is pid's child
            return proc
    return None


def _tell(message: dict[str, object]) -> None:
    """Send `message` to this process's reaper, starting (or replacing) it if needed.

    Never fails a start: without a reaper, the next start or `labkit down` sweeps.
    """
    global _write_end
    line = (json.dumps(message) + "\n").encode()
    with _lock:
        _told.append(line)
        try:
            if _write_end is not None:
                try:
                    os.write(_write_end, line)
                    return
                except BrokenPipeError:  # the reaper died (killed): a new one hears it all
                    os.close(_write_end)
                    _write_end = None
            _write_end = _start_reaper()
            os.write(_write_end, b"".join(_told))
        except OSError as exc:
            print(f"labkit: no reaper for this process ({exc}); {WITHOUT_REAPER}",
                  file=sys.stderr)


def _start_reaper() -> int:
    """Start this process's reaper; returns the write end of the pipe it watches."""
    me = psutil.Process()
    read_end, write_end = os.pipe()  # close-on-exec: no server inherits either end
    package_root = str(Path(labkit.__file__).resolve().parents[1])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(me.pid), repr(me.create_time())],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",  # holds no directory of the owner's open
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            start_new_session=True,
        )
    except OSError:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    # The launcher forks the reaper and exits; waiting for it (in the background: a
    # start must not wait for an interpreter to boot) leaves no zombie and reports a
    # reaper that could not start.
    threading.Thread(target=_report_failure, args=(launcher,), daemon=True).start()
    return write_end


def _report_failure(launcher: subprocess.Popen[bytes]) -> None:
    _, err = launcher.communicate()
    if launcher.returncode:
        lines = err.decode(errors="replace").strip().splitlines()[-3:]
        print(
            f"labkit: the reaper did not start (exit {launcher.returncode}): {' '.join(lines)}\n"
            f"labkit: {WITHOUT_REAPER}",
            file=sys.stderr,
        )


def _forget_in_child() -> None:
    """A forked child is another owner: it must not hold its parent's pipe open."""
    global _lock, _write_end
    _lock = threading.Lock()  # another thread may have held it at the fork
    _told.clear()
    if _write_end is not None:
        os.close(_write_end)
        _write_end = None


os.register_at_fork(after_in_child=_forget_in_child)


def read_until_eof(stream: Iterable[bytes]) -> tuple[list[Path], bool]:
    """What the owner told: state files of local servers, and whether it ran containers."""
    records: list[Path] = []
    containers = False
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a line cut short by the owner's death
        if "record" in message:
            records.append(Path(message["record"]))
        containers = containers or bool(message.get(CONTAINERS))
    return records, containers


def wait_until_gone(owner: Owner) -> None:
    """Return once the owner is gone: EOF without its death means someone closed the pipe.

    A zombie is gone (it runs nothing; its parent may never collect it).
    """
    while owner_alive(owner.pid, owner.started):
        try:
            if psutil.Process(owner.pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(OWNER_POLL_S)


def reap(owner: Owner, records: list[Path], containers: bool) -> None:
    """Remove what `owner` started and did not stop: its local servers, its containers."""
    for path in dict.fromkeys(records):
        try:
            record = LocalRecord.load(path)
        except (OSError, ValueError, TypeError):
            continue  # stopped by its owner (or swept) already
        if record.owner_pid == owner.pid:
            try:
                kill_instance(record)
            except Exception:  # noqa: BLE001 (the others still go; the sweep retries this one)
                traceback.print_exc()
    if containers:
        import docker  # only for an owner that ran containers: it costs ~0.3 s

        sweep_containers(docker.from_env(timeout=10), owner=owner)


def main(argv: list[str]) -> None:
    owner = Owner(pid=int(argv[0]), started=float(argv[1]), instance="")
    if os.fork():
        os._exit(0)  # the launcher: the owner collects it, the reaper is nobody's child
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the owner's pipe closes: its reader sees the launcher's exit
    records, containers = read_until_eof(sys.stdin.buffer)
    wait_until_gone(owner)
    reap(owner, records, containers)


if __name__ == "__main__":
    main(sys.argv[1:])
