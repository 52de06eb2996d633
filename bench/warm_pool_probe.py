"""A measured prototype of a warm pool: a sandboxed Python parent (a "zygote") forks each job.

Run as root: ``python3 bench/warm_pool_probe.py`` (``--n 50``, ``--concurrency 8``, ``--jobs 200``).

What it builds, with the standard library and ctypes only:

1. **The zygote.** The probe (root) forks; the child unshares user, mount, network, IPC and UTS
   namespaces and waits; the root parent maps the namespace's uids and gids 0..65535 to the host
   range ``HOST_BASE``.. (root may map a range: bwrap, unprivileged, maps one uid). The child
   becomes uid 0 of its namespace (``HOST_BASE`` on the host, an ordinary user), makes its mounts
   private, builds a read-only tmpfs root (``/usr`` and the ``/bin``, ``/lib*`` links, a minimal
   ``/etc``, four device nodes, the host's ``/proc`` bound so that a job's pid namespace may mount
   its own), sets ``user.max_user_namespaces`` to 0 in its namespace, ``pivot_root``s into it and
   executes a fresh ``/usr/bin/python3 -I`` running this very file's source: nothing of the
   root probe's memory or descriptors goes along. That interpreter imports ``json``, ``decimal``
   (and ``numpy`` with ``numpy.random``, from a uv environment bound at ``/opt/venv``, with one
   OpenBLAS thread), freezes its objects out of the collector's sight (``gc.freeze``) and serves
   requests on a socketpair.
2. **A job.** The server sends the code, a uid index ``k`` and, by ``SCM_RIGHTS``, stdout and
   stderr pipes, a "go" pipe and its working directory as a detached mount (``open_tree`` with
   ``OPEN_TREE_CLONE``, made by the server, the only form another mount namespace may attach).
   The zygote forks; the child unshares mount and IPC namespaces (and a pid namespace: then it
   forks a pid 1, which mounts a fresh ``/proc`` and forks the job, staying as its reaper; or
   runs the job itself), mounts a size-capped ``/tmp`` and the working directory at its host
   path, joins a fresh cgroup (the server writes its pid and says "go" on a pipe; or, faster,
   the child writes itself into ``tasks`` files the server opened and passed), then drops to
   uid ``k`` (``HOST_BASE + k`` on
   the host: all capabilities go), sets ``no_new_privs``, loads the project's seccomp filter,
   closes every other descriptor, clears the environment, reseeds ``random`` (and
   ``numpy.random``), changes directory and runs the code as ``__main__``. The zygote reaps it
   and sends the wait status back.
3. **Checks** from inside a job and from the host, then **figures**: medians of ``--n`` sequential
   ``print(1)`` jobs (request to exit status) for each variant, the cold ``setpriv`` + ``bwrap``
   launch as ``interpreter/sandbox/bwrap.py`` builds it, a bare ``/usr/bin/python3`` spawn, and
   the throughput of ``--concurrency`` requests in flight. Interleaved in rounds of 10, so that
   all share the machine's drift. Then where a warm job's time goes: each phase's end after the
   request, and the job process's page faults (``phases_ms_after_request``).

It cleans up what it made (cgroups under a parent of its own, its directory in ``/var/tmp``, its
processes) also when it fails: the zygote's mounts live only in its namespaces and go with it.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import itertools
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

HOST_BASE = 2_000_100_000  # the zygote's range: upper half of INTERPRETER_SANDBOX_UIDS's default
HOST_COUNT = 65_536
COLD_UID = HOST_BASE + 60_000  # the cold launches' uid, inside the same range
PYTHON = "/usr/bin/python3"
TMP_BYTES = 64 * 2**20
MEMORY_BYTES = 512 * 2**20
PROCESSES = 64
STEP_TIMEOUT_S = 20.0  # any one wait of the probe: a bounded loop, never forever

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
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
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SYS_PIVOT_ROOT = 155  # x86_64
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # all five: the kernel checks them
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


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


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare {flags:#x}")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def pivot_root(new: str, old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, new.encode(), old.encode()), "pivot_root")


def open_tree(fd: int) -> int:
    flags = OPEN_TREE_CLONE | AT_EMPTY_PATH | os.O_CLOEXEC
    return _check(_libc.syscall(SYS_OPEN_TREE, fd, b"", flags), "open_tree")


def move_mount(fd: int, target: str) -> None:
    _check(
        _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
        f"move_mount {target}",
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(program: bytes) -> None:
    """PR_SET_SECCOMP with the filter as a ``sock_fprog`` (no_new_privs must be set)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    result = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)
    _check(result, "seccomp")


# -- messages: one JSON object per record (SOCK_SEQPACKET), descriptors beside it --------------
def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([struct.pack("=I", len(data)) + data], ancillary)


def receive(sock: socket.socket) -> tuple[dict, list[int]]:
    """One message (SOCK_SEQPACKET: a record at a time) and the descriptors it carried."""
    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
    if not data:
        raise EOFError("the other side closed the socket")
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    (size,) = struct.unpack("=I", data[:4])
    return json.loads(data[4 : 4 + size]), fds


