"""Every job in a bubblewrap sandbox with a cgroup of its own.

Per job, ``bwrap`` gets new user, pid, network, IPC, UTS and cgroup namespaces; the job runs as
uid/gid 65534 with no capabilities, ``no_new_privs`` (bwrap sets it), a seccomp filter
(``seccomp.py``) and no way to create user namespaces of its own (``--disable-userns``), in a new
session, and dies with the server (``--die-with-parent``). Its filesystem is a fresh tmpfs root,
read-only, holding read-only ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links or
directories), the few ``/etc`` files programs need, a generated ``passwd``, ``group`` and
``hosts``, and the install prefix of any language interpreter that lives elsewhere; read-write,
only the job's working directory at its own absolute path (so reported paths stay true), a
private size-capped ``/tmp`` and ``/dev/shm``. ``/proc`` shows the job's own processes only;
``/dev`` has the usual null, zero, random and tty devices; there is no network interface but
loopback. bwrap itself starts with an empty environment (its pid 1 keeps it, readable at
``/proc/1/environ``): the job's variables are set with ``--setenv``.

On the host the job's processes run as the server's user (uid 0 when the server runs as root:
bwrap maps the sandbox's 65534 to it). Their reach is what the mounts above give them.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.sandbox import seccomp
from interpreter.sandbox.base import (
    GATE_FAILURE_EXIT,
    CgroupConfinement,
    ExitStatus,
    Prepared,
    SandboxJob,
    gated,
)
from interpreter.sandbox.cgroups import CgroupDriver, Remover, detect
from interpreter.sandbox.limits import ResourceLimits, describe_bytes

logger = logging.getLogger(__name__)

SANDBOX_UID = 65534
HOSTNAME = "sandbox"
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc holds copies of only these: the loader's cache, name service and time zone settings,
# certificates, and what interpreters read at start. Never shadow or keys: the job's processes
# are the server's user on the host, so a root-only file there would be readable to them.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "nsswitch.conf",
    "localtime",
    "timezone",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "protocols",
    "services",
    "python3",
    "python3.11",
)
GENERATED_ETC = {
    "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"nobody:x:{SANDBOX_UID}:{SANDBOX_UID}:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nnogroup:x:{SANDBOX_UID}:\n",
    "hosts": f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap), or set "
    "INTERPRETER_SANDBOX=none for trusted local use only"
)
PROBE_TIMEOUT_S = 10.0
STALE_CGROUP_S = 600.0  # an empty job cgroup older than this was left by a server that died
MAX_BWRAP_ERROR_BYTES = 4096


def find_bwrap(job_path: str) -> str | None:
    return shutil.which("bwrap", path=f"{job_path}:/usr/bin:/bin")


def _system_mounts() -> list[str]:
    """``/usr`` read-only, and ``/bin``, ``/lib*``, ``/sbin`` as the host has them."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _prefixes(executables: Iterable[str]) -> list[str]:
    """Install prefixes of interpreters outside the system directories (``/opt/node`` for
    ``/opt/node/bin/node``), to bind read-only."""
    system = ("/usr/", *(f"{d}/" for d in SYSTEM_DIRS))
    found: set[str] = set()
    for executable in executables:
        real = os.path.realpath(executable)
        if real.startswith(system):
            continue
        parent = Path(real).parent
        found.add(str(parent.parent if parent.name == "bin" else parent))
    return sorted(found)


