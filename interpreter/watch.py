"""Wake up requests that wait on a job: the ``?wait=`` long poll (its final status) and the
output stream (``GET /jobs/{id}/stream``: its output grew, its status changed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator


class JobWatch:
    """Who writes a final status calls ``notify``; waiters wake at once instead of polling.

    A stream holds a ``subscribe``d event for as long as it runs: ``wake`` (new output, a status
    change) and ``notify`` (final) set it; the stream clears it before it reads, so that nothing
    written while it reads is missed."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._streams: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, job_id: str) -> None:
        for event in self._waiters.pop(job_id, ()):
            event.set()
        self.wake(job_id)

    def wake(self, job_id: str) -> None:
        """The job's output grew or its status changed: wake its streams (a dict look-up when
        nobody streams it)."""
        for event in self._streams.get(job_id, ()):
            event.set()

    def streams(self, job_id: str) -> int:
        """How many streams follow the job now."""
        return len(self._streams.get(job_id, ()))

    def subscribe(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set by every ``wake`` and ``notify`` of ``job_id`` while the block runs."""
        return _member(self._streams, job_id)

    async def wait(self, job_id: str, timeout_s: float) -> bool:
        """Until ``notify(job_id)`` or the timeout; True if notified."""
        with _member(self._waiters, job_id) as event:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
                return True
            except TimeoutError:
                return False


@contextlib.contextmanager
def _member(table: defaultdict[str, set[asyncio.Event]], job_id: str) -> Iterator[asyncio.Event]:
    """A new event in ``table[job_id]`` while the block runs (the entry goes with its last)."""
    event = asyncio.Event()
    table[job_id].add(event)
    try:
        yield event
    finally:
        events = table.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del table[job_id]
