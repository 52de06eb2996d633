"""Wake up requests that wait for a job to finish (the ``?wait=`` long poll)."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class FinalWatch:
    """Who writes a final status calls ``notify``; waiters wake at once instead of polling."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, job_id: str) -> None:
        for event in self._waiters.pop(job_id, ()):
            event.set()

    async def wait(self, job_id: str, timeout_s: float) -> bool:
        """Until ``notify(job_id)`` or the timeout; True if notified."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]
