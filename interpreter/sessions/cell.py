"""What one execution in a session gave, kept within its caps as it arrives.

Printed text goes to the execution's output files as a job's does (``StreamCapture``: head and
tail within the output cap, the head told to live streams). Display outputs are MIME bundles:
each within ``bundle_bytes`` (a value over it is left out, the bundle marked ``truncated``, its
``text/plain`` kept when that fits) and all of them within ``total_bytes`` (later bundles are
left out and the result says ``outputs_truncated``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interpreter.process.output import StreamCapture
from interpreter.process.spec import OutputListener
from interpreter.sessions.kernel import CellSink

STREAMS = ("stdout", "stderr")


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    try:
        return len(json.dumps(value))
    except (TypeError, ValueError):
        return -1  # not JSON: left out


class Cell(CellSink):
    def __init__(
        self,
        stdout: Path,
        stderr: Path,
        output_bytes: int,
        listener: OutputListener | None,
        total_bytes: int,
        bundle_bytes: int,
    ) -> None:
        def head(stream: str) -> Any:
            if listener is None:
                return None
            return lambda start, data: listener(stream, start, data)

        self.captures = {
            "stdout": StreamCapture(stdout, output_bytes, head("stdout")),
            "stderr": StreamCapture(stderr, output_bytes, head("stderr")),
        }
        self.total_bytes = total_bytes
        self.bundle_bytes = bundle_bytes
        self.outputs: list[dict[str, Any]] = []
        self.outputs_truncated = False
        self.error_info: dict[str, str] | None = None
        self._used = 0

    def stream(self, name: str, text: str) -> None:
        capture = self.captures.get(name, self.captures["stderr"])
        capture.feed(text.encode("utf-8", "surrogateescape"))

    def bundle(self, kind: str, data: dict[str, Any]) -> None:
        kept: dict[str, Any] = {}
        size = 0
        truncated = False
        for mime, value in data.items():
            if not isinstance(mime, str):
                continue
            length = _size(value)
            if length < 0 or size + length > self.bundle_bytes:
                truncated = True
                continue
            kept[mime] = value
            size += length
        if self._used + size > self.total_bytes:
            self.outputs_truncated = True
            return
        self._used += size
        self.outputs.append({"type": kind, "data": kept, "truncated": truncated})

    def error(self, name: str, value: str, traceback: str) -> None:
        cap = self.bundle_bytes
        self.error_info = {"name": name[:cap], "value": value[:cap], "traceback": traceback[-cap:]}

    def finish(self) -> None:
        for capture in self.captures.values():
            capture.finish()
