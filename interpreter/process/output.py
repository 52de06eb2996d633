"""Capped capture of one output stream to disk.

A ``StreamCapture`` reads one pipe as data arrives (``loop.add_reader``) and keeps at most
``limit_bytes`` of it: the first half (the head) is written straight to the file, the most recent
half (the tail) lives in a bounded ring buffer of at most ``limit_bytes - limit_bytes // 2``
bytes. ``finish()`` appends, when the stream was longer than the limit, a marker line and the
tail. Memory stays bounded however much the process writes, and the pipe is always drained, so
the writer never blocks on a full pipe. Bytes are stored as written; decoding is the caller's job.

``on_head`` (optional) is told of every piece of the head as it reaches the file, with its offset
in the file: what a live stream of the output follows. The tail is not announced live: it reaches
the file (after the marker) when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW


def truncation_marker(dropped_bytes: int) -> bytes:
    """The line that stands for the ``dropped_bytes`` left out between head and tail."""
    return f"\n[... {dropped_bytes} bytes truncated ...]\n".encode()


class StreamCapture:
    """Capture one stream into ``path``, keeping its head and tail within ``limit_bytes``."""

    def __init__(
        self,
        path: Path,
        limit_bytes: int,
        on_head: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.path = path
        self._on_head = on_head
        self.total_bytes = 0
        self._head_cap = max(limit_bytes, 0) // 2
        self._tail_cap = max(limit_bytes, 0) - self._head_cap
        self._head_len = 0
        self._ring = bytearray()  # grows up to _tail_cap, then wraps at _ring_pos
        self._ring_pos = 0
        # The file is created at the first byte: most jobs never write to stderr, and creating a
        # file costs ~0.2 ms on a journaled disk. A stream that stays empty leaves no file.
        self._file_fd: int | None = None
        self._closed = False
        self._write_failed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipe_fd: int | None = None
        self._eof: asyncio.Future[None] | None = None

    @property
    def truncated(self) -> bool:
        return self.total_bytes > self._head_cap + self._tail_cap

    # -- reading -------------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, pipe_fd: int) -> None:
        """Own ``pipe_fd`` (the read end of a pipe) and consume it on ``loop`` until EOF."""
        os.set_blocking(pipe_fd, False)
        self._loop = loop
        self._pipe_fd = pipe_fd
        self._eof = loop.create_future()
        loop.add_reader(pipe_fd, self._on_readable)

    def _on_readable(self) -> None:
        if self._pipe_fd is None:
            return
        try:
            data = os.read(self._pipe_fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading %s failed: %s", self.path, exc)
            data = b""
        if not data:
            self.detach()
            return
        self.feed(data)

    async def wait_eof(self, timeout_s: float) -> bool:
        """Wait until the writers closed the pipe; False if ``timeout_s`` passed first."""
        if self._eof is None or self._eof.done():
            return True
        done, _ = await asyncio.wait({self._eof}, timeout=timeout_s)
        return bool(done)

    def detach(self) -> None:
        """Stop reading and close the pipe (idempotent)."""
        fd, self._pipe_fd = self._pipe_fd, None
        if fd is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(fd)
        os.close(fd)
        if self._eof is not None and not self._eof.done():
            self._eof.set_result(None)

    # -- storing -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Account for ``data``: the head goes to disk, the rest through the tail ring."""
        self.total_bytes += len(data)
        view = memoryview(data)
        if self._head_len < self._head_cap:
            take = min(self._head_cap - self._head_len, len(view))
            self._write(view[:take])
            if self._on_head is not None:
                try:
                    self._on_head(self._head_len, bytes(view[:take]))
                except Exception:  # a listener's fault never costs the job its output
                    logger.exception("output listener failed")
            self._head_len += take
            view = view[take:]
        if view:
            self._push_tail(view)

    def _push_tail(self, view: memoryview) -> None:
        cap = self._tail_cap
        if cap == 0:
            return
        if len(view) >= cap:
            self._ring[:] = view[len(view) - cap :]
            self._ring_pos = 0
            return
        if len(self._ring) < cap:  # still filling: append
            take = min(cap - len(self._ring), len(view))
            self._ring += view[:take]
            view = view[take:]
            if not view:
                return
        first = min(len(view), cap - self._ring_pos)
        self._ring[self._ring_pos : self._ring_pos + first] = view[:first]
        rest = len(view) - first
        if rest:
            self._ring[:rest] = view[first:]
        self._ring_pos = (self._ring_pos + len(view)) % cap

    def _tail(self) -> bytes:
        return bytes(self._ring[self._ring_pos :] + self._ring[: self._ring_pos])

    def _open(self) -> int | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file_fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            self._write_failed = True
            logger.warning("cannot create %s, its output is lost: %s", self.path, exc)
        return self._file_fd

    def create_file(self) -> None:
        """Create the file now, empty if nothing was written yet (a cancelled job: a job record
        may be deleted, its files with it, once it is final; what the process writes while it
        is being killed then goes to the unlinked file, and never makes one anew)."""
        if self._file_fd is None and not self._closed and not self._write_failed:
            self._open()

    def _write(self, data: memoryview | bytes) -> None:
        if self._closed or self._write_failed or not data:
            return
        if self._file_fd is None and self._open() is None:
            return
        assert self._file_fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._file_fd, view) :]
        except OSError as exc:
            self._write_failed = True
            logger.warning("writing %s failed, the rest of it is lost: %s", self.path, exc)

    def finish(self) -> None:
        """Stop reading, write the marker and the tail, and close the file."""
        self.detach()
        if self._closed:
            return
        if self.truncated:
            dropped = self.total_bytes - self._head_cap - self._tail_cap
            self._write(truncation_marker(dropped))
        self._write(self._tail())
        self._ring = bytearray()
        self.close()

    def close(self) -> None:
        """Release everything without writing the tail (idempotent)."""
        self.detach()
        self._closed = True
        fd, self._file_fd = self._file_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