# == the zygote side: in the sandbox, as /usr/bin/python3 -I, the standard library only ==========
class Zygote:
    def __init__(self, sock: socket.socket, config: dict) -> None:
        self.sock = sock
        self.seccomp = bytes.fromhex(config["seccomp"])
        self.ws_root = config["ws_root"]
        self.children: dict[int, tuple[str, int]] = {}  # pidfd -> (job id, pid)

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self.sock.fileno():
                    try:
                        message, fds = receive(self.sock)
                    except EOFError:
                        return
                    if message.get("op") == "exit":
                        return
                    pidfd = self.start(message, fds)
                    if pidfd is not None:
                        poller.register(pidfd, select.POLLIN)
                else:
                    job_id, pid = self.children.pop(fd)
                    poller.unregister(fd)
                    os.close(fd)
                    _, status = os.waitpid(pid, 0)
                    send(self.sock, {"op": "exited", "id": job_id, "status": status})

    def start(self, message: dict, fds: list[int]) -> int | None:
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 127
            try:
                self.sock.close()
                code = run_job(message, fds, self.seccomp, self.ws_root)
            except BaseException as exc:  # noqa: BLE001 -- report why setup failed, then go
                with contextlib.suppress(BaseException):
                    os.write(fds[1], f"setup failed: {exc!r}\n".encode())
            finally:
                os._exit(code)
        fork_s = time.perf_counter() - started
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (message["id"], pid)
        send(self.sock, {"op": "started", "id": message["id"], "pid": pid, "fork_s": fork_s})
        return pidfd


