"""Every job in a bubblewrap sandbox with a cgroup of its own, as an unprivileged host uid.

Per job, ``bwrap`` gets new user, pid, network, IPC, UTS and cgroup namespaces; the job runs as
uid/gid 65534 with no capabilities, ``no_new_privs``, a seccomp filter (``seccomp.py``) and no
way to create user namespaces of its own (``--disable-userns``), in a new session, and dies with
the server (``--die-with-parent``). On the host it runs as a uid of its own
(``INTERPRETER_SANDBOX_UIDS``, ``uids.py``), never root: the gate joins the job's cgroup as
root, then becomes that uid with ``setpriv`` and runs bwrap, which maps 65534 to it. Every
kernel check that looks at the host uid (sysctls, root-only ``/proc`` files, other users'
processes and files) sees an ordinary user.

Its filesystem is a fresh tmpfs root, read-only, holding read-only ``/usr`` (and the ``/bin``,
``/lib*``, ``/sbin`` links or directories), the few ``/etc`` files programs need, a generated
``passwd``, ``group`` and ``hosts``, and the install prefix of any language interpreter that
lives elsewhere (for a venv's python, the venv and its base's prefix; bound after the private
``/tmp``, so one under ``/tmp`` shows); read-write, only the job's working directory at its own
absolute path (so reported paths stay true), a private size-capped ``/tmp`` and ``/dev/shm``.
``/proc`` shows the job's own processes only, with what Docker masks masked (``/proc/sys`` and
friends read-only, keys, kernel memory and timer files empty); ``/dev`` has the usual null,
zero, random and tty devices; there is no network interface but loopback. bwrap itself starts
with an empty environment (its pid 1 keeps it, readable at ``/proc/1/environ``): the job's
variables are set with ``--setenv``. The code, when it does not fit the command line, is given
by descriptor (``--ro-bind-data``): no host file holds it.

Nothing bwrap binds is found by a path a job could change: the working directory was opened by
the runner beneath the workspace root without following symlinks; that descriptor is the lower
layer of the job's overlay (``volumes.py``), mounted under the server's own run directory
(``rundir.py``), and bwrap binds the overlay by descriptor (``--bind-fd``). After the job its
changes are applied to the directory (``collect``), within the job's limit.

Why one module of ~650 lines: it is the one place that turns a job into bubblewrap's argument
list and reads bubblewrap's failures back; mounts, uids, volumes and seccomp live beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpreter import tree
from interpreter.config import Settings
from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.languages import Trial
from interpreter.limits import ResourceLimits, describe_bytes
from interpreter.sandbox import container, mounts, seccomp
from interpreter.sandbox.base import (
    GATE_FAILURE_EXIT,
    CgroupConfinement,
    ExitStatus,
    Prepared,
    SandboxJob,
    WarmStats,
    gated,
)
from interpreter.sandbox.cgroups import CgroupDriver, JobCgroup, Remover, detect
from interpreter.sandbox.rundir import RunDir
from interpreter.sandbox.uids import UidLease, UidPool, hold_shared
from interpreter.sandbox.volumes import JobVolume, VolumeFactory, VolumeSize
from interpreter.sandbox.volumes import check_available as check_volumes
from interpreter.sandbox.volumes import recover as volume_recover
from interpreter.sandbox.warm import Layout, WarmPool, WarmStart
from interpreter.sandbox.warm import supported as zygote_supported

logger = logging.getLogger(__name__)

SANDBOX_UID = 65534
HOSTNAME = "sandbox"
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc holds copies of only these: the loader's cache, name service and time zone settings,
# certificates, and what interpreters read at start. Never shadow or keys.
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
    "fonts",  # fontconfig's configuration (matplotlib, Pillow)
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
UID_WAIT_S = 2.0  # a trial run waits this long for a uid (one just used comes back in ms)
STALE_CGROUP_S = 600.0  # an empty job cgroup older than this was left by a server that died
MAX_BWRAP_ERROR_BYTES = 4096
SPARE_VOLUMES = 4  # blank workspace volumes made ahead (of the default size)
COPY_SLACK = 256  # what a job's files may take on the host beyond its limit: 1/256, 1 MiB, 256
MiB = 2**20
CODE_DIR = "/code"  # where a job's code file is, inside the sandbox
VENV_DIR = "/opt/venv"  # where a job's package environment is, inside the sandbox
# /proc as Docker masks it (moby's oci defaults), plus the kernel memory maps and allocator
# statistics: made read-only, or shown as an empty file or directory, when the kernel has them.
PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
PROC_EMPTY_FILES = (
    "interrupts",
    "kcore",
    "keys",
    "key-users",
    "kpagecgroup",
    "kpagecount",
    "kpageflags",
    "latency_stats",
    "mtrr",
    "pagetypeinfo",
    "sched_debug",
    "slabinfo",
    "timer_list",
    "timer_stats",
    "vmallocinfo",
)
PROC_EMPTY_DIRS = ("acpi", "asound", "scsi")
USERNS_SYSCTLS = {  # where each exists, the value that lets an unprivileged user make one
    "kernel/unprivileged_userns_clone": "1",
    "kernel/apparmor_restrict_unprivileged_userns": "0",
}


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


def venv_root(executable: str) -> Path | None:
    """The virtual environment ``executable`` lives in (``<venv>/bin/python``, with
    ``<venv>/pyvenv.cfg``), looked for before resolving any symlink: a venv's python is a link
    to its base interpreter."""
    parent = Path(os.path.abspath(executable)).parent
    if parent.name == "bin" and (parent.parent / "pyvenv.cfg").is_file():
        return parent.parent
    return None


def _venv_home(venv: Path) -> str | None:
    """The directory of the venv's base interpreter (``home`` in its ``pyvenv.cfg``)."""
    try:
        text = (venv / "pyvenv.cfg").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home" and value.strip():
            return value.strip()
    return None


