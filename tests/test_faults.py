"""labkit.faults: each fault seen by a real client of a real server, through the proxy.

Clients keep their own timeouts (psycopg's connect_timeout, redis-py's socket_timeout,
pika's socket_timeout): a fault must show as the error that client raises, within its
timeout plus MARGIN_S (a loaded 2-core machine). Delays are checked from below only (a
200 ms latency takes at least 200 ms): never a speed assertion.

Keys are this test's own (`unique_id`) and removed after; PostgreSQL is only read.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import psycopg
import pytest
import redis as redis_lib
import sqlalchemy as sa

from labkit import faults
from labkit.faults import FaultError, Proxy
from labkit.services import Endpoint

MARGIN_S = 5.0  # scheduling delays on a loaded 2-core machine
TIMEOUT_S = 2.0  # the clients' own timeouts in these tests


@pytest.fixture
def redis_proxy(redis: Endpoint) -> Iterator[Proxy]:
    with Proxy(redis.host, redis.port, name="redis") as proxy:
        yield proxy


@pytest.fixture
def pg_proxy(postgres: Endpoint) -> Iterator[Proxy]:
    with Proxy(postgres.host, postgres.port, name="postgres") as proxy:
        yield proxy


@pytest.fixture
def keys(redis: Endpoint, unique_id: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted after (never a flush: the server is shared)."""
    prefix = f"labkit-faults:{unique_id}:"
    yield prefix
    direct = redis_lib.Redis.from_url(redis.url)
    for key in direct.scan_iter(f"{prefix}*"):
        direct.delete(key)
    direct.close()


def redis_via(proxy: Proxy, redis: Endpoint, timeout: float = TIMEOUT_S) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(
        proxy.url_for(redis.url), socket_timeout=timeout, socket_connect_timeout=timeout
    )


def pg_connect(proxy: Proxy, postgres: Endpoint, timeout: int = int(TIMEOUT_S)
               ) -> psycopg.Connection:
    return psycopg.connect(proxy.endpoint_for(postgres).dsn, connect_timeout=timeout,
                           autocommit=True)


def seconds(run: object) -> float:
    started = time.monotonic()
    run()  # type: ignore[operator]
    return time.monotonic() - started


def raw_redis(proxy: Proxy, redis: Endpoint, timeout: float = TIMEOUT_S) -> socket.socket:
    """A plain socket to Redis through `proxy`, logged in: to see the bytes themselves."""
    raw = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
    if redis.password:
        raw.sendall(f"AUTH {redis.password}\r\n".encode())
        assert raw.recv(100) == b"+OK\r\n"
    return raw


# -- passing through -------------------------------------------------------------------


def test_a_proxy_forwards_to_the_server_and_is_found_by_url(redis_proxy, redis, keys):
    url = redis_proxy.url_for(redis.url)
    client = redis_via(redis_proxy, redis)

    assert url.startswith("redis://") and f"127.0.0.1:{redis_proxy.port}" in url
    assert client.set(f"{keys}a", "1") and client.get(f"{keys}a") == b"1"
    assert redis_proxy.connections == 1
    client.close()


def test_a_large_transfer_is_byte_exact_both_ways(redis_proxy, redis, keys):
    payload = os.urandom(8 * 1024 * 1024 + 13)  # many chunks, and a ragged end
    client = redis_via(redis_proxy, redis, timeout=30)

    client.set(f"{keys}big", payload)
    assert client.get(f"{keys}big") == payload
    client.close()


def test_a_large_result_from_postgres_is_byte_exact(pg_proxy, postgres):
    with pg_connect(pg_proxy, postgres) as conn:
        row = conn.execute("SELECT md5(string_agg(i::text, ',')), string_agg(i::text, ',') "
                           "FROM generate_series(1, 400000) AS i").fetchone()
    assert row is not None
    digest, text = row
    assert len(text) > 2_000_000
    assert digest == hashlib.md5(text.encode()).hexdigest()


def test_concurrent_connections_each_get_their_own_answers(redis_proxy, redis, keys):
    errors: list[BaseException] = []
    seen: dict[int, list[int]] = {}

    def worker(n: int) -> None:
        client = redis_via(redis_proxy, redis, timeout=30)
        try:
            seen[n] = [client.incr(f"{keys}counter:{n}") for _ in range(50)]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert seen == {n: list(range(1, 51)) for n in range(16)}


# -- outage ---------------------------------------------------------------------------


def test_an_outage_refuses_new_connections_cuts_open_ones_then_ends(pg_proxy, postgres):
    open_conn = pg_connect(pg_proxy, postgres)

    with pg_proxy.outage():
        with pytest.raises(psycopg.OperationalError):
            open_conn.execute("SELECT 1")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            pg_connect(pg_proxy, postgres)
        refused_after = time.monotonic() - started

    assert refused_after < TIMEOUT_S + MARGIN_S
    with pg_connect(pg_proxy, postgres) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
    open_conn.close()


