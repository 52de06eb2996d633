"""The seccomp allowlist: the program's shape, its decisions (run through a small classic-BPF
interpreter here), and jobs in the real sandbox that it refuses or lets through.

The sandbox tests run jobs through the real app in process (a MemoryStore) with
``sandbox="bwrap"``; they are skipped with the reason when this host cannot run the sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from interpreter.sandbox import seccomp
from tests.sandbox.usable import UNUSABLE

ARCHES = sorted(seccomp.SYSCALLS)
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_ARCH_I386 = 0x40000003
ALLOW = 0x7FFF0000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS
EAFNOSUPPORT = 0x00050000 | errno.EAFNOSUPPORT
AF_INET, AF_UNIX, AF_INET6, AF_NETLINK = 2, 1, 10, 16
AF_PACKET, AF_RDS, AF_TIPC, AF_BLUETOOTH, AF_ALG, AF_VSOCK, AF_XDP = 17, 21, 30, 31, 38, 40, 44
CLONE_NEW = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_THREAD_FLAGS = 0x003D0F00  # glibc's pthread_create
CLONE_FORK_FLAGS = 0x01200011  # glibc's fork: CHILD_SETTID | CHILD_CLEARTID | SIGCHLD
CLONE_VFORK_FLAGS = 0x00004111  # CLONE_VM | CLONE_VFORK | SIGCHLD

# Refused by Docker's default profile for a process without capabilities, or by this one.
MUST_REFUSE = """
    pidfd_getfd process_madvise kcmp ptrace process_vm_readv process_vm_writev
    mbind get_mempolicy set_mempolicy set_mempolicy_home_node migrate_pages move_pages
    unshare setns sethostname setdomainname add_key request_key keyctl bpf perf_event_open
    userfaultfd mount umount2 pivot_root open_tree move_mount fsopen fsconfig fsmount fspick
    mount_setattr open_tree_attr file_getattr file_setattr sysfs ustat uselib kexec_load
    kexec_file_load init_module finit_module delete_module reboot swapon swapoff acct
    settimeofday clock_settime adjtimex clock_adjtime quotactl quotactl_fd lookup_dcookie
    name_to_handle_at open_by_handle_at modify_ldt iopl ioperm syslog chroot vhangup
    listns lsm_get_self_attr