def build_etc(directory: Path, host_etc: Path = Path("/etc")) -> Path:
    """The sandbox's /etc, made afresh at each start: copies of ``ETC_FILES`` (directories with
    their symlinks as links, never a ``private`` directory) and the generated files. One bind
    of it costs a job less than a bind per file (~0.13 ms each)."""
    fresh = directory.with_name(f"{directory.name}.{os.getpid()}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for name in ETC_FILES:
        source, target = host_etc / name, fresh / name
        try:
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            elif source.is_dir():
                shutil.copytree(
                    source, target, symlinks=True, ignore=shutil.ignore_patterns("private")
                )
            elif source.is_file():
                shutil.copy2(source, target)
        except OSError as exc:
            logger.warning("sandbox /etc: %s not copied: %s", source, exc)
    for name, content in GENERATED_ETC.items():
        (fresh / name).write_text(content)
    for path in (fresh, *fresh.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    old = directory.with_name(f"{directory.name}.{os.getpid()}.old")
    if directory.exists():
        directory.rename(old)
    fresh.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def static_args(tmp_bytes: int, etc: Path, prefixes: Iterable[str]) -> list[str]:
    """Everything of the command line that does not depend on the job."""
    args = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        HOSTNAME,
        "--cap-drop",
        "ALL",
        "--new-session",
        "--die-with-parent",
        "--clearenv",
        *_system_mounts(),
    ]
    args += ["--ro-bind", str(etc), "/etc"]
    for prefix in prefixes:
        args += ["--ro-bind", prefix, prefix]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # Before any bind under /tmp (a workspace may live there): those land on top of it.
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(tmp_bytes), "--tmpfs", "/dev/shm"]
    return args


