"""A warm Python parent: a sandboxed interpreter that forks each job (run as its own program).

The server (``warm.py``) starts ``python -I -S -c <this file> interpreter-warm-parent CONFIG``
as root with one socket. This file imports nothing but the standard library: it never runs
inside the server, and the server's package is not in the sandbox.

**Start (as root, on the host).** Every directory the sandbox shows is captured first as a
detached copy (``open_tree``), made read-only where jobs must not write. Then the process makes
a user namespace; the server maps its uids 0..N to the host range of job uids
(``INTERPRETER_SANDBOX_UIDS``): uid 0 of the namespace, the parent's own, is the range's first
uid, an ordinary user on the host, never root. In new mount, network, IPC and UTS namespaces it
builds a read-only tmpfs root from the copies (``/usr``, ``/etc``, interpreters' prefixes, the
package environment at ``/opt/venv``, ``/dev`` with its usual nodes, the host's ``/proc`` only
so that each job may mount its own), pivots into it and executes the job interpreter afresh
(``python -I``): nothing of the root process's memory or descriptors goes along. That
interpreter imports the modules it is told to, freezes its objects out of the collector's sight
and answers requests.

**A job.** The server sends a uid index and, as descriptors: stdout, stderr, stdin (or none),
a sealed memfd with the job (its argv, code, environment, directory and limits: the parent never
reads it, so no job's code or variables stay in its memory for the next), the working directory
as a detached mount (``open_tree`` by the server) and the job's cgroup files opened by the
server. The parent clones a leader with ``CLONE_PARENT`` (so the leader is the server's own
child: the server waits for it, reads its rusage and kills it as it does a cold launch) in new
user, mount, pid, IPC and network namespaces, maps the leader's namespace (0 to its own uid,
65534 to the job's host uid) and lets it go. The leader, pid 1 of the job's namespace, joins the
cgroup, makes a cgroup namespace, mounts ``/proc`` (masked as bwrap's jobs have it), a sized
``/tmp`` and ``/dev/shm``, ``/dev/pts``, the working directory at its host path and ``/code``,
brings up ``lo``, sets the rlimits, drops to uid 65534 (bounding set, capabilities, groups),
sets ``no_new_privs``, loads the seccomp filter and forks the job (pid 2), whose exit status it
passes on (128 + N for signal N, as bwrap does). The job closes every other descriptor, takes
the job's environment and directory, reseeds ``random`` and ``numpy.random`` and runs the code
as ``__main__``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PARENT = 0x00008000
CLONE_CHILD_SETTID = 0x01000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SANDBOX_UID = 65534
WARM_FAILURE_EXIT = 125
STARTING = "interpreter-warm-parent"  # the parent's command line says what it is
SERVING = "interpreter-warm-parent:serving"
ENV_ROOM = "INTERPRETER_ENVIRONMENT_ROOM"
_SYSCALLS = {  # (x86_64, aarch64)
    "clone": (56, 220),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "mount_setattr": (442, 442),
}
_ARCH = 0 if os.uname().machine == "x86_64" else 1


def supported() -> bool:
    return os.uname().machine in ("x86_64", "aarch64")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # all five: the kernel checks them
_libc.syscall.restype = ctypes.c_long
# The same call with the interpreter lock held: clone must fork the thread that holds it.
_locked = ctypes.PyDLL(None, use_errno=True)
_locked.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _args(args: tuple[object, ...]) -> list[object]:
    """Integers as longs: a variadic call passes them in full registers."""
    return [ctypes.c_long(a) if isinstance(a, int) else a for a in args]


def _syscall(name: str, *args: object) -> int:
    return _check(_libc.syscall(ctypes.c_long(_SYSCALLS[name][_ARCH]), *_args(args)), name)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg, arg3, 0, 0), f"prctl {option}")


def open_tree(path: str, recursive: bool) -> int:
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _syscall("open_tree", AT_FDCWD, path.encode(), flags)


def clone_mount(fd: int) -> int:
    """A detached copy of the directory open as ``fd``: what another mount namespace attaches."""
    flags = OPEN_TREE_CLONE | AT_EMPTY_PATH | os.O_CLOEXEC
    return _syscall("open_tree", fd, b"", flags)


def move_mount(fd: int, target: str) -> None:
    _syscall("move_mount", fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def read_only(fd: int, recursive: bool) -> None:
    """Make a detached copy read-only, nosuid and nodev (the whole tree when ``recursive``)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _syscall("mount_setattr", fd, b"", flags, ctypes.byref(attr), ctypes.sizeof(attr))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp(program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    _check(
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0),
        "seccomp",
    )


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _touch(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _send(sock: socket.socket, kind: bytes, payload: object = None) -> None:
    sock.send(kind + json.dumps(payload).encode())


# -- start: root on the host, until the interpreter is executed afresh in the new root ------------


def bootstrap(config: dict[str, Any], sock: socket.socket) -> None:
    """Capture the sandbox's directories, become uid 0 of a new user namespace (mapped by the
    server), build the root, pivot into it and execute the job interpreter serving requests."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["server_pid"]:
        raise SystemExit("the server is gone")
    os.setgroups([])
    captured: list[tuple[int, str, bool]] = []  # (detached copy, where, a directory)
    for source, target, writable, recursive in config["binds"]:
        fd = open_tree(source, recursive)
        if not writable:
            read_only(fd, recursive)
        captured.append((fd, target, os.path.isdir(source)))
    _check(_libc.unshare(CLONE_NEWUSER), "unshare user")
    _send(sock, b"M")  # map me
    if sock.recv(16) != b"ok":
        raise SystemExit("not mapped")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of uid cleared it
    if os.getppid() != config["server_pid"]:
        raise SystemExit("the server is gone")
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    _check(_libc.unshare(flags), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = "/tmp"  # any directory: every source was captured before
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for link, target in config["links"]:
        os.symlink(target, root + link)
    for fd, target, is_dir in captured:
        if target.startswith("/dev/") or target == "/dev":
            continue
        _touch(root + target, is_dir)
        move_mount(fd, root + target)
        os.close(fd)
    _make_dev(root, [(fd, t) for fd, t, _ in captured if t.startswith("/dev/")])
    for directory in config["directories"]:
        os.makedirs(root + directory, exist_ok=True)
    hostname = str(config["hostname"]).encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    # Its jobs make user namespaces through the parent only (seccomp refuses them): one each.
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    _syscall("pivot_root", b".", b".")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    python = str(config["python"])
    env = {**config["env"], ENV_ROOM: " " * 16384}  # room for a job's variables (``_show``)
    os.set_inheritable(sock.fileno(), True)
    # No -I: the jobs' sys.flags are a plain interpreter's; the environment is ours alone.
    argv = [python, "-c", str(config["source"]), SERVING, json.dumps(config)]
    os.execve(python, argv, env)


def _make_dev(root: str, nodes: list[tuple[int, str]]) -> None:
    """A read-only ``/dev``: the host's null, zero, full, random, urandom and tty bound on files
    of a tmpfs, the usual links, and empty ``pts`` and ``shm`` for each job's own."""
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755,size=64k")
    for fd, target in nodes:
        _touch(root + target, directory=False)
        move_mount(fd, root + target)
        os.close(fd)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts")
    os.mkdir(f"{dev}/shm")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)


