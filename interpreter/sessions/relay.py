"""Jupyter messages between a websocket client and a session's kernel (the Kernel Gateway's
``/api/kernels/{id}/channels``), as JSON text frames: ``{channel, header, parent_header,
metadata, content}``.

A client's message is checked (a known type on shell or control, dicts where the protocol has
them), re-signed with the kernel's key and sent; ``input()`` is never offered (``allow_stdin``
off: there is no stdin channel). Every message the kernel sends on shell, iopub and control goes
back as one frame; binary buffers are left out (the JSON frames carry none).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import zmq
from jupyter_client.jsonutil import json_default

from interpreter.errors import InvalidRequest
from interpreter.sessions.kernel import Kernel

logger = logging.getLogger(__name__)

SHELL_TYPES = frozenset(
    {
        "execute_request",
        "kernel_info_request",
        "complete_request",
        "inspect_request",
        "is_complete_request",
        "history_request",
        "comm_info_request",
        "comm_open",
        "comm_msg",
        "comm_close",
    }
)
# No shutdown_request: a client ends its kernel with DELETE /api/kernels/{id}
CONTROL_TYPES = frozenset({"interrupt_request", "kernel_info_request"})
CHANNELS = ("shell", "iopub", "control")
MAX_FRAME_BYTES = 4 * 2**20  # a client's message (code and all); the kernel's are capped apart
QUEUED_FRAMES = 16  # the kernel's messages waiting for a slow client


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be an object")
    return value


class Relay:
    def __init__(self, kernel: Kernel) -> None:
        assert kernel.client is not None
        self.kernel = kernel
        self.client = kernel.client

    def send(self, frame: str | bytes) -> None:
        """Send one client frame to the kernel; ``InvalidRequest`` for one it cannot take."""
        if len(frame) > MAX_FRAME_BYTES:
            raise InvalidRequest(f"a frame may be at most {MAX_FRAME_BYTES} bytes")
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):
            raise InvalidRequest("a frame must be a JSON message") from None
        data = _dict(data, "a message")
        channel = data.get("channel") or "shell"
        if not isinstance(channel, str):
            raise InvalidRequest("channel must be a string")
        header = _dict(data.get("header"), "header")
        kind, msg_id = header.get("msg_type"), header.get("msg_id")
        if not isinstance(kind, str) or not isinstance(msg_id, str):
            raise InvalidRequest("header must have msg_type and msg_id")
        allowed = {"shell": SHELL_TYPES, "control": CONTROL_TYPES}.get(channel)
        if allowed is None or kind not in allowed:
            raise InvalidRequest(f"{kind} is not taken on the {channel} channel")
        content = _dict(data.get("content"), "content")
        if kind == "execute_request":
            content = {**content, "allow_stdin": False}
        message = {
            "header": header,
            "msg_id": msg_id,
            "msg_type": kind,
            "parent_header": _dict(data.get("parent_header"), "parent_header"),
            "metadata": _dict(data.get("metadata"), "metadata"),
            "content": content,
        }
        target = self.client.shell_channel if channel == "shell" else self.client.control_channel
        try:
            target.send(message)
        except (TypeError, ValueError, RecursionError):  # not a message JSON can carry
            raise InvalidRequest("the message cannot be sent as JSON") from None

    async def frames(self) -> AsyncIterator[str]:
        """The kernel's messages as frames, until the kernel ends."""
        out: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUED_FRAMES)
        readers = [
            asyncio.create_task(self._read(name, out), name=f"relay {name}") for name in CHANNELS
        ]
        ended = self.kernel.ended
        try:
            while True:
                getting = asyncio.ensure_future(out.get())
                done, _ = await asyncio.wait({getting, ended}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    return
                yield getting.result()
        finally:
            for reader in readers:
                reader.cancel()

    async def _read(self, channel: str, out: asyncio.Queue[str]) -> None:
        get = {
            "shell": self.client.get_shell_msg,
            "iopub": self.client.get_iopub_msg,
            "control": self.client.get_control_msg,
        }[channel]
        while True:
            try:
                msg = await get()
            except (asyncio.CancelledError, zmq.ZMQError):
                raise
            except Exception as exc:  # not a message we can read (the kernel is untrusted)
                logger.warning("a kernel message was dropped: %s", type(exc).__name__)
                continue
            frame = {
                "channel": channel,
                "header": msg.get("header", {}),
                "msg_id": msg.get("msg_id"),
                "msg_type": msg.get("msg_type"),
                "parent_header": msg.get("parent_header", {}),
                "metadata": msg.get("metadata", {}),
                "content": msg.get("content", {}),
                "buffers": [],
            }
            try:
                text = json.dumps(frame, default=json_default)
            except (TypeError, ValueError, RecursionError) as exc:
                logger.warning("a kernel message was dropped: %s", type(exc).__name__)
                continue
            await out.put(text)