""".split()


def run_filter(
    program: bytes, arch: str, nr: int, *args: int, audit_arch: int | None = None
) -> tuple[int, int]:
    """What the kernel would do with the program: (its return value, instructions run)."""
    data = struct.pack(
        "<IIQ6Q",
        nr & 0xFFFFFFFF,
        AUDIT_ARCH[arch] if audit_arch is None else audit_arch,
        0,
        *(list(args) + [0] * 6)[:6],
    )
    insns = [struct.unpack_from("=HBBI", program, offset) for offset in range(0, len(program), 8)]
    pc = accumulator = steps = 0
    while True:
        code, jt, jf, k = insns[pc]
        steps += 1
        if code == 0x20:  # ld [k]
            (accumulator,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == 0x05:  # ja
            pc += 1 + k
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k != 0}
            pc += 1 + (jt if taken[code] else jf)
        elif code == 0x06:  # ret
            return k, steps
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")


def decide(arch: str, name_or_nr: str | int, *args: int) -> int:
    nr = seccomp.SYSCALLS[arch][name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    return run_filter(seccomp.program(arch), arch, nr, *args)[0]


# -- the program ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
def test_the_program_assembles_within_the_kernels_limit(arch: str) -> None:
    program = seccomp.program(arch)
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 <= seccomp.MAX_INSTRUCTIONS == 4096


@pytest.mark.parametrize("arch", ARCHES)
def test_every_jump_lands_inside_the_program_and_every_path_ends_in_a_return(arch: str) -> None:
    program = seccomp.program(arch)
    insns = [struct.unpack_from("=HBBI", program, offset) for offset in range(0, len(program), 8)]
    for pc, (code, jt, jf, k) in enumerate(insns):
        assert code in (0x20, 0x05, 0x15, 0x35, 0x45, 0x06), f"{code:#x} at {pc}"
        if code == 0x20:
            assert pc + 1 < len(insns) and k % 4 == 0 and k < 64  # inside struct seccomp_data
        elif code == 0x05:
            assert pc + 1 + k < len(insns)
        elif code != 0x06:
            assert pc + 1 + max(jt, jf) < len(insns)
    assert insns[-1][0] == 0x06  # jumps only go forward: every path reaches a return


@pytest.mark.parametrize("arch", ARCHES)
def test_any_call_is_decided_in_a_few_instructions(arch: str) -> None:
    program = seccomp.program(arch)
    numbers = [*seccomp.SYSCALLS[arch].values(), 472, 1000, 0x3FFFFFFF]
    steps = [run_filter(program, arch, nr, 0xFFFFFFFF)[1] for nr in numbers]
    assert max(steps) <= 20, max(steps)  # a list of every call would take hundreds


def test_the_program_is_the_same_each_time_and_its_memfd_holds_it() -> None:
    program = seccomp.program("x86_64")
    assert program == seccomp.program("x86_64")
    fd = seccomp.memfd(program)
    try:
        assert os.read(fd, len(program) + 1) == program
    finally:
        os.close(fd)


def test_only_x86_64_and_aarch64_are_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, expected in [("x86_64", True), ("aarch64", True), ("riscv64", False)]:
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert seccomp.supported() is expected
    with pytest.raises(ValueError, match="riscv64"):
        seccomp.program("riscv64")


@pytest.mark.parametrize("arch", ARCHES)
def test_describe_gives_the_count_the_default_and_the_argument_rules(arch: str) -> None:
    text = seccomp.describe(arch)
    count = len(seccomp.ALLOWED & set(seccomp.SYSCALLS[arch]))
    assert text.startswith(f"allowlist of {count} system calls ({arch})")
    for part in ("EPERM", "ENOSYS", "personality", "AF_UNIX", "socketpair", "CLONE_NEW"):
        assert part in text


# -- the tables -----------------------------------------------------------------------------------
def test_every_named_call_is_in_a_table_and_numbers_are_unique() -> None:
    x86_64, aarch64 = seccomp.SYSCALLS["x86_64"], seccomp.SYSCALLS["aarch64"]
    assert seccomp.ALLOWED <= set(x86_64) | set(aarch64)
    assert not seccomp.ALLOWED & {*seccomp.ARGUMENT_RULES, *seccomp.UNAVAILABLE, *MUST_REFUSE}
    for name in [*seccomp.ARGUMENT_RULES, *seccomp.UNAVAILABLE, *MUST_REFUSE]:
        assert name in x86_64 or name in aarch64, name
    for table in (x86_64, aarch64):
        assert len(set(table.values())) == len(table)
    assert {n: x86_64[n] for n in x86_64 if x86_64[n] >= 424} == {
        n: aarch64[n] for n in aarch64 if aarch64[n] >= 424
    }
    assert (x86_64["clone"], aarch64["clone"], x86_64["getppid"], aarch64["getppid"]) == (
        56,
        220,
        110,
        173,
    )


def test_the_x86_64_table_agrees_with_the_installed_kernel_headers() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.exists():
        pytest.skip(f"no {header}")
    defined = dict(re.findall(r"#define __NR_(\w+) (\d+)", header.read_text()))
    assert defined, header
    table = seccomp.SYSCALLS["x86_64"]
    assert {name: int(nr) for name, nr in defined.items()} == {
        name: table[name] for name in defined
    }


# -- the decisions --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
def test_allowed_calls_run_and_every_other_known_call_fails_with_eperm(arch: str) -> None:
    program = seccomp.program(arch)
    for name, nr in seccomp.SYSCALLS[arch].items():
        if name in seccomp.ARGUMENT_RULES:
            continue
        expected = (
            ENOSYS if name in seccomp.UNAVAILABLE else ALLOW if name in seccomp.ALLOWED else EPERM
        )
        assert run_filter(program, arch, nr)[0] == expected, name


@pytest.mark.parametrize("arch", ARCHES)
def test_what_dockers_profile_refuses_is_refused(arch: str) -> None:
    refused = [name for name in MUST_REFUSE if name in seccomp.SYSCALLS[arch]]
    assert len(refused) > 55
    for name in refused:
        assert decide(arch, name, 0xFFFFFFFF, 0) == EPERM, name


@pytest.mark.parametrize("arch", ARCHES)
def test_io_uring_and_clone3_are_unavailable_so_libraries_fall_back(arch: str) -> None:
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"):
        assert decide(arch, name) == ENOSYS, name


@pytest.mark.parametrize("arch", ARCHES)
def test_numbers_no_table_names_look_unimplemented(arch: str) -> None:
    newest = max(seccomp.SYSCALLS[arch].values())
    for nr in (newest + 1, 1000, 0x3FFFFFFF, 0x7FFFFFFF, -1):
        assert decide(arch, nr) == ENOSYS, nr
    if arch == "aarch64":
        assert decide(arch, 244) == ENOSYS  # the generic table's gap


def test_other_abis_are_refused() -> None:
    program = seccomp.program("x86_64")
    read = seccomp.SYSCALLS["x86_64"]["read"]
    assert run_filter(program, "x86_64", 0x40000000 | read)[0] == ENOSYS  # x32
    assert run_filter(program, "x86_64", 3, audit_arch=AUDIT_ARCH_I386)[0] == ENOSYS  # int 0x80
    assert run_filter(seccomp.program("aarch64"), "aarch64", 63, audit_arch=0x40000028)[0] == (
        ENOSYS  # 32-bit ARM
    )
    assert run_filter(program, "x86_64", read, audit_arch=AUDIT_ARCH["aarch64"])[0] == ENOSYS


@pytest.mark.parametrize("arch", ARCHES)
def test_personality_allows_only_dockers_five_personas(arch: str) -> None:
    for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide(arch, "personality", persona) == ALLOW, hex(persona)
    for persona in (0x0040000, 0x0040008, 0x0400000, 0x1, 0xFFFFFFFE):  # ADDR_NO_RANDOMIZE, ...
        assert decide(arch, "personality", persona) == EPERM, hex(persona)


@pytest.mark.parametrize("arch", ARCHES)
def test_socket_families_outside_the_allowlist_are_not_supported(arch: str) -> None:
    for family in (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK):
        assert decide(arch, "socket", family, 1) == ALLOW, family
    for family in (0, AF_PACKET, AF_RDS, AF_TIPC, AF_BLUETOOTH, AF_ALG, AF_VSOCK, AF_XDP, 46):
        assert decide(arch, "socket", family, 1) == EAFNOSUPPORT, family
    assert decide(arch, "socket", (1 << 32) | AF_VSOCK) == EAFNOSUPPORT  # the kernel reads an int
    assert decide(arch, "socketpair", AF_UNIX, 1) == ALLOW
    for family in (AF_INET, AF_VSOCK, AF_ALG, AF_TIPC):
        assert decide(arch, "socketpair", family, 1) == EAFNOSUPPORT, family


@pytest.mark.parametrize("arch", ARCHES)
def test_clone_makes_threads_and_processes_but_no_namespaces(arch: str) -> None:
    for flags in (CLONE_THREAD_FLAGS, CLONE_FORK_FLAGS, CLONE_VFORK_FLAGS, 17):
        assert decide(arch, "clone", flags) == ALLOW, hex(flags)
    for name, flag in CLONE_NEW.items():
        assert decide(arch, "clone", flag | CLONE_FORK_FLAGS) == EPERM, name
    assert decide(arch, "unshare", CLONE_NEW["CLONE_NEWUSER"]) == EPERM


# -- jobs in the sandbox --------------------------------------------------------------------------
@pytest.fixture
async def sandboxed(make_api: Any) -> Any:
    if UNUSABLE is not None:
        pytest.skip(f"no sandbox here: {UNUSABLE}")
    if not seccomp.supported():
        pytest.skip(f"no seccomp filter for {platform.machine()}")
    return await make_api(sandbox="bwrap")


REFUSALS = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
nr = json.loads(NUMBERS)
def errno_of(name, *args):
    ctypes.set_errno(0)
    number = nr[name] if isinstance(name, str) else name
    result = libc.syscall(number, *[ctypes.c_ulong(arg) for arg in args])
    if result == 0 and name == "clone":
        os._exit(0)  # a child: the filter let it through
    return ctypes.get_errno() if result == -1 else f"returned {result}"
pidfd = libc.syscall(nr["pidfd_open"], 1, 0)
pair = (ctypes.c_int * 2)()
print(json.dumps({
    "pidfd_open(1)": "ok" if pidfd >= 0 else ctypes.get_errno(),
    "pidfd_getfd": errno_of("pidfd_getfd", pidfd, 0, 0),
    "process_madvise": errno_of("process_madvise", pidfd, 0, 0, 0, 0),
    "personality(query)": errno_of("personality", 0xFFFFFFFF),
    "personality(ADDR_NO_RANDOMIZE)": errno_of("personality", 0x0040000),
    "socket(AF_VSOCK)": errno_of("socket", 40, 1, 0),
    "socket(AF_ALG)": errno_of("socket", 38, 5, 0),
    "socketpair(AF_VSOCK)": errno_of("socketpair", 40, 1, 0, ctypes.addressof(pair)),
    "open_tree_attr": errno_of("open_tree_attr", 0, 0, 0, 0, 0),
    "made-up 1000": errno_of(1000),
    "unshare(CLONE_NEWUSER)": errno_of("unshare", 0x10000000),
    "clone(CLONE_NEWUSER)": errno_of("clone", 0x10000000 | 17, 0, 0, 0, 0),
    "mbind": errno_of("mbind", 0, 4096, 0, 0, 0, 0),
    "io_uring_setup": errno_of("io_uring_setup", 1, 0),
    "clone3": errno_of("clone3", 0, 0),
    "ptrace": errno_of("ptrace", 0, 0, 0, 0),
}))
"""


