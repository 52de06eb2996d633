"""The progress line of ``interpreter run`` on a terminal: ``⠋ job 1234abcd… running 3.2 s`` on
stderr, redrawn by a thread while the job is quiet, erased before any output is written and when
the job ends. Never drawn when stderr is not a terminal."""

from __future__ import annotations

import threading
import time
from typing import BinaryIO

__all__ = ["Progress"]

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TICK_S = 0.1
QUIET_S = 0.3  # the line comes back only after this long without output: no flicker
ERASE = b"\r\x1b[K"


class Progress:
    """Writes the job's output to ``stdout`` / ``stderr`` and, when ``enabled``, a progress line
    on ``stderr`` in between. Use as a context manager; ``write`` and ``set_status`` from the
    thread that follows the job."""

    def __init__(self, job_id: str, stdout: BinaryIO, stderr: BinaryIO, *, enabled: bool) -> None:
        self.job_id = job_id
        self.stdout = stdout
        self.stderr = stderr
        self.enabled = enabled
        self.status = "pending"
        self._lock = threading.Lock()
        self._shown = False
        self._at_line_start = True  # the line is drawn only where it overwrites nothing
        self._last_output = 0.0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._erase()

    def set_status(self, status: str) -> None:
        self.status = status

    def write(self, stream: str, data: bytes) -> None:
        """Write a chunk of the job's output (``stream`` is ``stdout`` or ``stderr``)."""
        if not data:
            return
        target = self.stdout if stream == "stdout" else self.stderr
        with self._lock:
            self._erase()
            target.write(data)
            target.flush()
            self._at_line_start = data.endswith(b"\n")
            self._last_output = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self._started
        frame = FRAMES[int(elapsed / TICK_S) % len(FRAMES)]
        return f"{frame} job {self.job_id[:8]}… {self.status} {elapsed:.1f} s"

    # -- the drawing thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if self._stop.is_set():
                    return
                quiet = time.monotonic() - self._last_output >= QUIET_S
                if self._at_line_start and quiet:
                    self._draw()

    def _draw(self) -> None:
        try:
            self.stderr.write(ERASE + self.line().encode())
            self.stderr.flush()
        except OSError:
            return
        self._shown = True

    def _erase(self) -> None:
        if not self._shown:
            return
        try:
            self.stderr.write(ERASE)
            self.stderr.flush()
        except OSError:
            pass
        self._shown = False
