"""What the API's abuse checks add to a ``POST /execute``: a micro benchmark, in process.

    .venv/bin/python bench/abuse_checks.py

Times the rate-limit middleware and the body-size middleware around an ASGI app that does
nothing, against that app alone, with the default memory storage: one client, and 10,000
clients (each identity has its own counter). The limit is set high enough that every request
passes, so the figure is the cost every accepted submission pays. The last line is the same
check on ``limits``' own async memory storage, which ``memory://`` does not use (it sweeps every
counter after each hit).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from limits import parse_many
from limits.aio.storage import MemoryStorage

from interpreter.api.bodylimit import BodySizeLimit
from interpreter.api.ratelimit import ExecuteRateLimit, RateLimiter
from interpreter.config import Settings

ROUNDS = 7
CALLS = 20_000
KEYS = ("bench-key-1", "bench-key-2", "bench-key-3")


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


def scope(client: int, key: str | None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"40")]
    if key is not None:
        headers.append((b"x-api-key", key.encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": "/execute",
        "root_path": "",
        "headers": headers,
        "client": (f"10.{client >> 16 & 255}.{client >> 8 & 255}.{client & 255}", 5000),
    }


async def per_call_us(app: Any, scopes: list[dict[str, Any]]) -> float:
    """Median over rounds of the mean time of one call, in microseconds."""
    results = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for i in range(CALLS):
            await app(scopes[i % len(scopes)], receive, send)
            await asyncio.sleep(0)  # let background work (the storage's expiry task) run
        results.append((time.perf_counter() - start) / CALLS * 1e6)
    return statistics.median(results)


async def main() -> None:
    settings = Settings(rate_limit="1000000000/minute")
    cases = [
        ("no auth, 1 client", [scope(0, None)], ()),
        ("no auth, 10,000 clients", [scope(i, None) for i in range(10_000)], ()),
        ("auth, 3 keys", [scope(0, k) for k in KEYS], KEYS),
    ]
    base = await per_call_us(nothing, [scope(0, None)])
    print(f"bare ASGI call: {base:.2f} us")
    for name, scopes, keys in cases:
        limited = ExecuteRateLimit(nothing, RateLimiter.from_settings(settings), api_keys=keys)
        both = BodySizeLimit(limited, max_bytes=settings.max_body_bytes)
        rate_us = await per_call_us(limited, scopes) - base
        both_us = await per_call_us(both, scopes) - base
        print(f"{name:26} rate limit +{rate_us:5.2f} us; with body-size check +{both_us:5.2f} us")
    theirs = RateLimiter(parse_many(settings.rate_limit), MemoryStorage())
    limited = ExecuteRateLimit(nothing, theirs, api_keys=())
    scopes = [scope(i, None) for i in range(10_000)]
    rate_us = await per_call_us(limited, scopes) - base
    print(f"limits' async memory storage, 10,000 clients: rate limit +{rate_us:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