async def test_a_job_is_refused_what_dockers_profile_refuses(sandboxed: Any) -> None:
    numbers = json.dumps(seccomp.SYSCALLS[platform.machine()])
    body = await sandboxed.run(REFUSALS.replace("NUMBERS", repr(numbers)))
    assert body["status"] == "completed", body["stderr"]
    assert json.loads(body["stdout"]) == {
        "pidfd_open(1)": "ok",
        "pidfd_getfd": errno.EPERM,
        "process_madvise": errno.EPERM,
        "personality(query)": "returned 0",
        "personality(ADDR_NO_RANDOMIZE)": errno.EPERM,
        "socket(AF_VSOCK)": errno.EAFNOSUPPORT,
        "socket(AF_ALG)": errno.EAFNOSUPPORT,
        "socketpair(AF_VSOCK)": errno.EAFNOSUPPORT,
        "open_tree_attr": errno.EPERM,
        "made-up 1000": errno.ENOSYS,
        "unshare(CLONE_NEWUSER)": errno.EPERM,
        "clone(CLONE_NEWUSER)": errno.EPERM,
        "mbind": errno.EPERM,
        "io_uring_setup": errno.ENOSYS,
        "clone3": errno.ENOSYS,
        "ptrace": errno.EPERM,
    }


PYTHON_AT_WORK = """
import asyncio, concurrent.futures, mmap, multiprocessing, socket, sqlite3, ssl, subprocess
import threading

done = []
thread = threading.Thread(target=lambda: done.append(sum(range(10))))
thread.start(); thread.join()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    print("threads", done, list(pool.map(abs, [-1, -2, -3])))
print("subprocess", subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip())
for method in ("fork", "spawn"):
    with multiprocessing.get_context(method).Pool(2) as pool:
        print("multiprocessing", method, pool.map(abs, [-1, -2]))
queue = multiprocessing.Queue()
child = multiprocessing.Process(target=queue.put, args=(42,)); child.start()
print("queue", queue.get()); child.join()
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); accepted, _ = server.accept()
client.sendall(b"ping"); print("tcp", accepted.recv(4).decode())
left, right = socket.socketpair(); left.sendall(b"x"); print("socketpair", right.recv(1).decode())
async def main():
    process = await asyncio.create_subprocess_exec("true")
    print("asyncio", await asyncio.to_thread(abs, -5), await process.wait())
asyncio.run(main())
print("ssl", ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED)
db = sqlite3.connect(":memory:")
db.execute("create table t(x)"); db.execute("insert into t values (1)")
print("sqlite3", db.execute("select x from t").fetchall())
area = mmap.mmap(-1, 1 << 24); area[0] = 1; area.madvise(mmap.MADV_DONTNEED)
print("mmap", len(area) >> 20)
print("interfaces", [name for _, name in socket.if_nameindex()])
"""