def test_a_pooled_engine_fails_during_an_outage_and_recovers_after(pg_proxy, postgres):
    engine = sa.create_engine(pg_proxy.endpoint_for(postgres).url, pool_pre_ping=True,
                              connect_args={"connect_timeout": int(TIMEOUT_S)})
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # a warm pool

    with pg_proxy.outage(), pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_rabbitmq_through_an_outage_pika_fails_then_connects(rabbitmq):
    with Proxy(rabbitmq.host, rabbitmq.port, name="rabbitmq") as proxy:
        params = pika.URLParameters(proxy.url_for(rabbitmq.url))
        params.socket_timeout = params.blocked_connection_timeout = TIMEOUT_S
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)

        with proxy.outage():
            with pytest.raises(pika.exceptions.AMQPError):
                connection.channel().queue_declare("", exclusive=True)
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                pika.BlockingConnection(params)

        again = pika.BlockingConnection(params)
        assert again.channel().queue_declare("", exclusive=True).method.queue
        again.close()


# -- freeze ---------------------------------------------------------------------------


def test_a_freeze_times_out_clients_on_their_own_timeouts(redis_proxy, redis, pg_proxy, postgres):
    client = redis_via(redis_proxy, redis)
    client.ping()

    with redis_proxy.freeze(), pg_proxy.freeze():
        ping_took = seconds(lambda: pytest.raises(redis_lib.TimeoutError, client.ping))
        connect_took = seconds(
            lambda: pytest.raises(psycopg.OperationalError, pg_connect, pg_proxy, postgres)
        )

    assert TIMEOUT_S * 0.9 <= ping_took < TIMEOUT_S + MARGIN_S
    assert TIMEOUT_S * 0.9 <= connect_took < TIMEOUT_S + MARGIN_S
    fresh = redis_via(redis_proxy, redis)
    assert fresh.ping()
    fresh.close()
    client.close()


def test_a_freeze_holds_bytes_and_delivers_them_when_it_ends(redis_proxy, redis):
    client = redis_via(redis_proxy, redis, timeout=30)
    client.ping()
    answers: list[object] = []

    with redis_proxy.freeze():
        waiter = threading.Thread(target=lambda: answers.append(client.ping()))
        waiter.start()
        waiter.join(timeout=0.5)
        still_waiting = waiter.is_alive()
    waiter.join(timeout=30)

    assert still_waiting, "a frozen server must not answer"
    assert answers == [True]
    client.close()


# -- latency, bandwidth ---------------------------------------------------------------


def test_latency_delays_each_answer_by_at_least_its_ms(redis_proxy, redis):
    client = redis_via(redis_proxy, redis)
    client.ping()

    with redis_proxy.latency(300):
        one_way = seconds(client.ping)
        with redis_proxy.latency(150, direction="upstream"):
            both_ways = seconds(client.ping)
        with redis_proxy.latency(200, jitter_ms=100):  # stacks: the latest wins
            jittered = [seconds(client.ping) for _ in range(5)]
        back_to_300 = seconds(client.ping)

    assert one_way >= 0.3
    assert both_ways >= 0.45
    assert min(jittered) >= 0.1  # 200 ± 100 ms
    assert back_to_300 >= 0.3
    client.close()


def test_latency_past_the_clients_timeout_is_its_timeout_then_service_returns(
    redis_proxy, redis
):
    client = redis_via(redis_proxy, redis)
    client.ping()

    with redis_proxy.latency(TIMEOUT_S * 1000 * 2), pytest.raises(redis_lib.TimeoutError):
        client.ping()

    fresh = redis_via(redis_proxy, redis)
    assert fresh.ping()
    fresh.close()
    client.close()


def test_bandwidth_limits_a_transfer_and_keeps_it_exact(redis_proxy, redis, keys):
    payload = os.urandom(100_000)
    client = redis_via(redis_proxy, redis, timeout=30)
    client.set(f"{keys}blob", payload)
    answers: list[bytes] = []

    with redis_proxy.bandwidth(100_000):
        took = seconds(lambda: answers.append(client.get(f"{keys}blob")))

    assert took >= 0.9  # 100 kB at 100 kB/s: about a second, never less
    assert answers == [payload]
    client.close()


# -- reset, slow close ----------------------------------------------------------------


