"""Progress bars for runs and sweeps, shown only once they last long enough to need one."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

PROGRESS_AFTER_S = 3.0  # shorter runs stay quiet

Item = TypeVar("Item")


def wait_with_progress(
    threads: Sequence[threading.Thread], total: int, unit: str, done: Callable[[], int],
    show: bool,
) -> None:
    """Wait for `threads` to end, showing `done()` of `total` `unit`s if `show`."""
    with tqdm(total=total, unit=unit, delay=PROGRESS_AFTER_S, disable=not show,
              leave=False, file=sys.stdout) as bar:
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.2)
            bar.update(done() - bar.n)


def each_with_progress(items: Iterable[Item], desc: str, unit: str) -> Iterator[Item]:
    """`items` one by one, with a bar if going through them takes a while."""
    yield from tqdm(items, desc=desc, unit=unit, leave=False, file=sys.stdout,
                    delay=PROGRESS_AFTER_S)
