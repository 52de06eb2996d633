"""Rate limiting of ``POST /execute``: a fixed window per API key, per client address without auth.

Checked by a pure ASGI middleware before the body is read or parsed, so a refused request costs a
counter increment (microseconds with the memory storage), never a JSON parse or a store write.
Only submissions are limited: status polls, results and cancels are not.

``INTERPRETER_RATE_LIMIT=auto`` (the default) limits nothing without authentication and
``AUTO_PER_KEY`` with it: the pending-job caps are the backpressure, and a limit below what the
server runs would hold a single orchestrator (one address, or one key) below the server's pace.

A fixed window (``limits``' ``FixedWindowRateLimiter``) rather than a moving one: one counter per
identity, O(1) on every storage, and an exact Retry-After (when the window resets); the cost is
that a client may spend two windows' worth in a burst across a window's edge.

``memory://`` (the default) is served by ``MemoryCounters`` below rather than by ``limits``' own
async memory storage, which sweeps every identity's counter after each hit: 0.8 ms a request with
10,000 clients in the window, measured (``bench/abuse_checks.py``); ours sweeps once a second.
Every other URI (``redis://``, ``memcached://``, ...) is ``limits``' asyncio storage for it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Sequence

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from interpreter.api.auth import known_owner, route_path
from interpreter.api.errors import error_response, retry_after
from interpreter.config import Settings
from interpreter.errors import ConfigurationError, RateLimited

logger = logging.getLogger(__name__)

NAMESPACE = "execute"
STORAGE_WARNING_EVERY_S = 60.0
SWEEP_EVERY_S = 1.0
# What costs the server work per request: a job, or an environment built (packages resolved
# and installed). One budget for both.
LIMITED_PATHS = frozenset({"/execute", "/environments", "/sessions", "/api/kernels"})


def limited(path: str) -> bool:
    """Whether a POST to ``path`` counts: code run, environments and kernels started."""
    return path in LIMITED_PATHS or (path.startswith("/sessions/") and path.endswith("/execute"))


AUTO = "auto"
OFF = "off"
# "auto" with authentication: far above what one server runs (85-130 jobs/s measured on 2 cores,
# docs/benchmarks.md), so one client is never held below the server's pace; it bounds a
# runaway loop and key guessing per address. The pending-job caps are the backpressure.
AUTO_PER_KEY = "1000/second"


def effective_rate_limit(settings: Settings) -> str | None:
    """The limit INTERPRETER_RATE_LIMIT sets, None for none: ``off``, or ``auto`` (the
    default) without authentication, where the pending-job caps bound a client; ``auto`` with
    authentication is ``AUTO_PER_KEY``."""
    value = settings.rate_limit.strip()
    if value.lower() == OFF:
        return None
    if value.lower() == AUTO:
        return AUTO_PER_KEY if settings.authentication else None
    return value


def rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter of ``POST /execute`` these settings ask for, if any."""
    limit = effective_rate_limit(settings)
    return None if limit is None else RateLimiter.from_settings(settings, limit)


class MemoryCounters(Storage):
    """Fixed-window counters in this process's memory: O(1) a hit, expired ones dropped once a
    second (so memory holds the identities seen within a window). Not registered as a scheme:
    ``RateLimiter.from_settings`` builds it for ``memory://``."""

    def __init__(self) -> None:
        super().__init__()
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, window end, epoch s)
        self._next_sweep_s = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError  # nothing here fails; limits' wrapper wants a type

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        if now >= self._next_sweep_s:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
            self._next_sweep_s = now + SWEEP_EVERY_S
        count, end = self._counters.get(key, (0, 0.0))
        if end <= now:
            count, end = 0, now + expiry
        self._counters[key] = (count + amount, end)
        return count + amount

    async def get(self, key: str) -> int:
        count, end = self._counters.get(key, (0, 0.0))
        return count if end > time.time() else 0

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        _, end = self._counters.get(key, (0, 0.0))
        return end if end > now else now

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._counters)
        self._counters.clear()
        return count

    async def clear(self, key: str) -> None:
        self._counters.pop(key, None)