def test_reset_peer_breaks_a_stream_midway_with_a_tcp_reset(redis_proxy, redis, keys):
    direct = redis_lib.Redis.from_url(redis.url)
    direct.set(f"{keys}big", b"x" * 1_000_000)
    raw = raw_redis(redis_proxy, redis)
    received = b""

    with redis_proxy.reset_peer(after_bytes=10_000):
        raw.sendall(f"GET {keys}big\r\n".encode())
        with pytest.raises(ConnectionResetError):
            while chunk := raw.recv(65536):
                received += chunk

    assert len(received) == 10_000  # exactly the bytes allowed, then the RST
    raw.close()
    direct.close()


def test_reset_peer_is_a_connection_error_for_redis_py_and_psycopg(
    redis_proxy, redis, pg_proxy, postgres
):
    client = redis_via(redis_proxy, redis)
    client.ping()
    conn = pg_connect(pg_proxy, postgres)

    with redis_proxy.reset_peer(), pg_proxy.reset_peer(after_bytes=100):
        with pytest.raises(redis_lib.ConnectionError, match="reset"):
            client.ping()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT repeat('x', 100000)").fetchone()

    assert redis_via(redis_proxy, redis).ping()
    conn.close()


def test_slow_close_delays_the_servers_close(redis_proxy, redis):
    raw = raw_redis(redis_proxy, redis, timeout=10)

    with redis_proxy.slow_close(800):
        raw.sendall(b"QUIT\r\n")
        started = time.monotonic()
        assert raw.recv(100) == b"+OK\r\n"  # data still flows at once
        assert raw.recv(100) == b""  # and the close comes late
        closed_after = time.monotonic() - started

    assert closed_after >= 0.8
    raw.close()


# -- by service name, on this process's services ---------------------------------------


def test_faults_by_service_name_reach_clients_of_the_proxied_endpoint(redis):
    through = faults.proxied("redis")
    client = redis_lib.Redis.from_url(through.url, socket_timeout=TIMEOUT_S,
                                      socket_connect_timeout=TIMEOUT_S)
    try:
        assert (through.host, through.port) == (faults.proxy("redis").host,
                                                faults.proxy("redis").port)
        assert (through.password, through.url.rsplit("/", 1)[1]) == (
            redis.password, redis.url.rsplit("/", 1)[1])
        assert faults.proxied(redis) == through  # an endpoint you hold, the same proxy

        with faults.outage("redis"), pytest.raises(redis_lib.ConnectionError):
            client.ping()
        on = faults.latency("redis", 200)  # switched on in one cell…
        took = seconds(client.ping)
        on.off()  # …and off in another
        assert took >= 0.2 and client.ping()
    finally:
        client.close()
        faults.proxy("redis").close()


# -- shutting down, bad input -----------------------------------------------------------


def test_closing_a_proxy_cuts_its_connections_and_refuses_new_ones(redis):
    proxy = Proxy(redis.host, redis.port)
    raw = raw_redis(proxy, redis)
    raw.sendall(b"PING\r\n")
    assert raw.recv(100) == b"+PONG\r\n"

    proxy.close()

    assert raw.recv(100) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT_S)
    raw.close()


LAST_PROXY_CLOSED = """
import socket, sys, threading
from labkit import faults

def threads():
    return sorted(t.name for t in threading.enumerate() if t.name == "labkit-faults")

before = threads()
proxies = [faults.Proxy("127.0.0.1", int(sys.argv[1])) for _ in range(2)]
open_conns = [socket.create_connection((p.host, p.port)) for p in proxies]
during = threads()
for p in proxies:
    p.close()
print(before, during, threads())
"""


def test_the_proxies_thread_starts_with_the_first_and_stops_with_the_last(redis):
    """In a fresh process: this one may hold other tests' proxies."""
    run = subprocess.run([sys.executable, "-c", LAST_PROXY_CLOSED, str(redis.port)],
                         check=False, capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[] ['labkit-faults'] []", run.stdout


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.latency(-1), "latency ms must be a number >= 0, got -1"),
        (lambda p: p.latency(10, jitter_ms="x"), "jitter_ms must be a number >= 0"),
        (lambda p: p.latency(10, direction="sideways"), "direction must be 'upstream'"),
        (lambda p: p.bandwidth(0), "bandwidth needs bytes per second > 0, got 0"),
        (lambda p: p.reset_peer(after_bytes=1.5), "whole number of bytes >= 0, got 1.5"),
        (lambda p: p.slow_close(float("nan")), "slow_close ms must be a number >= 0"),
        (lambda p: p.url_for("redis://127.0.0.1:1/0"), "is not this proxy's server"),
        (lambda p: p.url_for("not a url"), "expected a URL with a host"),
    ],
)
def test_bad_input_says_what_was_expected(redis_proxy, make, says):
    with pytest.raises(FaultError, match=re.escape(says)):
        make(redis_proxy)
    assert redis_proxy.faults == []


def test_a_proxy_needs_a_real_port():
    with pytest.raises(FaultError, match="host and TCP port"):
        Proxy("127.0.0.1", 0)
