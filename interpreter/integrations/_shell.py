"""What both adapters do alike: run a command as a ``shell`` job in a named working directory,
with the async client they were given or one of their own, and read its exit status."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from interpreter.client import AsyncClient, Result

TIMEOUT_EXIT_CODE = 124  # as `timeout(1)` and the frameworks' own backends report a timeout
CANCELLED_EXIT_CODE = 125
SIGNAL_EXIT_BASE = 128  # a shell reports death by signal N as 128 + N


def new_directory_name(prefix: str) -> str:
    """A fresh named working directory, e.g. ``sandbox-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def exit_code(result: Result) -> int | None:
    """The job's exit code as a shell would give it: ``128 + N`` for a job killed by signal N,
    124 for a timeout, 125 for a cancelled job; None when the job never ran."""
    if result.timed_out:
        return TIMEOUT_EXIT_CODE
    if result.status == "cancelled":
        return CANCELLED_EXIT_CODE
    if result.exit_code is not None:
        return result.exit_code
    if result.signal is not None:
        return SIGNAL_EXIT_BASE + result.signal
    return None


def truncated(result: Result) -> bool:
    """Whether the server cut stdout or stderr at its output cap."""
    return bool(result.raw.get("stdout_truncated") or result.raw.get("stderr_truncated"))


def server_note(result: Result) -> str | None:
    """The server's sentence on why a job ended other than by exiting (timeout, memory limit,
    a signal, ...), or None when it simply exited."""
    if result.termination_reason in (None, "exit") and result.status != "cancelled":
        return None
    return result.error_message or result.termination_reason or result.status


@asynccontextmanager
async def async_client(
    given: AsyncClient | None, base_url: str | None, api_key: str | None
) -> AsyncIterator[AsyncClient]:
    """``given``, or a client of this call alone (an ``httpx.AsyncClient`` belongs to the event
    loop it first ran in, and an adapter may be called from several)."""
    if given is not None:
        yield given
        return
    async with AsyncClient(base_url, api_key) as client:
        yield client