class RateLimiter:
    """One or more limits (``120/minute``, ``10/second;120/minute``), counted per identity."""

    def __init__(self, items: Sequence[RateLimitItem], storage: Storage) -> None:
        self.items = tuple(items)
        self.strategy = FixedWindowRateLimiter(storage)
        self._warned_at_s = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings, limit: str | None = None) -> RateLimiter:
        """The limiter of ``limit`` (default: INTERPRETER_RATE_LIMIT) and
        INTERPRETER_RATE_LIMIT_STORAGE; a bad value refuses to start."""
        limit = settings.rate_limit if limit is None else limit
        try:
            items = parse_many(limit)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ConfigurationError(
                f"INTERPRETER_RATE_LIMIT={settings.rate_limit!r} is not a rate limit: write "
                f"'{AUTO}', '{OFF}' or a positive number of requests per period, e.g. "
                "'120/minute', '10 per second' or '10/second;1000/hour'"
            )
        uri = settings.rate_limit_storage
        if uri in ("memory://", "async+memory://"):
            return cls(items, MemoryCounters())
        if not uri.startswith("async+"):  # the same backend through limits' asyncio API
            uri = f"async+{uri}"
        # Redis through redis-py (a dependency: limits[redis]) rather than limits' default coredis
        options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
        try:
            storage = storage_from_string(uri, wrap_exceptions=True, **options)
        except Exception as exc:  # unknown scheme, a driver not installed, a malformed URI
            raise ConfigurationError(
                f"INTERPRETER_RATE_LIMIT_STORAGE={settings.rate_limit_storage!r} cannot be used "
                f"({exc}); memory:// and redis://host:port are supported"
            ) from None
        if not isinstance(storage, Storage):
            raise ConfigurationError(
                f"INTERPRETER_RATE_LIMIT_STORAGE={settings.rate_limit_storage!r} has no asyncio "
                "implementation in the limits library"
            )
        return cls(items, storage)

    def __str__(self) -> str:
        return "; ".join(str(item) for item in self.items)

    async def hit(self, identity: str) -> None:
        """Count one request of ``identity``; raise RateLimited, with when to retry, over a limit.

        If the storage fails (a Redis outage), requests pass: the limiter guards the service
        and must not take it down; a warning is logged once a minute meanwhile."""
        try:
            for item in self.items:
                if not await self.strategy.hit(item, NAMESPACE, identity):
                    stats = await self.strategy.get_window_stats(item, NAMESPACE, identity)
                    wait_s = stats.reset_time - time.time()
                    raise RateLimited(
                        f"rate limit exceeded: {item}; retry in {retry_after(wait_s)} s",
                        retry_after_s=wait_s,
                    )
        except StorageError as exc:
            now = time.monotonic()
            if now - self._warned_at_s >= STORAGE_WARNING_EVERY_S:
                self._warned_at_s = now
                logger.warning("rate limit storage failed; requests pass unlimited: %s", exc)


def client_address(scope: Scope) -> str:
    """The client's address; for IPv6 its /64, which one host usually holds whole."""
    client = scope.get("client")
    host: str = client[0] if client else "unknown"
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class ExecuteRateLimit:
    """Pure ASGI: one hit per ``POST /execute``, ``/environments``, ``/sessions``,
    ``/sessions/{id}/execute`` or ``/api/kernels`` before the body is read; 429 over the limit.

    The identity is the owner of a valid API key (the hash that owns its jobs), or else the
    client's address: without authentication, and for requests whose key is missing or wrong
    (answered 401 next, by ``RequireApiKey``), so that guessing keys is limited too."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, api_keys: tuple[str, ...]) -> None:
        self.app = app
        self.limiter = limiter
        self.api_keys = api_keys  # empty without authentication

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and limited(route_path(scope)):
            try:
                await self.limiter.hit(self.identity(scope))
            except RateLimited as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def identity(self, scope: Scope) -> str:
        if self.api_keys and (owner := known_owner(Headers(scope=scope), self.api_keys)):
            return f"key:{owner}"
        return f"addr:{client_address(scope)}"