# -- serving: the job interpreter, uid 0 of its user namespace ------------------------------------


def _tid_field() -> int:
    """The address where the C library keeps this thread's id: the one 32-bit word of the
    thread's descriptor (``pthread_self()``, its first 2 KiB) that holds it."""
    _libc.pthread_self.restype = ctypes.c_void_p
    base = _libc.pthread_self()
    tid = threading.get_native_id()
    words = (ctypes.c_int32 * 512).from_address(base)
    found = [index for index in range(512) if words[index] == tid]
    if len(found) != 1:
        raise OSError(errno.ENOTSUP, f"the C library's thread id: {len(found)} candidates")
    return int(base) + 4 * found[0]


TID_FIELD = 0


def serve(config: dict[str, Any]) -> None:
    global TID_FIELD
    sock = socket.socket(fileno=int(config["sock"]))
    os.set_inheritable(sock.fileno(), False)
    try:
        TID_FIELD = _tid_field()
    except OSError as exc:
        _send(sock, b"E", str(exc))
        return
    program = bytes.fromhex(str(config["seccomp"]))
    imported, failed = [], {}
    for name in config["preload"]:
        try:
            __import__(name)
            imported.append(name)
        except Exception as exc:  # a module that fails here is imported by the job, if at all
            failed[name] = f"{type(exc).__name__}: {exc}"
    if "numpy" in sys.modules:
        with contextlib.suppress(Exception):
            __import__("numpy.random")  # imported lazily otherwise: reseeding would import it
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:  # a fork would copy one of them: locks held by the others stay held
        _send(sock, b"E", f"{threads} threads after its imports ({', '.join(imported)})")
        return
    _show([sys.executable, SERVING])  # its configuration is nobody's business
    sys.stdout.flush()
    sys.stderr.flush()
    gc.collect()
    gc.freeze()  # the collector leaves the parent's objects alone: their pages stay shared
    _send(sock, b"R", {"imported": imported, "failed": failed})
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 4096, 16)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)  # the server closed its end
        try:
            request = json.loads(message)
            _start(sock, request, fds, program)
        except Exception as exc:
            with contextlib.suppress(OSError):
                _send(sock, b"E", f"{type(exc).__name__}: {exc}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _start(sock: socket.socket, request: dict[str, Any], fds: list[int], program: bytes) -> None:
    """Clone the job's leader as the server's child, map its user namespace, let it go."""
    uid = int(request["uid"])
    go_r, go_w = os.pipe()
    flags = (
        CLONE_PARENT
        | CLONE_NEWUSER
        | CLONE_NEWNS
        | CLONE_NEWPID
        | CLONE_NEWIPC
        | CLONE_NEWNET
        | signal.SIGCHLD
    )
    ctypes.pythonapi.PyOS_BeforeFork()
    # The C library caches its thread's id (fork writes the child's there; a bare clone must
    # too, or its locks and signals in the child name the parent's thread)
    flags |= CLONE_CHILD_SETTID
    tid = TID_FIELD
    args = (flags, 0, 0, tid, 0) if _ARCH == 0 else (flags, 0, 0, 0, tid)
    pid = _locked.syscall(ctypes.c_long(_SYSCALLS["clone"][_ARCH]), *_args(args))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        try:
            os.close(go_w)
            _leader(sock, go_r, request, fds, program)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(2, f"warm: {type(exc).__name__}: {exc}\n".encode())
        os._exit(WARM_FAILURE_EXIT)
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    os.close(go_r)
    try:
        if pid < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"clone: {os.strerror(code)}")
        _send(sock, b"P", pid)  # the server's child now: it reaps it, whatever follows
        mapping = f"0 0 1\n{SANDBOX_UID} {uid} 1\n"
        _write(f"/proc/{pid}/uid_map", mapping)
        _write(f"/proc/{pid}/gid_map", mapping)
        os.write(go_w, b"1")
        _send(sock, b"K")
    finally:
        os.close(go_w)


