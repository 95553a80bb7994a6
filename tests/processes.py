"""Whether a process a test watches is still there, for the leak and sweep tests."""

from __future__ import annotations

import psutil


def process_status(proc: psutil.Process) -> str | None:
    """The process's state, or None once it is gone (a zombie is dead, awaiting its
    parent; a reused pid is another process)."""
    try:
        status = proc.status() if proc.is_running() else None
    except psutil.NoSuchProcess:
        return None
    return None if status == psutil.STATUS_ZOMBIE else status


def alive(proc: psutil.Process) -> bool:
    return process_status(proc) is not None
