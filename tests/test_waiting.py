"""labkit.waiting: returns as soon as the effect is there, fails clearly when it never is."""

from __future__ import annotations

import itertools
import time

import pytest

from labkit.waiting import wait_until


def test_returns_the_first_truthy_value():
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "ready", interval=0.001) == "ready"


def test_times_out_with_the_message_and_last_value():
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"queue empty within 0.1s \(last value: 0\)"):
        wait_until(lambda: 0, timeout=0.1, interval=0.01, message="queue empty")
    assert time.monotonic() - began < 1.0


def test_checks_once_even_with_no_time():
    assert wait_until(lambda: True, timeout=0) is True


def test_rejects_a_useless_interval():
    with pytest.raises(ValueError, match="interval > 0"):
        wait_until(lambda: True, interval=0)