def _is_system(path: str) -> bool:
    return any(path == d or path.startswith(f"{d}/") for d in ("/usr", *SYSTEM_DIRS))


def _install_prefix(binary_dir: str) -> str:
    """``/opt/node`` for ``/opt/node/bin``; any other directory is its own prefix."""
    directory = Path(os.path.realpath(binary_dir))
    return str(directory.parent if directory.name == "bin" else directory)


def _prefixes(executables: Iterable[str], keep_out: Iterable[Path] = ()) -> list[str]:
    """Install prefixes of interpreters outside the system directories (``/opt/node`` for
    ``/opt/node/bin/node``), to bind read-only: for a venv's python, the venv and its base
    interpreter's prefix. None inside another (that one's bind shows it), and none that holds
    a directory of ``keep_out`` (the data and run directories): ``ConfigurationError``."""
    found: set[str] = set()
    for executable in executables:
        wanted = [_install_prefix(os.path.dirname(os.path.realpath(executable)))]
        if (venv := venv_root(executable)) is not None:
            wanted.append(os.path.realpath(venv))
            if (home := _venv_home(venv)) is not None:
                wanted.append(_install_prefix(home))
        for prefix in wanted:
            if _is_system(prefix):
                continue
            for kept in (os.path.realpath(path) for path in keep_out):
                if prefix == "/" or kept == prefix or kept.startswith(prefix.rstrip("/") + "/"):
                    raise ConfigurationError(
                        f"INTERPRETER_SANDBOX=bwrap: the interpreter {executable} is installed "
                        f"in {prefix}, which the sandbox would show to every job, and {prefix} "
                        f"holds {kept} (the server's own files): install the interpreter in a "
                        "directory of its own"
                    )
            found.add(prefix)
    return sorted(p for p in found if not any(p.startswith(f"{o}/") for o in found))


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


def proc_masks(proc: Path = Path("/proc")) -> list[str]:
    """Arguments that mask ``/proc`` (after ``--proc /proc``), for what this kernel has: bwrap
    fails on a bind onto a missing path."""
    args: list[str] = []
    for name in PROC_READ_ONLY:
        if os.path.lexists(proc / name):
            args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    for name in PROC_EMPTY_FILES:
        if os.path.lexists(proc / name):
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    for name in PROC_EMPTY_DIRS:
        if os.path.isdir(proc / name):
            args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return args


