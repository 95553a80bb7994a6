"""Progress bars for runs and sweeps, shown only once they last long enough to need one.

In a terminal a finished bar is erased. In a notebook erasing cannot work: the cell's
output keeps the erased line as a blank one, so there the bar ends as one final line
(what ran, how long it took).
"""

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
              leave=_in_notebook(), file=sys.stdout) as bar:
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.2)
            bar.update(done() - bar.n)


def each_with_progress(items: Iterable[Item], desc: str, unit: str) -> Iterator[Item]:
    """`items` one by one, with a bar if going through them takes a while."""
    yield from tqdm(items, desc=desc, unit=unit, leave=_in_notebook(), file=sys.stdout,
                    delay=PROGRESS_AFTER_S)


def _in_notebook() -> bool:
    """True in a Jupyter kernel, where stdout is a cell's output rather than a terminal."""
    return "ipykernel" in sys.modules and not sys.stdout.isatty()
