"""A Server-Sent Events reader for the tests of ``GET /jobs/{id}/stream`` (as a browser's
EventSource parses them), and what a job's output events add up to."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class Event:
    name: str
    id: str | None
    data: str
    received: float = 0.0  # time.time() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def bytes(self) -> bytes:
        """An output event's exact bytes."""
        body = self.json
        if "base64" in body:
            return base64.b64decode(body["base64"])
        return str(body["text"]).encode()


@dataclass
class Comments:
    seen: list[str] = field(default_factory=list)


async def events(
    response: httpx.Response, comments: Comments | None = None
) -> AsyncIterator[Event]:
    """The events of a streamed response, as they arrive."""
    buffer = ""
    name, data, event_id = "message", [], None
    async for text in response.aiter_text():
        buffer += text
        while True:
            match = LINE_END.search(buffer)
            if match is None or (match.group() == "\r" and match.end() == len(buffer)):
                break  # a line not ended yet (or a CR that a LF may follow)
            line, buffer = buffer[: match.start()], buffer[match.end() :]
            if line == "":
                if data:
                    yield Event(name, event_id, "\n".join(data), time.time())
                name, data = "message", []
                continue
            if line.startswith(":"):
                if comments is not None:
                    comments.seen.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value


def output(received: list[Event], stream: str, start: int = 0) -> bytes:
    """What a stream's events add up to from byte ``start``; each must begin where the one
    before it ended (nothing lost, nothing repeated)."""
    out = b""
    for event in received:
        if event.name == stream:
            assert event.json["offset"] == start + len(out), f"{stream}: a gap or a repeat"
            out += event.bytes
    return out