class BwrapSandbox:
    name = "bwrap"
    private_tmp = True

    def __init__(
        self, bwrap: str, cgroups: CgroupDriver, static: list[str], version: str, tmp_bytes: int
    ) -> None:
        self.bwrap = bwrap
        self.cgroups = cgroups
        self.static = static
        self.version = version
        self.tmp_bytes = tmp_bytes
        self.seccomp = seccomp.program() if seccomp.supported() else None
        self.remover = Remover()

    @classmethod
    def from_settings(cls, settings: Settings, executables: Iterable[str]) -> BwrapSandbox:
        """Set up and try it once; ``ConfigurationError`` saying how to fix what is missing."""
        bwrap = find_bwrap(settings.job_path)
        if bwrap is None:
            raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: bwrap not found; {INSTALL_HINT}")
        version = _run([bwrap, "--version"]).stdout.strip()
        try:
            cgroups = detect(settings.cgroup_parent)
            cgroups.setup()
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"INTERPRETER_SANDBOX=bwrap needs a cgroup per job: {exc.message}; or set "
                "INTERPRETER_SANDBOX=none for trusted local use only"
            ) from exc
        etc = build_etc(settings.data_dir / "sandbox" / "etc")
        static = static_args(settings.tmp_limit_bytes, etc, _prefixes(executables))
        sandbox = cls(bwrap, cgroups, static, version, settings.tmp_limit_bytes)
        try:
            sandbox.probe(ResourceLimits.defaults(settings))
        except BaseException:
            sandbox.close()
            raise
        for cgroup in cgroups.stale(STALE_CGROUP_S):
            sandbox.remover.remove(cgroup)
        logger.info("sandbox ready: %s, %s", version, cgroups.describe())
        return sandbox

    def probe(self, limits: ResourceLimits) -> None:
        """Run ``/bin/sh -c :`` the way jobs run (gate, cgroup, rlimits, bwrap) once."""
        prepared = self.prepare(
            SandboxJob(
                f"probe-{uuid.uuid4()}", "shell", ("/bin/sh", "-c", ":"), Path("/"), {}, limits
            )
        )
        assert prepared.confinement is not None
        try:
            with subprocess.Popen(
                gated(prepared.confinement.join_files, prepared.argv),
                pass_fds=prepared.pass_fds,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={},
                start_new_session=True,
            ) as proc:
                try:
                    prepared.confinement.admit(proc.pid)
                    _, stderr = proc.communicate(b"\n", timeout=PROBE_TIMEOUT_S)
                except (ExecutionError, subprocess.TimeoutExpired) as exc:
                    proc.kill()
                    raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: {exc}") from exc
            if proc.returncode != 0:
                why = stderr.decode(errors="replace").strip()[:MAX_BWRAP_ERROR_BYTES]
                why = why or f"exit code {proc.returncode}"
                raise ConfigurationError(
                    f"INTERPRETER_SANDBOX=bwrap: a trial sandbox failed ({why}). "
                    "bwrap needs user namespaces (sysctl user.max_user_namespaces > 0; on Ubuntu "
                    "24.04+ kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile "
                    "for bwrap; in a container: a seccomp profile allowing unshare); "
                    "or set INTERPRETER_SANDBOX=none for trusted local use only"
                )
        finally:
            self.release(prepared)

    def prepare(self, job: SandboxJob) -> Prepared:
        cgroup = self.cgroups.create(job.job_id, job.limits)
        cwd = str(job.cwd)
        argv = [self.bwrap, *self.static]
        pass_fds: tuple[int, ...] = ()
        if self.seccomp is not None:
            try:
                pass_fds = (seccomp.memfd(self.seccomp),)
            except OSError as exc:
                self.remover.remove(cgroup)
                raise ExecutionError(f"cannot pass the seccomp filter: {exc}") from exc
            argv += ["--seccomp", str(pass_fds[0])]
        if job.cwd != Path("/"):
            argv += ["--bind", cwd, cwd]
        for path in job.read_only_files:
            argv += ["--ro-bind", str(path), str(path)]
        argv += ["--remount-ro", "/", "--chdir", cwd]  # last: the root's own tmpfs read-only
        for name, value in job.env.items():
            argv += ["--setenv", name, value]
        argv += ["--", *job.argv]
        return Prepared(
            argv=tuple(argv),
            env={},  # bwrap's own environment: its pid 1 shows it in /proc/1/environ
            confinement=CgroupConfinement(cgroup, job.limits, python=job.language == "python"),
            workspace_limit_bytes=job.limits.workspace_bytes,
            pass_fds=pass_fds,
            cleanup=cgroup,
        )

    def release(self, prepared: Prepared) -> None:
        for fd in prepared.pass_fds:
            os.close(fd)
        if prepared.cleanup is not None:
            self.remover.remove(prepared.cleanup)

    def recover(self, job_ids: Collection[str]) -> None:
        for job_id in job_ids:
            cgroup = self.cgroups.open(job_id)
            try:
                cgroup.kill_all()
            except OSError as exc:
                logger.warning("cgroup %s left by a crash: %s", job_id, exc)
            self.remover.remove(cgroup)

    def decode_exit(self, exit_code: int | None, signal: int | None) -> ExitStatus:
        """bwrap exits with 128 + N when the job was killed by signal N (a job that exits with
        such a code by itself reads the same)."""
        if exit_code is not None and 128 < exit_code <= 128 + 64:
            return None, exit_code - 128
        return exit_code, signal

    def setup_failure(self, exit_code: int | None, stderr: Path) -> str | None:
        """bwrap's own message (``bwrap: ...``, exit code 1) when it could not start the job,
        or the gate's (``gate: ...``, exit code 125) when it could not join the cgroup."""
        prefix = {1: "bwrap: ", GATE_FAILURE_EXIT: "gate: "}.get(exit_code or 0)
        if prefix is None:
            return None
        try:
            with stderr.open("rb") as handle:
                head = handle.read(MAX_BWRAP_ERROR_BYTES).decode("utf-8", errors="replace")
        except OSError:
            return None
        first = head.splitlines()[0] if head else ""
        return first if first.startswith(prefix) else None

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "bwrap",
            "isolated": True,
            "limits_enforced": True,
            "bwrap": self.version,
            "cgroup": self.cgroups.describe(),
            "uid": SANDBOX_UID,
            "network": False,
            "seccomp": f"{len(seccomp.BLOCKED) + len(seccomp.UNAVAILABLE)} system calls refused"
            if self.seccomp is not None
            else f"none (no filter built in for {platform.machine()})",
            "tmp": describe_bytes(self.tmp_bytes),
        }

    def close(self) -> None:
        self.remover.close()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env={}, timeout=PROBE_TIMEOUT_S, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: cannot run {argv[0]}: {exc}") from exc
