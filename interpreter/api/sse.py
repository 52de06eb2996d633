"""A job's output as Server-Sent Events (``GET /jobs/{job_id}/stream``).

Events, each with ``id: <stdout offset>:<stderr offset>`` (the bytes of each stream sent so far,
counted in what the job's output holds; ``Last-Event-ID`` resumes from there):

- ``status``: ``{"status": ...}``, first the job's current status, then each change;
- ``stdout`` / ``stderr``: ``{"offset": n, "text": "..."}``, the stream's bytes from byte ``n``,
  cut only between UTF-8 characters (a character split across writes waits for its last byte);
  ``"base64"`` is added, with the exact bytes, when they are not valid UTF-8 (``text`` then has
  U+FFFD in their place). JSON keeps ``\\r``, lone newlines and every other byte on one line;
- ``end``: ``{"status", "exit_code", "termination_reason", "error_message"}``, last, once the
  job is final and everything it wrote was sent.

A comment (``: keep-alive``) goes out after ``keepalive_s`` without an event. The generator
is cancelled when the client goes away (Starlette's ``StreamingResponse`` listens for the
disconnect), which releases its subscription: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from interpreter.errors import InvalidRequest, JobNotFound, StoreError
from interpreter.job import Job, JobStatus, termination_reason
from interpreter.service import JobService

KEEPALIVE_S = 15.0
RECHECK_S = 1.0  # re-read the job this often anyway, in case a wake-up was missed
EVENT_BYTES = 64 * 1024  # of output in one event at most
EVENT_ID = re.compile(r"^([0-9]{1,19}):([0-9]{1,19})$")
MAX_OFFSET = 2**62  # far past any output a job keeps; a file offset the kernel takes
EVENT_ID_RULE = (
    "Last-Event-ID must be <stdout offset>:<stderr offset>, two whole numbers of bytes "
    f"from 0 to {MAX_OFFSET}"
)
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class Offsets:
    """How many bytes of each stream were sent."""

    stdout: int = 0
    stderr: int = 0

    @classmethod
    def parse(cls, event_id: str | None) -> Offsets:
        """The offsets a ``Last-Event-ID`` names (none: from the start); ``InvalidRequest``."""
        if event_id is None or event_id == "":
            return cls()
        match = EVENT_ID.match(event_id)
        if match is None or max(int(match.group(1)), int(match.group(2))) > MAX_OFFSET:
            raise InvalidRequest(EVENT_ID_RULE)
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def event_id(self) -> str:
        return f"{self.stdout}:{self.stderr}"

    def of(self, stream: str) -> int:
        return self.stdout if stream == "stdout" else self.stderr

    def advanced(self, stream: str, count: int) -> Offsets:
        if stream == "stdout":
            return replace(self, stdout=self.stdout + count)
        return replace(self, stderr=self.stderr + count)


def complete_prefix(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 character it ends in the middle of (a lead byte
    whose continuation bytes are still to come)."""
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for its lead
            continue
        if byte >> 5 == 0b110:
            needed = 2
        elif byte >> 4 == 0b1110:
            needed = 3
        elif byte >> 3 == 0b11110:
            needed = 4
        else:
            return size  # ASCII or an invalid byte: nothing to wait for
        return size - back if needed > back else size
    return size


def pieces(data: bytes, limit: int = EVENT_BYTES) -> list[bytes]:
    """``data`` in pieces of at most ``limit`` bytes, cut between UTF-8 characters."""
    out = []
    while len(data) > limit:
        cut = limit
        while cut > limit - 3 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        out.append(data[:cut])
        data = data[cut:]
    if data:
        out.append(data)
    return out


def event(name: str, data: dict[str, Any], offsets: Offsets) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\nid: {offsets.event_id}\ndata: {body}\n\n".encode()


def output_data(start: int, piece: bytes) -> dict[str, Any]:
    try:
        return {"offset": start, "text": piece.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "offset": start,
            "text": piece.decode("utf-8", errors="replace"),
            "base64": base64.b64encode(piece).decode("ascii"),
        }


def end_data(job: Job) -> dict[str, Any]:
    reason = termination_reason(job)
    return {
        "status": job.status.value,
        "exit_code": job.result.exit_code if job.result else None,
        "termination_reason": reason.value if reason is not None else None,
        "error_message": job.error_message,
    }


async def job_events(
    service: JobService,
    job_id: str,
    owner: str | None,
    start: Offsets,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """The job's events from ``start`` until its ``end`` (see the module's docstring).

    Each wake-up reads the output from the offsets; the job itself (its status) is read again
    only when that read found nothing, or ``RECHECK_S`` after the last time: a job's status does
    not change while its output flows, except to final, and a final job's last output is
    read (and its live output dropped, scale-out) only after the status says so."""
    loop = asyncio.get_running_loop()
    offsets = start
    sent_status: JobStatus | None = None
    quiet_since = loop.time()
    job: Job | None = None
    read_at = 0.0
    with service.queue.watch.subscribe(job_id) as woken:
        while True:
            woken.clear()  # before reading: a write landing meanwhile wakes the next wait
            fresh = job is None or loop.time() - read_at >= RECHECK_S
            try:
                if fresh:
                    job = await service.get(job_id, owner)
                    read_at = loop.time()
                assert job is not None
                output = await service.output_since(job, offsets.stdout, offsets.stderr)
            except JobNotFound:  # deleted meanwhile (retention): nothing more to send
                return
            except StoreError:  # an outage: the connection stays, the reads are tried again
                await asyncio.sleep(RECHECK_S)
                if loop.time() >= quiet_since + keepalive_s:
                    yield KEEPALIVE
                    quiet_since = loop.time()
                continue
            if job.status != sent_status:
                sent_status = job.status
                yield event("status", {"status": sent_status.value}, offsets)
            sent = 0
            for stream, data in (("stdout", output.stdout), ("stderr", output.stderr)):
                if not job.is_final:
                    data = data[: complete_prefix(data)]
                for piece in pieces(data):
                    begin = offsets.of(stream)
                    offsets = offsets.advanced(stream, len(piece))
                    yield event(stream, output_data(begin, piece), offsets)
                    sent += 1
            if job.is_final:
                if not output.stdout and not output.stderr:
                    yield event("end", end_data(job), offsets)
                    return
                continue  # a final job's output is read to its end before ``end``
            if not output.stdout and not output.stderr and not fresh:
                read_at = 0.0  # nothing new: what woke us may be its status
                continue
            now = loop.time()
            if sent:
                quiet_since = now
            wait_s = min(RECHECK_S, quiet_since + keepalive_s - now)
            try:
                await asyncio.wait_for(woken.wait(), max(wait_s, 0.0))
            except TimeoutError:
                if loop.time() >= quiet_since + keepalive_s:
                    yield KEEPALIVE
                    quiet_since = loop.time()