def _leader(
    sock: socket.socket, go_r: int, request: dict[str, Any], fds: list[int], program: bytes
) -> None:
    """pid 1 of the job: confine, fork the job, pass its exit status on."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the server is its parent
    sock.detach()
    names = ["stdout", "stderr", "spec", "view", "lifeline"]
    names += ["stdin"] if request["stdin"] else []
    given = dict(zip(names, fds, strict=False))
    joins = fds[len(names) :]
    keep = {go_r, *fds}
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.dup2(given["stderr"], 2)  # its own complaints go where the job's would
    _show([sys.executable, "(warm leader)"], {})  # not the parent's configuration
    if os.read(go_r, 1) != b"1":  # the parent died before mapping it
        raise OSError(errno.ECHILD, "the warm parent went away")
    os.close(go_r)
    with open(given["spec"], "rb", closefd=False) as handle:
        spec = json.loads(handle.read())
    os.close(given.pop("spec"))
    for fd in joins:
        os.write(fd, b"0")
        os.close(fd)
    _check(_libc.unshare(CLONE_NEWCGROUP), "unshare cgroup")
    os.setsid()
    _mount_job(spec, given.pop("view"))
    _loopback_up()
    for which, soft, hard in spec["rlimits"]:
        _, current = resource.getrlimit(which)
        limit = hard if current == resource.RLIM_INFINITY else min(hard, current)
        resource.setrlimit(which, (min(soft, limit), limit))
    _drop(program)
    # The uid change cleared the parent-death signal: set again, then make sure the server did
    # not die meanwhile (its end of the lifeline closes with it).
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    lifeline = given.pop("lifeline")
    if select.select([lifeline], [], [], 0)[0]:
        raise OSError(errno.ECHILD, "the server went away")
    os.close(lifeline)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    job = os.fork()
    if job == 0:
        try:
            _job(spec, given)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(2, f"warm: {type(exc).__name__}: {exc}\n".encode())
        os._exit(WARM_FAILURE_EXIT)
    for fd in given.values():
        os.close(fd)
    while True:  # reap everything; end with the job
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(WARM_FAILURE_EXIT)
        if pid == job:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status))


def _mount_job(spec: dict[str, Any], view: int) -> None:
    """The job's own ``/proc`` (masked), ``/tmp``, ``/dev/shm``, ``/dev/pts``, working directory
    at its host path and ``/code``."""
    fs = MS_NOSUID | MS_NODEV
    mount("proc", "/proc", "proc", fs | MS_NOEXEC)
    with contextlib.suppress(OSError):  # one per job, made by its parent: none of its own
        _write("/proc/sys/user/max_user_namespaces", "0")
    for name in spec["proc_read_only"]:
        path = f"/proc/{name}"
        if os.path.lexists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | fs | MS_NOEXEC)
    for name in spec["proc_empty_files"]:
        path = f"/proc/{name}"
        if os.path.lexists(path):
            mount("/dev/null", path, None, MS_BIND)
    for name in spec["proc_empty_dirs"]:
        path = f"/proc/{name}"
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", fs | MS_RDONLY, "size=4k")
    size = int(spec["tmp_bytes"])
    owner = f"uid={SANDBOX_UID},gid={SANDBOX_UID}"
    mount("tmpfs", "/tmp", "tmpfs", fs, f"mode=0755,size={size},{owner}")
    mount("tmpfs", "/dev/shm", "tmpfs", fs, f"mode=0755,size={size},{owner}")
    pts = "newinstance,ptmxmode=0666,mode=620"
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts)
    cwd = str(spec["cwd"])
    top = str(spec["workspace_root"])
    if top.startswith("/tmp/"):  # else the parent made it, before its root became read-only
        os.makedirs(top, exist_ok=True)
    mount("tmpfs", top, "tmpfs", fs, "mode=0755,size=64k")
    os.makedirs(cwd, exist_ok=True)
    move_mount(view, cwd)
    os.close(view)
    mount(None, top, None, MS_REMOUNT | MS_RDONLY | fs)
    code = spec.get("code_file")
    if code is not None:
        path, content = code
        directory = os.path.dirname(path)
        mount("tmpfs", directory, "tmpfs", fs, f"mode=0755,size={len(content) * 4 + 65536}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(path, 0o644)
        mount(None, directory, None, MS_REMOUNT | MS_RDONLY | fs)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _drop(program: bytes) -> None:
    """Uid and gid 65534 with no groups, no capabilities (bounding set included),
    ``no_new_privs`` and the seccomp filter: what every process of the job inherits."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as handle:
        last = int(handle.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)  # from uid 0: every capability goes
    # The uid change made it undumpable (its /proc files root's): as an executed program is
    prctl(PR_SET_DUMPABLE, 1)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if program:
        _seccomp(program)


