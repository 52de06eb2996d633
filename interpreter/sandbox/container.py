"""Whether the server runs in a container, and what to tell the operator of one that cannot
run the sandbox.

A default container refuses most of what the sandbox does: mounting ext4 from a loop device and
overlays (CAP_SYS_ADMIN in the initial user namespace, the loop devices), writing the cgroup
hierarchy (mounted read-only), ``unshare``/``mount``/``pivot_root`` (the runtime's seccomp and
AppArmor profiles) and mounting a fresh ``/proc`` in the job's namespaces (the runtime masks parts
of its own). One setting gives all of it: a privileged container with a cgroup namespace of its
own (``DOCKER_FLAGS``). docs/containers.md says why each piece is needed and what a narrower set
would have to add.

``in_container()`` guesses from what runtimes leave behind; ``container_hint(missing)`` is the
sentence a refusal to start appends when it does::

    if in_container():
        message += "; " + container_hint("a writable /sys/fs/cgroup")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DOCKER_FLAGS", "GUIDE", "KUBERNETES_SETTING", "container_hint", "in_container"]

DOCKER_FLAGS = "--privileged --cgroupns=private"
KUBERNETES_SETTING = "securityContext.privileged: true, as root"
GUIDE = "docs/containers.md"

# Files runtimes create in every container: Docker's, and Podman's (and other libpod tools').
MARKER_FILES = (".dockerenv", "run/.containerenv")
# Words in pid 1's cgroup path that name a runtime (cgroup v1, or v2 without a cgroup namespace).
RUNTIME_WORDS = ("docker", "kubepods", "containerd", "libpod", "crio", "lxc")
# Variables runtimes set: `container` (systemd-nspawn, Podman, LXC; for pid 1 at least) and the
# one every Kubernetes pod gets, whatever its enableServiceLinks.
MARKER_VARIABLES = ("container", "KUBERNETES_SERVICE_HOST")


def in_container(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> bool:
    """True when this process looks like it runs in a container (a guess: no runtime has to
    leave a mark, and a bare host could imitate one). ``root`` and ``environ`` stand in for the
    filesystem and ``os.environ`` in tests."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in MARKER_VARIABLES):
        return True
    if any((root / name).exists() for name in MARKER_FILES):
        return True
    return _init_says_container(root / "proc" / "1")


def container_hint(missing: str) -> str:
    """What to do about ``missing`` (what the sandbox could not get, e.g. "a writable
    /sys/fs/cgroup") in a container: the flags, the guide, and the way out for trusted code."""
    what = missing.strip()
    opening = f"this container lacks {what}" if what else "in a container"
    return (
        f"{opening}: run it with `docker run {DOCKER_FLAGS}` (Kubernetes: "
        f"{KUBERNETES_SETTING}; {GUIDE} says why each is needed), or set "
        "INTERPRETER_SANDBOX=none for trusted code only"
    )


def _init_says_container(init: Path) -> bool:
    """pid 1's cgroup path names a runtime, or its environment has ``container=``."""
    try:
        cgroups = (init / "cgroup").read_text()
    except OSError:
        cgroups = ""
    for line in cgroups.splitlines():
        path = line.split(":", 2)[-1]
        if any(word in path for word in RUNTIME_WORDS):
            return True
    try:
        variables = (init / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(item.startswith(b"container=") and item != b"container=" for item in variables)