def run_job(message: dict, fds: list[int], seccomp_program: bytes, ws_root: str) -> int:
    """The forked child: its own namespaces and mounts, the cgroup, then the job. Returns the
    exit code (only ever as the job's outer process)."""
    out, err, go, tree, *tasks = fds
    mark = _marker(err if message.get("trace") else -1)
    mark("forked")
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    pidns = message["pidns"]
    flags = CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWPID if pidns else 0)
    flags |= CLONE_NEWNET if message.get("netns") else 0
    unshare(flags)
    mark("unshared")
    cwd = message["cwd"]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMP_BYTES},mode=1777")
    mount("tmpfs", ws_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    os.mkdir(cwd, 0o755)
    move_mount(tree, cwd)
    os.close(tree)
    mount(None, ws_root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if not pidns:  # the host's /proc was only there for a pid namespace's own: it goes
        _check(_libc.umount2(b"/proc", MNT_DETACH), "umount /proc")
    mark("mounted")
    for fd in tasks:  # opened by the server (root): the kernel checks the opener's credentials
        os.write(fd, b"0")
        os.close(fd)
    if os.read(go, 1) != b"g":  # the server has put this process into the job's cgroup
        return 126
    os.close(go)
    mark("joined")
    if not pidns:
        drop(message["k"], seccomp_program)
        mark("dropped")
        return execute(message, out, err, mark)
    reaper = os.fork()  # pid 1 of the new namespace
    if reaper == 0:
        code = 127
        try:
            mark("pid1")
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            drop(message["k"], seccomp_program)
            mark("dropped")
            if message.get("pid1"):  # no reaper: the job is pid 1 itself
                os._exit(execute(message, out, err, mark))
            job = os.fork()
            if job == 0:
                os._exit(execute(message, out, err, mark))
            os.close(out)
            os.close(err)
            code = reap(job)
        except BaseException as exc:  # noqa: BLE001 -- say why, as the outer child does
            with contextlib.suppress(BaseException):
                os.write(err, f"setup failed in pid 1: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(out)
    os.close(err)
    drop(message["k"], seccomp_program)  # this relay too: nothing of the job stays privileged
    return reap(reaper)


def reap(pid: int) -> int:
    """Wait for ``pid`` (reaping whatever else ends meanwhile) and give its exit as a code."""
    while True:
        child, status = os.waitpid(-1, 0)
        if child == pid:
            return (
                os.waitstatus_to_exitcode(status) % 256
                if os.WIFEXITED(status)
                else (128 + os.WTERMSIG(status))
            )


def drop(k: int, seccomp_program: bytes) -> None:
    """Become uid/gid ``k`` (all capabilities go), no_new_privs, the seccomp filter."""
    os.setgroups([])
    os.setresgid(k, k, k)
    os.setresuid(k, k, k)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of uid cleared it: die with the parent
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    load_seccomp(seccomp_program)


def _marker(fd: int):
    """``mark(phase)``: the time of a phase on the job's stderr (``--trace``), else nothing."""

    def mark(phase: str) -> None:
        if fd >= 0:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            os.write(fd, f"@trace {phase} {time.perf_counter():.6f} {faults}\n".encode())

    return mark


def execute(message: dict, out: int, err: int, mark=None) -> int:
    """Run the job's code as ``__main__`` with nothing of the zygote's but its modules."""
    import random
    import types

    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 65536)
    os.environ.clear()
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    os.chdir(message["cwd"])
    if mark is not None:
        mark = _marker(2 if message.get("trace") else -1)
        mark("ready")
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    code = 0
    try:
        exec(compile(message["code"], "<job>", "exec"), main.__dict__)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 -- as the interpreter would: a traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    if mark is not None:
        mark("ran")
    return code


def zygote_main(sock_fd: int, venv_site: str) -> None:
    """The zygote, executed afresh inside its root: settle, import, serve."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for cap in range(64):  # the bounding set: nothing to gain at any later execve
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    sock = socket.socket(fileno=sock_fd)
    config, _ = receive(sock)
    if venv_site:
        sys.path.append(venv_site)
    import decimal  # noqa: F401 -- warm: what every job will find imported
    import gc
    import json as _json  # noqa: F401
    import random  # noqa: F401 -- and what each job's start uses
    import traceback  # noqa: F401
    import types  # noqa: F401

    if venv_site:
        import numpy
        import numpy.random  # noqa: F401 -- numpy 2 loads it lazily: at each job's reseed

        numpy.random.seed()
    # Every object so far out of the collector's sight: a child's collection would otherwise
    # touch (and copy) every page of the parent's heap
    gc.freeze()

    status = {}
    for key in ("VmRSS", "Threads", "Uid", "CapEff"):
        status[key] = _proc_status("self", key)
    send(sock, {"op": "ready", "modules": sorted(sys.modules), "status": status})
    Zygote(sock, config).serve()


def _proc_status(pid: str | int, key: str) -> str:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return ""


# == the server side: the probe, root on the host =================================================
def build_root(new: str, venv: str | None, ws_root: str) -> dict:
    """In the zygote's mount namespace (uid 0 of its user namespace): the root it will pivot
    into. Returns what worked and what did not."""
    notes: dict[str, str] = {}
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # pivot_root refuses a shared tree
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for name in ("usr", "etc", "dev", "tmp", "proc", "opt", ".old"):
        os.mkdir(f"{new}/{name}", 0o755)
    os.chmod(f"{new}/tmp", 0o1777)
    _ro_bind("/usr", f"{new}/usr")
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            os.mkdir(new + path)
            _ro_bind(path, new + path)
    for name in ("null", "zero", "random", "urandom"):
        with open(f"{new}/dev/{name}", "w"):
            pass
        mount(f"/dev/{name}", f"{new}/dev/{name}", None, MS_BIND)
    for name in ("ld.so.cache", "nsswitch.conf", "localtime", "timezone"):
        with contextlib.suppress(OSError), open(f"/etc/{name}", "rb") as src:
            data = src.read()
            with open(f"{new}/etc/{name}", "wb") as dst:
                dst.write(data)
    files = {
        "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n",
        "group": "root:x:0:\n",
        "hosts": "127.0.0.1\tlocalhost sandbox\n",
    }
    for name, text in files.items():
        with open(f"{new}/etc/{name}", "w") as handle:
            handle.write(text)
    os.makedirs(new + ws_root, 0o755)
    if venv:
        os.mkdir(f"{new}/opt/venv")
        _ro_bind(venv, f"{new}/opt/venv")
    # A pid namespace's /proc may be mounted only where a /proc is already fully visible
    mount("/proc", f"{new}/proc", None, MS_BIND | MS_REC)
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as handle:
            handle.write("0")
        notes["max_user_namespaces"] = "0 in the zygote's namespace"
    except OSError as exc:
        notes["max_user_namespaces"] = f"not set: {exc.strerror}"
    _check(_libc.sethostname(b"sandbox", 7), "sethostname")
    os.chdir(new)
    pivot_root(".", ".old")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return notes


def _ro_bind(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    vfs = os.statvfs(source)  # a mount from the host keeps its locked flags: name them again
    flags |= vfs.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount(None, target, None, flags)


class ZygoteHandle:
    """The zygote as the server holds it: its pid, its socket, the directories it was given."""

    def __init__(self, pid: int, sock: socket.socket, ready: dict, notes: dict) -> None:
        self.pid, self.sock, self.ready, self.notes = pid, sock, ready, notes

    def rss_kib(self) -> int:
        return int(_proc_status(self.pid, "VmRSS").split()[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            send(self.sock, {"op": "exit"})
        self.sock.close()
        give_up = time.monotonic() + 2
        while time.monotonic() < give_up:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def launch_zygote(
    source: str, seccomp_program: bytes, ws_root: str, venv: str | None
) -> ZygoteHandle:
    """Fork; the child unshares, the root parent maps its uids, the child builds its root and
    executes /usr/bin/python3 on this file's source."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the future zygote: nothing of the probe may outlive the exec
        try:
            os.close(to_child_w)
            os.close(from_child_r)
            ours.close()
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
            os.write(from_child_w, b"u")
            if os.read(to_child_r, 1) != b"m":
                os._exit(3)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)  # host uid HOST_BASE from here on: never root again
            new = "/tmp"  # any directory: the tmpfs lands on it in this namespace only
            notes = build_root(new, venv, ws_root)
            os.write(from_child_w, json.dumps(notes).encode())
            fd = theirs.fileno()
            os.set_inheritable(fd, True)
            os.closerange(3, fd)
            os.closerange(fd + 1, 65536)
            site = "/opt/venv/lib/python3.11/site-packages" if venv else ""
            # OpenBLAS starts a thread per core at import; a zygote forks best with one thread
            env = {"OPENBLAS_NUM_THREADS": "1"} if venv else {}
            os.execve(PYTHON, [PYTHON, "-I", "-c", source, "--zygote", str(fd), site], env)
        except BaseException as exc:  # noqa: BLE001
            with contextlib.suppress(BaseException):
                os.write(2, f"zygote setup failed: {exc!r}\n".encode())
        os._exit(4)
    theirs.close()
    os.close(to_child_r)
    os.close(from_child_w)
    try:
        if _read_bounded(from_child_r, 1) != b"u":
            raise RuntimeError("the zygote did not unshare")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as handle:
                handle.write(f"0 {HOST_BASE} {HOST_COUNT}\n")
        os.write(to_child_w, b"m")
        notes = json.loads(_read_bounded(from_child_r, 4096) or b"{}")
        send(ours, {"seccomp": seccomp_program.hex(), "ws_root": ws_root})
        ready, _ = _receive_bounded(ours)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ours.close()
        raise
    finally:
        os.close(to_child_w)
        os.close(from_child_r)
    return ZygoteHandle(pid, ours, ready, notes)


def _read_bounded(fd: int, size: int) -> bytes:
    if not select.select([fd], [], [], STEP_TIMEOUT_S)[0]:
        raise TimeoutError("the zygote did not answer")
    return os.read(fd, size)


def _receive_bounded(sock: socket.socket) -> tuple[dict, list[int]]:
    if not select.select([sock], [], [], STEP_TIMEOUT_S)[0]:
        raise TimeoutError("the zygote did not answer")
    return receive(sock)


class Job:
    """One request as the server tracks it."""

    def __init__(
        self,
        name: str,
        code: str,
        *,
        pidns: bool,
        cgroup: bool,
        netns: bool = False,
        trace: bool = False,
        pid1: bool = False,
        self_join: bool = False,
    ) -> None:
        self.pid1, self.self_join = pid1, self_join
        self.name, self.code, self.pidns, self.cgroup, self.netns = name, code, pidns, cgroup, netns
        self.trace = trace
        self.id = ""
        self.k = 0
        self.cwd = ""
        self.pid = 0
        self.fork_s = 0.0
        self.t0 = self.t1 = 0.0
        self.status: int | None = None
        self.stdout = self.stderr = b""
        self.outside: dict = {}
        self.check_outside = False
        self.cg = None
        self.go_w = -1
        self.pipes: tuple[int, int] = (-1, -1)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


class Server:
    """Drives one zygote: sends jobs (up to ``concurrency`` in flight), joins each to a fresh
    cgroup when asked, collects exit status and output."""

    def __init__(self, zygote: ZygoteHandle, cgroups, remover, ws_root: str) -> None:
        self.zygote, self.cgroups, self.remover, self.ws_root = zygote, cgroups, remover, ws_root

    def run(self, jobs: list[Job], concurrency: int = 1) -> list[Job]:
        pending = list(reversed(jobs))
        free = list(range(concurrency, 0, -1))  # uid indexes: one per job in flight
        flying: dict[str, Job] = {}
        while pending or flying:
            while pending and free:
                job = pending.pop()
                job.k = free.pop()
                self.submit(job)
                flying[job.id] = job
            message, _ = _receive_bounded(self.zygote.sock)
            job = flying[message["id"]]
            if message["op"] == "started":
                job.pid, job.fork_s = message["pid"], message["fork_s"]
                if job.cg is not None and not job.self_join:
                    for path in job.cg.join_files:  # v1 "tasks": no RCU wait, unlike cgroup.procs
                        with open(path, "w") as handle:
                            handle.write(str(job.pid))
                    os.write(job.go_w, b"g")
                os.close(job.go_w)
                if job.check_outside:
                    job.outside = look_from_outside(job)
            elif message["op"] == "exited":
                job.t1 = time.perf_counter()
                job.status = message["status"]
                job.stdout, job.stderr = _drain(job.pipes[0]), _drain(job.pipes[1])
                if job.cg is not None:
                    self.remover.remove(job.cg)
                del flying[job.id]
                free.append(job.k)
        return jobs

    def submit(self, job: Job) -> None:
        seq = next(_JOB_NUMBERS)
        job.id = f"j{seq}"
        job.cwd = f"{self.ws_root}/{job.id}"
        os.mkdir(job.cwd, 0o700)
        os.chown(job.cwd, HOST_BASE + job.k, HOST_BASE + job.k)
        job.t0 = time.perf_counter()
        directory = os.open(job.cwd, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            tree = open_tree(directory)
        finally:
            os.close(directory)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, job.go_w = os.pipe()
        job.pipes = (out_r, err_r)
        if job.cgroup:
            job.cg = self.cgroups.create(f"warm-{os.getpid()}-{seq}", _LIMITS)
        else:
            os.write(job.go_w, b"g")
        request = {"op": "run", "id": job.id, "code": job.code, "k": job.k, "cwd": job.cwd}
        request.update(pidns=job.pidns, netns=job.netns, trace=job.trace, pid1=job.pid1)
        fds = [out_w, err_w, go_r, tree]
        if job.cg is not None and job.self_join:
            fds += [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in job.cg.join_files]
            os.write(job.go_w, b"g")
        send(self.zygote.sock, request, fds)
        for fd in fds:
            os.close(fd)


_JOB_NUMBERS = itertools.count(1)  # every server's jobs share the workspace root


class _Limits:
    memory_bytes = MEMORY_BYTES
    processes = PROCESSES


_LIMITS = _Limits()


def _drain(fd: int) -> bytes:
    chunks = []
    give_up = time.monotonic() + STEP_TIMEOUT_S
    try:
        while time.monotonic() < give_up:
            if not select.select([fd], [], [], STEP_TIMEOUT_S)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def look_from_outside(job: Job) -> dict:
    """From the host, while the check job sleeps: every process of its cgroup, as the host sees
    it (uid of /proc/<pid>, the status lines)."""
    seen: dict = {}
    give_up = time.monotonic() + 2.0
    while time.monotonic() < give_up:
        seen = {}
        for pid in job.cg.pids():
            with contextlib.suppress(OSError):
                seen[pid] = {
                    "stat_uid": os.stat(f"/proc/{pid}").st_uid,
                    **{k: _proc_status(pid, k) for k in ("CapEff", "NoNewPrivs", "Seccomp")},
                }
        wanted = HOST_BASE + job.k
        if len(seen) >= (3 if job.pidns else 1) and all(
            v["stat_uid"] == wanted and v["Seccomp"] == "2" for v in seen.values()
        ):
            break
        time.sleep(0.005)
    return seen


CHECK_CODE = r"""
import json, os, random, socket, sys, time
found = {"uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups()}
found["tmp_at_start"] = os.listdir("/tmp")
if os.path.exists("/proc/self/status"):
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
        found[key] = status[key].strip()
    found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    found["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
else:
    found["proc"] = "no /proc"
    import fcntl
    found["fds"] = []
    for fd in range(1024):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
            found["fds"].append(fd)
        except OSError:
            pass
found["interfaces"] = [name for _, name in socket.if_nameindex()]
found["environ"] = dict(os.environ)
found["random"] = random.random()
found["json_mark"] = getattr(json, "MARK", None)
json.MARK = "set by an earlier job"
found["cwd"] = os.getcwd()
writes = {}
for path in ["/x", "/usr/x", "/etc/x", "/dev/x", "/proc/sys/kernel/hostname",
             os.path.dirname(os.getcwd()) + "/x", os.getcwd() + "/x", "/tmp/x"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        writes[path] = "written"
    except OSError as exc:
        writes[path] = exc.strerror
found["writes"] = writes
try:
    os.kill(ZYGOTE, 0)
    found["zygote_pid"] = "visible"
except OSError as exc:
    found["zygote_pid"] = exc.strerror
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    found["unshare_user"] = os.strerror(ctypes.get_errno()) if libc.unshare(0x10000000) else "made"
except Exception as exc:
    found["unshare_user"] = repr(exc)
try:
    with open("/proc/sys/user/max_user_namespaces") as f:
        found["max_user_namespaces"] = f.read().strip()
except OSError as exc:
    found["max_user_namespaces"] = exc.strerror
found["numpy"] = "numpy" in sys.modules
if found["numpy"]:
    found["numpy_random"] = float(sys.modules["numpy"].random.random())
print(json.dumps(found))
sys.stdout.flush()
time.sleep(0.4)
"""


# -- the cold paths, for comparison --------------------------------------------------------------
class Cold:
    """``setpriv`` + ``bwrap`` as ``interpreter/sandbox/bwrap.py`` builds it (without the
    overlay volume: the working directory bound by descriptor), optionally behind the gate that
    joins a fresh cgroup."""

    def __init__(self, base: str, cgroups, remover, seccomp_program: bytes) -> None:
        from pathlib import Path

        from interpreter.sandbox import bwrap

        self.cgroups, self.remover, self.seccomp = cgroups, remover, seccomp_program
        etc = bwrap.build_etc(Path(base) / "etc")
        self.static = bwrap.static_args(TMP_BYTES, etc, [], bwrap.proc_masks())
        self.ws = f"{base}/cold"
        os.mkdir(self.ws, 0o711)
        self.seq = itertools.count(1)  # threads share it: next() is atomic

    def run(self, code: str, cgroup: bool) -> tuple[float, bytes]:
        import subprocess

        from interpreter.sandbox import seccomp
        from interpreter.sandbox.base import gated

        seq = next(self.seq)
        cwd = f"{self.ws}/c{seq}"
        os.mkdir(cwd, 0o700)
        os.chown(cwd, COLD_UID, COLD_UID)
        started = time.perf_counter()
        cg = self.cgroups.create(f"cold-{os.getpid()}-{seq}", _LIMITS) if cgroup else None
        filter_fd = seccomp.memfd(self.seccomp)
        directory = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        argv = ["/usr/bin/setpriv", f"--reuid={COLD_UID}", f"--regid={COLD_UID}"]
        argv += ["--clear-groups", "--no-new-privs", "--", "/usr/bin/bwrap", *self.static]
        argv += ["--seccomp", str(filter_fd), "--bind-fd", str(directory), cwd]
        argv += ["--remount-ro", "/", "--chdir", cwd, "--", PYTHON, "-c", code]
        try:
            command = gated(cg.join_files, tuple(argv)) if cg is not None else argv
            with subprocess.Popen(
                command,
                pass_fds=(filter_fd, directory),
                stdin=subprocess.PIPE if cg is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                start_new_session=True,
            ) as proc:
                out, err = proc.communicate(b"\n" if cg is not None else None, STEP_TIMEOUT_S)
        finally:
            os.close(filter_fd)
            os.close(directory)
        elapsed = time.perf_counter() - started
        if cg is not None:
            self.remover.remove(cg)
        if proc.returncode != 0:
            raise RuntimeError(f"cold launch failed ({proc.returncode}): {err[:300]!r}")
        return elapsed, out


def bare(code: str) -> tuple[float, bytes]:
    import subprocess

    started = time.perf_counter()
    out = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, check=True, timeout=STEP_TIMEOUT_S
    ).stdout
    return time.perf_counter() - started, out


# -- the run -------------------------------------------------------------------------------------
def make_cgroups(base_name: str):
    """A test-only parent beside the server's: ``<own cgroup>/<base_name>`` in each v1
    hierarchy (the project's driver makes, joins and removes the jobs' cgroups under it)."""
    from pathlib import Path

    from interpreter.sandbox import cgroup_v1
    from interpreter.sandbox.cgroups import CgroupV1, Remover, parse_mountinfo, parse_proc_cgroup

    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    v1, v2 = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    if not all(c in v1 for c in cgroup_v1.REQUIRED):
        raise SystemExit("this probe drives cgroup v1 (memory and pids hierarchies) only")
    parents = {}
    for controller in (*cgroup_v1.REQUIRED, *cgroup_v1.OPTIONAL):
        if controller in v1 and controller in own and v1[controller].root == "/":
            parents[controller] = v1[controller].point / own[controller].lstrip("/") / base_name
    driver = CgroupV1(parents)
    driver.setup()
    return driver, Remover()


def remove_parents(driver) -> list[str]:
    """Kill what is left in the probe's cgroups (after a failure: jobs in flight), remove them
    and their parents; what could not be removed."""
    left: list[str] = []
    pids_parent = driver.parents["pids"]
    for child in sorted(pids_parent.iterdir()) if pids_parent.exists() else []:
        if child.is_dir():
            with contextlib.suppress(OSError):
                driver.open(child.name).kill_all()
    for parent in driver.parents.values():
        for child in sorted(parent.iterdir()) if parent.exists() else []:
            if child.is_dir():
                _rmdir_retry(child, left)
        _rmdir_retry(parent, left)
    return left


def _rmdir_retry(path, left: list[str]) -> None:
    give_up = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > give_up:
                left.append(str(path))
                return
            time.sleep(0.05)


def median_ms(values: list[float]) -> float:
    import statistics

    return round(statistics.median(values) * 1000, 2)


def summary(values: list[float]) -> dict:
    import statistics

    ordered = sorted(values)
    return {
        "median_ms": median_ms(values),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
        "n": len(values),
    }


def machine() -> dict:
    import platform

    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if "model name" in line), "")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "job_python": PYTHON,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": os.getloadavg()[0],
    }