def warm_layout(
    settings: Settings, etc: Path, prefixes: Iterable[tuple[str, str]]
) -> Layout | None:
    """What a warm parent's root holds: the cold sandbox's view. None when a warm job could
    not see it the same way (an interpreter's prefix under /tmp, which each job's own /tmp
    would hide)."""
    binds: list[tuple[str, str, bool, bool]] = [("/usr", "/usr", False, True)]
    links: list[tuple[str, str]] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append((path, path, False, True))
    binds.append((str(etc), "/etc", False, True))
    for source, target in prefixes:
        if target == "/tmp" or target.startswith("/tmp/"):
            return None
        binds.append((source, target, False, True))
    binds.append(("/proc", "/proc", True, False))  # under each job's own: lets it mount one
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        if os.path.exists(f"/dev/{name}"):
            binds.append((f"/dev/{name}", f"/dev/{name}", True, False))
    top = os.path.abspath(settings.workspaces)
    directories = ["/tmp", CODE_DIR]
    if not top.startswith("/tmp/"):
        directories.append(top)
    return Layout(
        binds=tuple(binds),
        links=tuple(links),
        directories=tuple(directories),
        env={
            "PATH": settings.job_path,
            "LANG": "C.UTF-8",
            # a parent forks with one thread: numerical libraries start none of their own
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        },
        workspace_root=top,
        tmp_bytes=settings.tmp_limit_bytes,
        proc_read_only=tuple(n for n in PROC_READ_ONLY if os.path.lexists(f"/proc/{n}")),
        proc_empty_files=tuple(n for n in PROC_EMPTY_FILES if os.path.lexists(f"/proc/{n}")),
        proc_empty_dirs=tuple(n for n in PROC_EMPTY_DIRS if os.path.isdir(f"/proc/{n}")),
        hostname=HOSTNAME,
    )


def static_args(
    tmp_bytes: int,
    etc: Path,
    prefixes: Iterable[tuple[str, str]],
    masks: Iterable[str] = (),
) -> list[str]:
    """Everything of the command line that does not depend on the job. ``prefixes``: (where
    bwrap finds an interpreter's install prefix, where the job sees it)."""
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
    args += ["--proc", "/proc", *masks, "--dev", "/dev"]
    # Before any bind under /tmp (a workspace, a venv may live there): those land on top of it.
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(tmp_bytes), "--tmpfs", "/dev/shm"]
    for source, target in prefixes:
        args += ["--ro-bind", source, target]
    return args


def refusal(problem: str, missing: str) -> ConfigurationError:
    """Why the sandbox cannot start, and the way out: in a container, the flags that give it
    what it lacks (``missing``); elsewhere, the fix the problem names or no sandbox."""
    if container.in_container():
        return ConfigurationError(
            f"INTERPRETER_SANDBOX=bwrap: {problem}; {container.container_hint(missing)}"
        )
    return ConfigurationError(
        f"INTERPRETER_SANDBOX=bwrap: {problem}; or set INTERPRETER_SANDBOX=none for trusted "
        "local use only"
    )


def check_user_namespaces(sysctls: Path = Path("/proc/sys")) -> None:
    """``ConfigurationError`` saying how to fix it when an unprivileged user cannot make a user
    namespace here (jobs start as one)."""
    problems: list[str] = []
    try:
        if int((sysctls / "user/max_user_namespaces").read_text()) <= 0:
            problems.append("sysctl user.max_user_namespaces is 0: set it above 0")
    except (OSError, ValueError):
        pass
    for path, wanted in USERNS_SYSCTLS.items():
        try:
            value = (sysctls / path).read_text().strip()
        except OSError:
            continue
        if value != wanted:
            problems.append(f"sysctl {path.replace('/', '.')} is {value}: set it to {wanted}")
    if problems:
        raise ConfigurationError(
            "INTERPRETER_SANDBOX=bwrap runs each job as an unprivileged user in a user namespace "
            "of its own, which this host refuses: " + "; ".join(problems) + " (a host setting, "
            "also for a container); or set INTERPRETER_SANDBOX=none for trusted local use only"
        )


@dataclass(frozen=True, slots=True)
class _Held:
    """What one job holds until ``release``: its cgroup, uid and workspace volume."""

    cgroup: JobCgroup
    uid: UidLease
    fds: list[int]  # passed to bwrap; closed once, by whichever of collect and release is first
    volume: JobVolume | None
    directory_fd: int | None  # the job's directory (the runner's descriptor): the lower layer
    venv_point: Path | None  # its package environment, bound read-only for bwrap to find


class _Meter:
    """A job volume's use against the job's limits (``WorkspaceMeter``)."""

    def __init__(self, volume: JobVolume, limit_files: int) -> None:
        self.volume = volume
        self.limit_bytes = volume.limit_bytes
        self.limit_files = limit_files

    def used(self) -> tuple[int, int]:
        return self.volume.usage()  # sampled every 100 ms while the job runs: one statvfs