async def test_python_threads_processes_sockets_and_asyncio_work_under_the_filter(
    sandboxed: Any,
) -> None:
    body = await sandboxed.run(PYTHON_AT_WORK, timeout=30)
    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"].splitlines() == [
        "threads [45] [1, 2, 3]",
        "subprocess hi",
        "multiprocessing fork [1, 2]",
        "multiprocessing spawn [1, 2]",
        "queue 42",
        "tcp ping",
        "socketpair x",
        "asyncio 5 0",
        "ssl True",
        "sqlite3 [(1,)]",
        "mmap 16",
        "interfaces ['lo']",
    ]


async def test_bash_pipelines_and_subshells_work_under_the_filter(sandboxed: Any) -> None:
    body = await sandboxed.run("echo a | cat; (echo b); echo $(echo c); sleep 0.1 & wait", "shell")
    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"] == "a\nb\nc\n"


async def test_node_with_a_worker_thread_works_under_the_filter(sandboxed: Any) -> None:
    code = (
        "const { Worker } = require('worker_threads');\n"
        "console.log(1);\n"
        "new Worker(\"require('worker_threads').parentPort.postMessage(2)\", { eval: true })\n"
        "  .on('message', (m) => console.log('worker', m));\n"
        "require('child_process').exec('echo child', (e, out) => console.log(out.trim()));\n"
    )
    body = await sandboxed.run(code, "javascript", timeout=30)
    assert body["status"] == "completed", body["stderr"]
    assert sorted(body["stdout"].splitlines()) == ["1", "child", "worker 2"]