def main() -> int:
    import argparse
    import shutil
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="sequential jobs per variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=160, help="jobs per throughput figure")
    parser.add_argument(
        "--venv",
        default="/var/tmp/warm-probe-numpy-venv",
        help="an environment of /usr/bin/python3 with numpy (made with uv if absent)",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from interpreter.sandbox import seccomp

    program = seccomp.program()
    with open(os.path.abspath(__file__)) as handle:
        source = handle.read()
    base = f"/var/tmp/warm-probe-{os.getpid()}"
    os.mkdir(base, 0o711)
    ws_root = f"{base}/ws"
    os.mkdir(ws_root, 0o711)
    results: dict = {"machine": machine(), "host_base": HOST_BASE}
    driver = remover = None
    zygotes: list[ZygoteHandle] = []
    try:
        driver, remover = make_cgroups(f"warm-probe-{os.getpid()}")
        venv = _numpy_venv(args.venv, results)
        plain = launch_zygote(source, program, ws_root, None)
        zygotes.append(plain)
        results["zygote"] = {"notes": plain.notes, "status": plain.ready["status"]}
        server = Server(plain, driver, remover, ws_root)
        with_numpy = None
        if venv:
            with_numpy = launch_zygote(source, program, ws_root, venv)
            zygotes.append(with_numpy)
            results["zygote_numpy"] = {"status": with_numpy.ready["status"]}
        results["checks"] = run_checks(server, plain, with_numpy, driver, remover, ws_root)
        results["figures"] = measure(args, server, with_numpy, driver, remover, base, program)
        results["zygote"]["rss_kib_after"] = plain.rss_kib()
        if with_numpy is not None:
            results["zygote_numpy"]["rss_kib_after"] = with_numpy.rss_kib()
        results["machine"]["load_after"] = os.getloadavg()[0]
    finally:
        for zygote in zygotes:
            with contextlib.suppress(Exception):
                zygote.close()
        if remover is not None:
            remover.close()
        left = remove_parents(driver) if driver is not None else []
        shutil.rmtree(base, ignore_errors=True)
        stray = subprocess.run(
            ["sh", "-c", f"grep -l ' {base}' /proc/*/mountinfo 2>/dev/null | head -3"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        results["cleanup"] = {
            "cgroups_left": left,
            "dir_left": os.path.exists(base),
            "mountinfo_mentioning_base": stray,
        }
        text = json.dumps(results, indent=2, default=str)
        print(text)
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(text)
    return 0


def _numpy_venv(path: str, results: dict) -> str | None:
    """numpy for the zygote: /usr/bin/python3 has none here, so an environment made with uv."""
    import subprocess

    probe = subprocess.run([PYTHON, "-c", "import numpy"], capture_output=True, check=False)
    if probe.returncode == 0:
        results["numpy"] = "importable by /usr/bin/python3 (not measured separately)"
        return None
    python = f"{path}/bin/python"
    if not os.path.exists(python):
        uv = shutil_which("uv")
        if uv is None:
            results["numpy"] = "skipped: not importable and no uv to make an environment"
            return None
        subprocess.run([uv, "venv", "-q", "--python", PYTHON, path], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", python, "numpy"], check=True)
    version = subprocess.run(
        [python, "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    results["numpy"] = f"numpy {version} from a uv environment of /usr/bin/python3 at {path}"
    return path


def shutil_which(name: str) -> str | None:
    import shutil

    found = shutil.which(name)
    if found is None:
        beside = os.path.join(os.path.dirname(sys.executable), name)
        found = beside if os.path.exists(beside) else None
    return found


def run_checks(server: Server, plain, with_numpy, driver, remover, ws_root: str) -> dict:
    """Jobs that report what they see, two in a row per variant; and what the host sees."""
    checks: dict = {}
    code = CHECK_CODE.replace("ZYGOTE", str(plain.pid))
    for label, pidns in (("pidns", True), ("no_pidns", False)):
        jobs = [Job(f"check-{label}-{i}", code, pidns=pidns, cgroup=True) for i in range(2)]
        for job in jobs:
            job.check_outside = True
        server.run(jobs)
        checks[label] = [_check_report(job) for job in jobs]
    if with_numpy is not None:
        numpy_server = Server(with_numpy, driver, remover, ws_root)
        jobs = [Job(f"check-numpy-{i}", code, pidns=True, cgroup=True) for i in range(2)]
        numpy_server.run(jobs)
        checks["numpy"] = [_check_report(job) for job in jobs]
    return checks


def _check_report(job: Job) -> dict:
    report: dict = {"status": job.status, "host_uid_expected": HOST_BASE + job.k}
    try:
        report["inside"] = json.loads(job.stdout.decode().splitlines()[0])
    except (ValueError, IndexError):
        report["stdout"] = job.stdout.decode(errors="replace")[:500]
    report["stderr"] = job.stderr.decode(errors="replace")[-800:]
    report["outside"] = job.outside
    return report


FULL = dict(pidns=True, cgroup=True, self_join=True)
WARM_VARIANTS = {
    "warm": dict(pidns=False, cgroup=False),
    "warm +cgroup (server writes pid)": dict(pidns=False, cgroup=True),
    "warm +cgroup (job joins by fd)": dict(pidns=False, cgroup=True, self_join=True),
    "warm +pidns (pid 1 reaps)": dict(pidns=True, cgroup=False),
    "warm +pidns (job is pid 1)": dict(pidns=True, cgroup=False, pid1=True),
    "warm +pidns +cgroup (server writes pid)": dict(pidns=True, cgroup=True),
    "warm +pidns +cgroup (job joins by fd)": FULL,
    "warm +pidns +cgroup (by fd) +netns": dict(FULL, netns=True),
}


def measure(args, server: Server, with_numpy, driver, remover, base: str, program: bytes) -> dict:
    """Sequential print(1) per variant, interleaved in rounds of 10; then throughput."""
    cold = Cold(base, driver, remover, program)
    code = "print(1)"
    warm_variants = WARM_VARIANTS
    times: dict[str, list[float]] = {name: [] for name in warm_variants}
    forks: dict[str, list[float]] = {"plain": [], "numpy": []}
    extra = ["cold bwrap", "cold bwrap+cgroup", "bare python3"]
    if with_numpy is not None:
        extra.insert(0, "warm, numpy zygote, +pidns +cgroup (by fd)")
        numpy_server = Server(with_numpy, driver, remover, server.ws_root)
    times.update({name: [] for name in extra})
    for _ in range(3):  # warm-up
        server.run([Job("w", code, **FULL)])
        cold.run(code, True)
        bare(code)
    rounds = -(-args.n // 10)
    for _ in range(rounds):
        for name, options in warm_variants.items():
            jobs = server.run([Job(name, code, **options) for _ in range(10)])
            for job in jobs:
                _expect(job)
                times[name].append(job.seconds)
                forks["plain"].append(job.fork_s)
        if with_numpy is not None:
            jobs = numpy_server.run([Job("n", code, **FULL) for _ in range(10)])
            for job in jobs:
                _expect(job)
                times["warm, numpy zygote, +pidns +cgroup (by fd)"].append(job.seconds)
                forks["numpy"].append(job.fork_s)
        for _ in range(10):
            times["cold bwrap"].append(_expect_out(*cold.run(code, False)))
            times["cold bwrap+cgroup"].append(_expect_out(*cold.run(code, True)))
            times["bare python3"].append(_expect_out(*bare(code)))
    figures: dict = {"sequential": {name: summary(values) for name, values in times.items()}}
    figures["zygote_fork_call"] = {
        name: summary(values) for name, values in forks.items() if values
    }
    figures["phases_ms_after_request"] = breakdown(server, warm_variants, args.n)
    if with_numpy is not None:
        figures["phases_ms_after_request"].update(
            breakdown(numpy_server, {"warm, numpy zygote, +pidns +cgroup (by fd)": FULL}, args.n)
        )
    figures["throughput"] = throughput(
        args, server, numpy_server if with_numpy is not None else None, cold
    )
    return figures


def throughput(args, server: Server, numpy_server, cold: Cold) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    code, total, width = "print(1)", args.jobs, args.concurrency
    found: dict = {"concurrency": width, "jobs": total}
    warm = {
        "warm +pidns +cgroup (server writes pid)": (server, dict(pidns=True, cgroup=True)),
        "warm +pidns +cgroup (job joins by fd)": (server, FULL),
    }
    if numpy_server is not None:
        warm["warm, numpy zygote, +pidns +cgroup (by fd)"] = (numpy_server, FULL)
    for name, (driver, options) in warm.items():
        started = time.perf_counter()
        jobs = driver.run([Job("t", code, **options) for _ in range(total)], width)
        elapsed = time.perf_counter() - started
        for job in jobs:
            _expect(job)
        found[name] = {
            "jobs_per_s": round(total / elapsed, 1),
            **summary([job.seconds for job in jobs]),
        }
    cold_runs = {
        "cold bwrap+cgroup": lambda: cold.run(code, True),
        "bare python3": lambda: bare(code),
    }
    for name, run in cold_runs.items():
        started = time.perf_counter()
        with ThreadPoolExecutor(width) as pool:
            outcomes = list(pool.map(lambda _, run=run: run(), range(total)))
        elapsed = time.perf_counter() - started
        found[name] = {
            "jobs_per_s": round(total / elapsed, 1),
            **summary([_expect_out(*outcome) for outcome in outcomes]),
        }
    return found


def breakdown(server: Server, variants: dict, n: int) -> dict:
    """Where a warm job's time goes: each phase's end, in ms after the request was sent, and
    the exit status's arrival after the code ran (medians of ``n``)."""
    import statistics

    found = {}
    for name, options in variants.items():
        phases: dict[str, list[float]] = {}
        jobs = server.run([Job(name, "print(1)", trace=True, **options) for _ in range(n)])
        for job in jobs:
            marks = {}
            for line in job.stderr.decode().splitlines():
                if line.startswith("@trace "):
                    _, phase, stamp, faults = line.split()
                    marks[phase] = float(stamp)
                    if phase == "ran":  # the job process's minor faults, since its fork
                        phases.setdefault("job page faults", []).append(float(faults))
            marks["exit seen"] = job.t1
            for phase, stamp in marks.items():
                phases.setdefault(phase, []).append((stamp - job.t0) * 1000)
        found[name] = {k: round(statistics.median(v), 2) for k, v in phases.items()}
    return found


def _expect(job: Job) -> None:
    if job.status != 0 or job.stdout != b"1\n":
        raise RuntimeError(f"job {job.name} ended {job.status}: {job.stdout!r} {job.stderr!r}")


def _expect_out(seconds: float, out: bytes) -> float:
    if out != b"1\n":
        raise RuntimeError(f"unexpected output {out!r}")
    return seconds


if __name__ == "__main__" and sys.argv[1:2] != ["--zygote"]:
    sys.exit(main())

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--zygote":
    zygote_main(int(sys.argv[2]), sys.argv[3])
    sys.exit(0)