class BwrapSandbox:
    name = "bwrap"
    private_tmp = True
    code_dir: str | None = CODE_DIR
    venv_dir: str | None = VENV_DIR

    def __init__(
        self,
        bwrap: str,
        setpriv: str,
        cgroups: CgroupDriver,
        static: list[str],
        version: str,
        tmp_bytes: int,
        uids: UidPool,
        run: RunDir,
        volumes: VolumeFactory,
        workspace_files: int,
        warm: WarmPool | None = None,
        warm_uid_lock: int | None = None,
    ) -> None:
        self.bwrap = bwrap
        self.setpriv = setpriv
        self.cgroups = cgroups
        self.static = static
        self.version = version
        self.tmp_bytes = tmp_bytes
        self.uids = uids
        self.run = run
        self.volumes = volumes
        self.workspace_files = workspace_files
        self.seccomp = seccomp.program() if seccomp.supported() else None
        self.warm = warm
        self._warm_uid_lock = warm_uid_lock
        self.remover = Remover()
        # Discarding a volume costs 10-40 ms (the image's unlink): off the job's path.
        self._janitor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volumes")

    @classmethod
    def from_settings(cls, settings: Settings, executables: Iterable[str]) -> BwrapSandbox:
        """Set up and try it once; ``ConfigurationError`` saying how to fix what is missing."""
        bwrap = find_bwrap(settings.job_path)
        if bwrap is None:
            raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: bwrap not found; {INSTALL_HINT}")
        if os.geteuid() != 0:
            raise refusal(
                "the server must run as root: it makes a cgroup per job and runs each job as "
                "an unprivileged uid of its own",
                "root",
            )
        setpriv = shutil.which("setpriv", path=f"{settings.job_path}:/usr/bin:/bin")
        if setpriv is None:
            raise ConfigurationError(
                "INTERPRETER_SANDBOX=bwrap: setpriv not found (it switches each job to its own "
                "uid); install util-linux (Debian/Ubuntu: apt-get install -y util-linux)"
            )
        check_user_namespaces()
        version = _run([bwrap, "--version"]).stdout.strip()
        try:
            cgroups = detect(settings.cgroup_parent)
            cgroups.setup()
        except ConfigurationError as exc:
            raise refusal(
                f"it needs a cgroup per job: {exc.message}", "a writable /sys/fs/cgroup"
            ) from exc
        first, last = settings.sandbox_uid_range
        warm = settings.warm_pool and zygote_supported()
        if warm:  # the parents' own uid, never a job's
            first += 1
        if last - first + 1 < settings.concurrency:
            raise ConfigurationError(
                f"INTERPRETER_SANDBOX_UIDS holds {last - first + 1} uids, fewer than the "
                f"{settings.concurrency} jobs this process runs at once"
            )
        wanted = _prefixes(executables, keep_out=(settings.data_dir, settings.sandbox_run_dir))
        try:
            uids = UidPool(first, last, settings.sandbox_run_dir / "uids")
            run = RunDir(settings.sandbox_run_dir, settings.data_dir)
            run.setup()
            etc = build_etc(run.etc)
            prefixes = run.bind_prefixes(wanted)
        except OSError as exc:
            raise ConfigurationError(
                f"INTERPRETER_SANDBOX=bwrap: cannot set up {settings.sandbox_run_dir} "
                f"(INTERPRETER_SANDBOX_RUN_DIR): {exc.strerror or exc}"
            ) from exc
        volumes_dir = settings.data_dir / "volumes"
        try:
            volume_recover(run.mounts, volumes_dir)
            check_volumes(volumes_dir, run.mounts)
        except ConfigurationError as exc:
            run.close()
            raise refusal(
                f"each job's working directory is a filesystem of its own, capped by the "
                f"kernel: {exc.message}",
                "the loop devices and the right to mount",
            ) from exc
        volumes = VolumeFactory(
            volumes_dir,
            run.mounts,
            VolumeSize(settings.workspace_limit_bytes, settings.workspace_files_limit),
            spares=min(settings.concurrency, SPARE_VOLUMES),
        )
        volumes.start()
        static = static_args(settings.tmp_limit_bytes, etc, prefixes, proc_masks())
        layout = warm_layout(settings, etc, prefixes) if warm else None
        pool = None
        held = None
        if layout is not None:  # the parents' uid: no server here leases it to a job
            held = hold_shared(uids.lock_dir, first - 1)
            if held is None:
                logger.warning("warm pool off: uid %d runs a job of another server", first - 1)
        if layout is not None and held is not None:
            pool = WarmPool(
                layout,
                uids=(first - 1, last - first + 2),
                seccomp=seccomp.program() if seccomp.supported() else None,
                size=max(1, min(settings.concurrency, os.cpu_count() or 1)),
                recycle_after=settings.warm_pool_recycle,
            )
        sandbox = cls(
            bwrap,
            setpriv,
            cgroups,
            static,
            version,
            settings.tmp_limit_bytes,
            uids,
            run,
            volumes,
            settings.workspace_files_limit,
            pool,
            held,
        )
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
        """Run ``/bin/sh -c :`` the way jobs run (gate, cgroup, rlimits, uid, bwrap) once."""
        try:
            trial = self.trial(("/bin/sh", "-c", ":"), limits)
        except ExecutionError as exc:
            raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: {exc}") from exc
        if trial.exit_code != 0:
            why = trial.stderr.strip()[:MAX_BWRAP_ERROR_BYTES]
            why = why or f"exit code {trial.exit_code}"
            raise refusal(
                f"a trial sandbox failed ({why}). bwrap needs unprivileged user namespaces "
                "(sysctl user.max_user_namespaces > 0; on Ubuntu 24.04+ "
                "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for "
                "bwrap)",
                "the right to make namespaces and mounts",
            )

    def trial(
        self,
        argv: tuple[str, ...],
        limits: ResourceLimits,
        env: Mapping[str, str] | None = None,
        language: str = "probe",
    ) -> Trial:
        """Run ``argv`` once the way jobs run (gate, cgroup, rlimits, uid, bwrap), in ``/``,
        and say how it ended (exit code None: not within ``PROBE_TIMEOUT_S``, killed).
        ``ExecutionError`` when it could not be started at all."""
        give_up = time.monotonic() + UID_WAIT_S
        while True:  # a previous trial's uid comes back once its cgroup is removed
            try:
                prepared = self.prepare(
                    SandboxJob(
                        f"probe-{uuid.uuid4()}", language, argv, Path("/"), env or {}, limits
                    )
                )
                break
            except ExecutionError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)
        assert prepared.confinement is not None
        try:
            with subprocess.Popen(
                gated(prepared.confinement.join_files, prepared.argv),
                pass_fds=prepared.pass_fds,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                start_new_session=True,
            ) as proc:
                try:
                    prepared.confinement.admit(proc.pid)
                    stdout, stderr = proc.communicate(b"\n", timeout=PROBE_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    prepared.confinement.kill_all()
                    proc.communicate()
                    return Trial(None, "", f"{argv[0]} did not finish within {PROBE_TIMEOUT_S:g} s")
                except ExecutionError:
                    proc.kill()
                    raise
            return Trial(proc.returncode, _text(stdout), _text(stderr))
        except OSError as exc:
            raise ExecutionError(f"cannot start the sandbox: {exc.strerror or exc}") from exc
        finally:
            self.release(prepared)

    def prepare(self, job: SandboxJob) -> Prepared:
        with contextlib.ExitStack() as undo:
            lease = self.uids.acquire()
            undo.callback(lease.release)
            cgroup = self.cgroups.create(job.job_id, job.limits)
            undo.callback(self.remover.remove, cgroup)
            cwd = str(job.cwd)
            argv = [
                self.setpriv,
                f"--reuid={lease.uid}",
                f"--regid={lease.uid}",
                "--clear-groups",
                "--no-new-privs",
                "--",
                self.bwrap,
                *self.static,
            ]
            fds: list[int] = []
            undo.callback(_close_all, fds)
            volume = view_fd = venv_point = None
            try:
                if self.seccomp is not None:
                    fds.append(seccomp.memfd(self.seccomp))
                    argv += ["--seccomp", str(fds[-1])]
                if job.cwd_fd is not None:
                    # what earlier jobs left there belongs to their uids, and its input files
                    # to the server: the job's own to modify and delete
                    if job.cwd_shared or job.cwd_inputs:
                        tree.chown_tree(job.cwd_fd, lease.uid, lease.uid)
                    volume = self.volumes.volume(
                        VolumeSize(job.limits.workspace_bytes, self.workspace_files)
                    )
                    undo.callback(volume.discard)
                    view = volume.mount(job.cwd_fd, lease.uid, lease.uid, _volume_name(job.job_id))
                    view_fd = os.open(view, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    fds.append(view_fd)
                    argv += ["--bind-fd", str(view_fd), cwd]
                if job.venv is not None:
                    venv_point = self._bind_venv(job.venv, _volume_name(job.job_id))
                    undo.callback(_unbind, venv_point)
                    argv += ["--ro-bind", str(venv_point), VENV_DIR]
                for host, inside in job.binds:
                    fds.append(os.open(host, tree.DIR_FLAGS))
                    argv += ["--bind-fd", str(fds[-1]), inside]
                if job.code is not None:
                    path, content = job.code
                    fds.append(seccomp.memfd(content, "code"))
                    argv += ["--ro-bind-data", str(fds[-1]), path]
            except OSError as exc:
                raise ExecutionError(f"cannot prepare the sandbox: {exc.strerror or exc}") from exc
            argv += ["--remount-ro", "/", "--chdir", cwd]  # last: the root's own tmpfs read-only
            for name, value in job.env.items():
                argv += ["--setenv", name, value]
            argv += ["--", *job.argv]
            confinement = CgroupConfinement(cgroup, job.limits, python=job.language == "python")
            warm = None
            if self.warm is not None and job.warm and view_fd is not None:
                warm = self._warm_start(job, lease.uid, confinement, view_fd)
            undo.pop_all()
        return Prepared(
            argv=tuple(argv),
            env={},  # bwrap's own environment: its pid 1 shows it in /proc/1/environ
            confinement=confinement,
            pass_fds=tuple(fds),
            cleanup=_Held(cgroup, lease, fds, volume, job.cwd_fd, venv_point),
            spawn_cwd=Path("/"),
            uid=lease.uid,
            view_fd=view_fd,
            workspace=_Meter(volume, self.workspace_files) if volume is not None else None,
            warm=warm,
        )

    def _warm_start(
        self, job: SandboxJob, uid: int, confinement: CgroupConfinement, view_fd: int
    ) -> WarmStart | None:
        """How a warm parent would start the job, when it can run it as the cold launch
        does: its interpreter's own arguments (``-c code`` or the code file), and no variable
        that changes how the interpreter starts (the parent has started already)."""
        assert self.warm is not None
        argv, env = job.argv, job.env
        if job.venv is not None and argv[0] != f"{VENV_DIR}/bin/python":
            return None
        inline = len(argv) == 3 and argv[1] == "-c"
        filed = len(argv) == 2 and job.code is not None and job.code[0] == argv[1]
        if not (inline or filed):
            return None
        if env.get("LANG") != "C.UTF-8" or any(n.startswith(("PYTHON", "LC_")) for n in env):
            return None
        top = self.warm.layout.workspace_root
        if not str(job.cwd).startswith(f"{top.rstrip('/')}/"):
            return None
        layout = self.warm.layout
        spec = {
            "argv": list(argv),
            "code_file": None
            if job.code is None
            else [job.code[0], job.code[1].decode("utf-8", errors="replace")],
            "env": dict(env),
            "cwd": str(job.cwd),
            "workspace_root": top,
            "tmp_bytes": self.tmp_bytes,
            "rlimits": [[which, soft, hard] for which, (soft, hard) in confinement.rlimits],
            "proc_read_only": layout.proc_read_only,
            "proc_empty_files": layout.proc_empty_files,
            "proc_empty_dirs": layout.proc_empty_dirs,
        }
        return WarmStart(
            self.warm,
            argv[0],
            job.venv,
            uid,
            json.dumps(spec).encode(),
            view_fd,
            confinement.join_files,
        )

    def _bind_venv(self, venv: Path, name: str) -> Path:
        """Bind the environment read-only under the run directory, where the job's uid can
        reach it (the data directory is not searchable by it)."""
        point = self.run.mounts / f"{name}.env"
        point.mkdir(mode=0o711)
        try:
            fd = os.open(venv, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                mounts.bind_fd(fd, point, read_only=True)
            finally:
                os.close(fd)
        except OSError:
            point.rmdir()
            raise
        return point

    def collect(self, prepared: Prepared) -> str | None:
        """Apply what the job changed (the volume's upper layer) to its directory, owned by
        the job's uid, unless the copy would pass the job's limit on the host (sparse files and
        hard links take more once copied): then nothing of it is kept, and the job says why."""
        held = prepared.cleanup
        if not isinstance(held, _Held) or held.volume is None or held.directory_fd is None:
            return None
        if not _emptied(held.cgroup):  # a process stuck in the kernel could still write
            logger.error("cgroup %s still has processes: its files not applied", held.cgroup.name)
            return "a process of the job could not be stopped; none of its files were kept"
        _close_all(held.fds)  # the view's descriptor among them: nothing may hold it now
        held.volume.unmount_view()  # a lower layer must not change under a mounted overlay
        limit = held.volume.limit_bytes
        budget = (limit + limit // COPY_SLACK + MiB, self.workspace_files + COPY_SLACK)
        upper = held.volume.upper_fd()
        try:
            tree.apply_overlay_upper(
                upper, held.directory_fd, uid=held.uid.uid, gid=held.uid.uid, budget=budget
            )
        except tree.OverBudget as exc:
            return (
                f"workspace disk limit exceeded ({describe_bytes(limit)}) once its files are "
                f"copied: {exc.strerror}; none of them were kept"
            )
        finally:
            os.close(upper)
        return None

    def release(self, prepared: Prepared) -> None:
        held = prepared.cleanup
        if isinstance(held, _Held):
            _close_all(held.fds)
            if held.volume is not None:
                self._janitor.submit(held.volume.discard)
            if held.venv_point is not None:
                _unbind(held.venv_point)
            # the uid goes back once the cgroup is empty and gone: nothing runs as it any more
            self.remover.remove(held.cgroup, then=held.uid.release)

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
        prefixes = {1: ("bwrap: ",), GATE_FAILURE_EXIT: ("gate: ", "warm: ")}.get(exit_code or 0)
        if prefixes is None:
            return None
        try:
            with stderr.open("rb") as handle:
                head = handle.read(MAX_BWRAP_ERROR_BYTES).decode("utf-8", errors="replace")
        except OSError:
            return None
        first = head.splitlines()[0] if head else ""
        return first if first.startswith(prefixes) else None

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "bwrap",
            "isolated": True,
            "limits_enforced": True,
            "bwrap": self.version,
            "cgroup": f"cgroup v{self.cgroups.version}",
            "uid": SANDBOX_UID,
            "host_uids": self.uids.describe(),
            "network": False,
            "seccomp": seccomp.describe()
            if self.seccomp is not None
            else f"none (no filter built in for {platform.machine()})",
            "tmp": describe_bytes(self.tmp_bytes),
            "warm_pool": False if self.warm is None else self.warm.describe(),
        }

    def warm_up(self, python: str, venv: Path | None = None) -> None:
        if self.warm is not None:
            self.warm.warm_up(python, venv)

    def warm_stats(self) -> WarmStats | None:
        if self.warm is None:
            return None
        return WarmStats(
            self.warm.hits,
            self.warm.misses,
            tuple((p.environment, p.pid, p.rss_bytes()) for p in self.warm.parents()),
        )

    def close(self) -> None:
        if self.warm is not None:
            self.warm.close()
        if self._warm_uid_lock is not None:
            os.close(self._warm_uid_lock)
            self._warm_uid_lock = None
        self._janitor.shutdown(wait=True)
        self.remover.close()
        self.volumes.close()
        self.run.close()


def _emptied(cgroup: JobCgroup, patience_s: float = 1.0) -> bool:
    """Whether the job's cgroup holds no process (waiting a moment for the last to go)."""
    give_up = time.monotonic() + patience_s
    while True:
        try:
            if not cgroup.pids():
                return True
        except OSError:
            return False
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)


def _volume_name(job_id: str) -> str:
    """A job's volume and mount point name (a re-run's ``<id>.<attempt>`` without the dot)."""
    return job_id.replace(".", "-")


def _unbind(point: Path) -> None:
    """Unmount a job's environment bind and remove its mount point."""
    mounts.unmount(point)
    with contextlib.suppress(OSError):
        point.rmdir()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _text(data: bytes) -> str:
    return data[:MAX_BWRAP_ERROR_BYTES].decode(errors="replace")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env={}, timeout=PROBE_TIMEOUT_S, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"INTERPRETER_SANDBOX=bwrap: cannot run {argv[0]}: {exc}") from exc
