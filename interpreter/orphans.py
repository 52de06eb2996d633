"""Find and kill what jobs left running when the server itself died (SIGKILL, OOM, power).

A job's processes carry its private TMPDIR in their environment and usually run in its working
directory; after a restart, those two marks find them among the host's processes. (The sandbox
(the default) makes this moot: bubblewrap's --die-with-parent takes them down with the server.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

import psutil

logger = logging.getLogger(__name__)


def kill_leftovers(tmpdirs: Collection[str], workdirs: Collection[str]) -> list[int]:
    """SIGKILL every process (of ours) whose TMPDIR or cwd is one of the given directories."""
    if not tmpdirs and not workdirs:
        return []
    me = os.getpid()
    uid = os.getuid()
    killed: list[int] = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if proc.environ().get("TMPDIR") in tmpdirs or proc.cwd() in workdirs:
                proc.kill()
                killed.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    if killed:
        logger.warning("killed processes left by jobs of a previous run", extra={"pids": killed})
    return killed
