"""A seccomp filter for jobs (bwrap ``--seccomp``): defence in depth where it is cheap.

A classic BPF program, built here without a library: system calls a job has no business making
fail with EPERM (ptrace and reading other processes' memory, kernel keyrings, BPF, perf events,
mounts, namespaces, modules, clocks, reboot, ...); ``io_uring_*`` and ``clone3`` fail with ENOSYS,
so that libraries fall back to what they used before (and ``clone3``'s flags, which a filter
cannot read, never matter). Any other architecture's calls (``int 0x80`` from a 64-bit process)
and the x32 ABI are refused too. Only x86_64 is built in; elsewhere jobs run without the filter
(``GET /sandbox`` says so).
"""

from __future__ import annotations

import errno
import os
import platform
import struct

__all__ = ["BLOCKED", "program", "supported"]

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl)
BLOCKED: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "vhangup": 153,
    "pivot_root": 155,
    "_sysctl": 156,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "quotactl_fd": 443,
}
UNAVAILABLE: dict[str, int] = {  # ENOSYS: "not here", so callers fall back
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
}

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_OFFSET_NR = 0  # struct seccomp_data: int nr; __u32 arch; ...
_OFFSET_ARCH = 4


def supported() -> bool:
    return platform.machine() == "x86_64"


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes:
    """The filter as ``struct sock_filter[]``, the form bwrap reads from its ``--seccomp`` fd."""
    eperm = [nr for nr in sorted(BLOCKED.values())]
    enosys = [nr for nr in sorted(UNAVAILABLE.values())]
    checks = len(eperm) + len(enosys)
    # Layout: 0 load arch, 1 arch check, 2 load nr, 3 x32 check, checks..., allow, eperm, enosys
    body = [
        _insn(_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        _insn(_LD_W_ABS, 0, 0, _OFFSET_NR),
        _insn(_JGE_K, checks + 2, 0, _X32_SYSCALL_BIT),  # to the ENOSYS return
    ]
    for index, nr in enumerate(eperm):
        body.append(_insn(_JEQ_K, checks - index, 0, nr))  # to the EPERM return
    for index, nr in enumerate(enosys):
        body.append(_insn(_JEQ_K, len(enosys) - index + 1, 0, nr))  # to the ENOSYS return
    body += [
        _insn(_RET_K, 0, 0, _RET_ALLOW),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
    ]
    return b"".join(body)


def memfd(filter_program: bytes) -> int:
    """A fresh file descriptor holding the program, for one bwrap (it reads it to the end)."""
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, filter_program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