def _job(spec: dict[str, Any], given: dict[str, Any]) -> None:
    """The job itself (pid 2): its descriptors, environment, directory and fresh randomness,
    then its code as ``__main__``."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    stdin = given.get("stdin")
    if stdin is None:
        stdin = os.open("/dev/null", os.O_RDONLY)
    os.dup2(stdin, 0)
    os.dup2(given["stdout"], 1)
    os.dup2(given["stderr"], 2)
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)
    cwd = str(spec["cwd"])
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(spec["env"])
    os.environ["PWD"] = cwd  # as bwrap sets it after its --chdir
    argv = list(spec["argv"])
    _show(argv, dict(os.environ))
    sys.orig_argv = argv
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import random

    random.seed()  # also done at fork; said here so that it is never missed
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    if len(argv) >= 3 and argv[1] == "-c":
        source, filename = argv[2], "<string>"
        sys.argv = ["-c", *argv[3:]]
        sys.path[0] = ""  # the parent's own, as the interpreter set it for -c
    else:
        filename = argv[1]
        with open(filename, encoding="utf-8") as handle:
            source = handle.read()
        sys.argv = argv[1:]
        sys.path[0] = os.path.dirname(filename)
    _user_site()
    _run_main(source, filename)


# The kernel's view of this process's command line and environment: [start, size, bytes in use]
_AREAS: list[list[int]] = []


def _show(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Write a command line (and environment) over this process's, where the kernel shows them
    (``/proc/<pid>/cmdline``, ``environ``), as far as they fit, and zero what the last one left:
    host tools see a job as they see a cold one. The parent zeroes its own once, and was
    started with room for a job's variables; a job writes only a page or two of them."""
    if not _AREAS:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b") ", 1)[1].split()
        arg_start, arg_end, env_start, env_end = (int(fields[n - 3]) for n in (48, 49, 50, 51))
        _AREAS.append([arg_start, arg_end - arg_start, arg_end - arg_start])
        _AREAS.append([env_start, env_end - env_start, env_end - env_start])
    shown = (argv, None if env is None else [f"{k}={v}" for k, v in env.items()])
    for area, items in zip(_AREAS, shown, strict=True):
        if items is None:
            continue
        start, size, used = area
        data = b"".join(item.encode(errors="replace") + b"\0" for item in items)[: size - 1]
        ctypes.memmove(start, data.ljust(max(used, len(data)), b"\0"), max(used, len(data)))
        area[2] = len(data)


