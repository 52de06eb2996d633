"""Where a running job's output goes as it arrives, for ``GET /jobs/{id}/stream`` to follow.

The runner tells a ``LiveOutput`` of each piece of a job's output head as its capture writes it
to the job's output file (``process.output.StreamCapture``), with its offset in that file.

- ``WakeStreams`` (embedded): the streams of this process read the output file itself; they are
  only woken (``JobWatch.wake``), a dict look-up per piece when nobody streams the job.
- ``ChunkPublisher`` (scale-out, in a worker): the pieces go into the store (``job_chunks``),
  any API replica reads them there, woken by the database (NOTIFY from the table's trigger).
  Writes are batched: at most one insert of every job's pieces per ``window_s`` (adjacent
  pieces of a stream merged into one row), so a job printing in a tight loop costs at most one
  write per window, and a print after a quiet spell is published at once. Only the head is
  published, so a job keeps at most ``max_output_bytes`` there; the rows go once the job is
  final (``Execution``) or with the job (retention).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from interpreter.errors import StoreError
from interpreter.job import OutputChunk
from interpreter.store.base import JobStore
from interpreter.watch import JobWatch

logger = logging.getLogger(__name__)

PUBLISH_WINDOW_S = 0.015


class LiveOutput(Protocol):
    def write(self, job_id: str, stream: str, start: int, data: bytes) -> None:
        """``data`` reached the job's ``stream`` file at byte ``start`` (on the event loop)."""

    def forget(self, job_id: str) -> None:
        """The job's process ended: drop what is still unpublished of its output (its whole
        output is stored with its end, which the streams read once it is final)."""


class WakeStreams:
    """Embedded: the streams read the output files; wake them."""

    def __init__(self, watch: JobWatch) -> None:
        self.watch = watch

    def write(self, job_id: str, stream: str, start: int, data: bytes) -> None:
        self.watch.wake(job_id)

    def forget(self, job_id: str) -> None:
        return None


class ChunkPublisher:
    """Scale-out: the pieces into the store, at most one write per window: a piece that comes
    after a quiet window is published at once, the rest of a busy one at its end."""

    def __init__(self, store: JobStore, window_s: float = PUBLISH_WINDOW_S) -> None:
        self.store = store
        self.window_s = window_s
        self._pending: dict[str, list[OutputChunk]] = {}
        self._lock = asyncio.Lock()  # writes in order: a stream's rows land as written
        self._publisher: asyncio.Task[None] | None = None
        self._last_publish = float("-inf")

    def write(self, job_id: str, stream: str, start: int, data: bytes) -> None:
        pieces = self._pending.setdefault(job_id, [])
        last = pieces[-1] if pieces else None
        if last is not None and last.stream == stream and last.end == start:
            pieces[-1] = OutputChunk(stream, last.start, last.data + data)
        else:
            pieces.append(OutputChunk(stream, start, data))
        if self._publisher is None or self._publisher.done():
            loop = asyncio.get_running_loop()
            delay = self._last_publish + self.window_s - loop.time()
            self._publisher = loop.create_task(self._publish_pending(delay), name="live-output")

    async def _publish_pending(self, delay_s: float) -> None:
        """Publish what is pending after ``delay_s``, and again a window later for as long as
        pieces keep coming meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            async with self._lock:
                self._last_publish = loop.time()
                pending, self._pending = self._pending, {}
                for job_id, pieces in pending.items():
                    await self._publish(job_id, pieces)
            if not self._pending:
                return
            delay_s = self._last_publish + self.window_s - loop.time()

    def forget(self, job_id: str) -> None:
        # Nothing awaited between the process's end and its final status: an insert there would
        # delay every job's end by a round trip, for output the streams read from job_outputs.
        self._pending.pop(job_id, None)

    async def _publish(self, job_id: str, pieces: list[OutputChunk]) -> None:
        try:
            await self.store.add_chunks(job_id, pieces)
        except StoreError as exc:
            # Live output only: the job's whole output reaches job_outputs when it ends.
            logger.warning("live output not published: %s", exc, extra={"job_id": job_id})
