"""labkit.services.waits and the container helpers lesson 12 uses.

The wait strategies are driven here with stand-in containers (what a strategy sees of a
container is its logs and its published address), so they are proven without Docker;
`containers_of` and `why_no_containers` run against the engine where one answers.
"""

from __future__ import annotations

import time

import pytest

from labkit import services
from labkit.services.waits import LogCountWaitStrategy, QueryWaitStrategy


class StandIn:
    """A container as a wait strategy sees it: logs that grow with time."""

    def __init__(self, *logged: tuple[float, bytes]) -> None:
        self.began, self.logged = time.monotonic(), logged

    def get_logs(self) -> tuple[bytes, bytes]:
        elapsed = time.monotonic() - self.began
        due = [line for at, line in self.logged if at <= elapsed]
        return b"".join(due[::2]), b"".join(due[1::2])  # alternate stdout and stderr


def test_the_query_strategy_retries_until_the_query_answers() -> None:
    calls: list[int] = []

    def query(container: object) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")

    QueryWaitStrategy(query, ConnectionRefusedError).with_poll_interval(0.01).wait_until_ready(
        StandIn()
    )
    assert len(calls) == 3


def test_the_query_strategy_gives_up_at_its_deadline_saying_what_it_waited_for() -> None:
    def select_1(container: object) -> None:
        raise ConnectionRefusedError("connection refused")

    strategy = QueryWaitStrategy(select_1, ConnectionRefusedError)
    strategy.with_poll_interval(0.01).with_startup_timeout(0.2)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="select_1.*connection refused"):
        strategy.wait_until_ready(StandIn())
    assert time.monotonic() - began < 5


def test_the_query_strategy_does_not_retry_other_errors() -> None:
    def broken(container: object) -> None:
        raise ValueError("a bug, not a server starting")

    with pytest.raises(ValueError):
        QueryWaitStrategy(broken, ConnectionRefusedError).wait_until_ready(StandIn())


def test_the_log_count_strategy_counts_a_line_across_both_streams() -> None:
    line = b"ready to accept connections\n"
    container = StandIn((0.0, line), (0.15, line))  # once on stdout, then on stderr
    strategy = LogCountWaitStrategy("ready to accept connections", times=2)
    began = time.monotonic()
    strategy.with_poll_interval(0.01).with_startup_timeout(5).wait_until_ready(container)
    assert time.monotonic() - began >= 0.15
    assert strategy.seen(container) == 2


def test_the_log_count_strategy_says_how_many_times_it_saw_the_line() -> None:
    container = StandIn((0.0, b"ready to accept connections\n"))
    strategy = LogCountWaitStrategy("ready to accept connections", times=2)
    with pytest.raises(TimeoutError, match="logged 1 of 2 times"):
        strategy.with_poll_interval(0.01).with_startup_timeout(0.2).wait_until_ready(container)


def test_no_containers_without_an_image_and_a_reason_that_says_what_to_do() -> None:
    reason = services.why_no_containers("labkit/no-such-image:0")
    assert reason is not None
    assert "no Docker engine answers" in reason or "labkit/no-such-image:0 not on this machine" in reason


@pytest.mark.skipif(not services.engine_answers(), reason="needs a Docker engine")
def test_containers_of_lists_an_owners_containers_and_nothing_else() -> None:
    owner = services.current_owner()
    assert services.containers_of(owner) == []
    image = services.specs()["redis"].image
    if not services.image_present(image):
        pytest.skip(f"{image} is not on this machine")
    client = services.docker_client()
    container = client.containers.create(image, labels=owner.labels)
    try:
        assert services.containers_of(owner) == [f"{container.short_id} (created)"]
        assert services.containers_of(services.current_owner()) == []
    finally:
        container.remove(force=True)
    assert services.containers_of(owner) == []
