"""A tiny app to load-test, with faults you can switch on while a load runs.

Serve it in its own process — ``labkit.load.serve_app("labkit.load_demo:app")`` — and:

- ``GET /ping`` answers at once: the cheapest request, to measure the load generator.
- ``GET /work?cpu_ms=2`` burns that much CPU per request, so the app has a capacity
  (about 1000 / cpu_ms requests per second on one core) and a knee to find.
- ``POST /stall?after_requests=100&for_s=1`` freezes the whole server once, after
  that many more requests, like a stop-the-world garbage collection or a blocking call
  inside ``async def``: nothing is answered while it lasts. Counting requests, not
  seconds, puts the freeze inside the next load run, however long that takes to start.
- ``POST /slowdown?ms=50`` adds that much latency to every later request, like a slow
  dependency; ``ms=0`` removes it.

``labkit.load_demo:bare`` answers every request with "pong" and nothing else — no
framework, no routing — the cheapest app uvicorn can serve, to find the limit of a
load generator rather than of the app.

The demo shop is served the same way by ``labkit.shop.testing:shop`` (with
``labkit.shop.testing.shop_env``).

Faults are switched over HTTP because the app runs in another process: a test or a
lesson changes the real server, not a copy of it in the kernel.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Query

app = FastAPI(title="labkit load demo")
_slowdown_s = 0.0
_stall: dict[str, float] = {}  # requests_left, for_s: the next freeze, if one is armed


@app.middleware("http")
async def injected_faults(request, call_next):
    if _stall:
        _stall["requests_left"] -= 1
        if _stall["requests_left"] <= 0:
            # time.sleep, not asyncio.sleep: it blocks the event loop, so every
            # connection waits, as in a real stop-the-world pause.
            time.sleep(_stall.pop("for_s"))  # noqa: ASYNC251
            _stall.clear()
    if _slowdown_s:
        await asyncio.sleep(_slowdown_s)
    return await call_next(request)


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"pong": "ok"}


@app.get("/work")
async def work(cpu_ms: float = Query(2.0, ge=0, le=1000)) -> dict[str, float]:
    # Busy-waiting (not sleeping) holds the event loop, as real CPU work would:
    # requests queue behind each other, which is what gives the app a capacity.
    deadline = time.perf_counter() + cpu_ms / 1000
    while time.perf_counter() < deadline:
        pass
    return {"cpu_ms": cpu_ms}


@app.post("/stall")
async def stall(
    after_requests: int = Query(1, ge=1, le=1_000_000), for_s: float = Query(1.0, gt=0, le=30)
) -> dict[str, float]:
    _stall.update(requests_left=after_requests, for_s=for_s)
    return {"after_requests": after_requests, "for_s": for_s}


@app.post("/slowdown")
async def slowdown(ms: float = Query(..., ge=0, le=10_000)) -> dict[str, float]:
    global _slowdown_s
    _slowdown_s = ms / 1000
    return {"ms": ms}


async def bare(scope, receive, send) -> None:
    """A raw ASGI app: the least work per request a Python server can do."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"pong"})