def _user_site() -> None:
    """What a python started with HOME set to the job's directory adds to its path."""
    import site

    site.USER_BASE = site.USER_SITE = None  # the parent's, from its HOME: found again from ours
    path = site.getusersitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(path):
        site.addsitedir(path)


def _run_main(source: str, filename: str) -> None:
    """Run ``source`` as the ``__main__`` module, then end as the interpreter would: wait for
    threads, run exit handlers, flush, exit with the code ``sys.exit`` gave (1 after an
    uncaught exception; by SIGINT after an uncaught KeyboardInterrupt)."""
    import atexit
    import builtins
    import threading
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    if filename != "<string>":
        main.__file__ = filename
    sys.modules["__main__"] = main
    status = 0
    interrupted = False
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
        del source
        exec(code, main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        traceback = exc.__traceback__
        if traceback is not None and traceback.tb_frame.f_code is _run_main.__code__:
            traceback = traceback.tb_next  # this frame is not the job's
        sys.excepthook(type(exc), exc.with_traceback(traceback), traceback)
        status = 1
        interrupted = isinstance(exc, KeyboardInterrupt)
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:
            status = 120
        except Exception:
            status = 120
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def main(argv: list[str]) -> None:
    stage, config = argv[1], json.loads(argv[2])
    if stage == SERVING:
        serve(config)
        return
    sock = socket.socket(fileno=int(config["sock"]))
    try:
        bootstrap(config, sock)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            _send(sock, b"E", f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    main(sys.argv)
