"""A seccomp filter for jobs (bwrap ``--seccomp``): an allowlist after Docker's default profile.

A classic BPF program, assembled here without a library; bwrap installs it just before it executes
the job. The calls in ``ALLOWED`` run. Four more run only with the arguments ``ARGUMENT_RULES``
allows: ``personality`` with Docker's five personas (so no ADDR_NO_RANDOMIZE), ``socket`` and
``socketpair`` with the address families a job needs, ``clone`` without a namespace flag.
Everything else is refused:

* a call the kernel tables below name (``SYSCALLS``) fails with EPERM, as in Docker's profile;
* ``io_uring_*`` and ``clone3`` (``UNAVAILABLE``), and any number the tables do not name (a call
  added to the kernel after them, or a made-up one), fail with ENOSYS: what an older kernel
  answers, so libraries fall back (glibc from ``clone3`` to ``clone``, libuv from io_uring to
  threads; runc answers calls newer than a profile the same way) and a new call stays refused
  until someone adds it here;
* another architecture's calls (``int 0x80`` on x86_64) and the x32 ABI fail with ENOSYS.

Where this differs from Docker's profile. Calls Docker allows only with a capability are left out:
jobs have none. ``ptrace`` and ``process_vm_readv/writev``, which Docker allows on kernels from 4.8,
are refused: jobs need no debugger, and these reach into other processes of the job's uid, the
sandbox's pid 1 among them. Refused too: ``adjtimex`` and ``clock_adjtime`` (clock setters; reading
the clock needs neither), ``name_to_handle_at`` (half of the handle pair whose other half,
``open_by_handle_at``, is the container escape; nothing a job runs calls it) and ``modify_ldt``
(16-bit code only, a long record of kernel bugs). Socket families are an allowlist (Docker only
refuses AF_ALG and AF_VSOCK): a family the kernel gains next year, and every module-loaded one it
has (AF_RDS, AF_TIPC, AF_CAN, ...), answers EAFNOSUPPORT as on a kernel without it; ``socketpair``
takes AF_UNIX only.

Argument rules compare the low 32 bits of an argument, which is all the kernel reads of these
(``int``/``unsigned int`` parameters; ``clone`` keeps only the low 32 bits of its flags). Both
architectures are little-endian and pass ``clone``'s flags first. The filter checks the
architecture, then finds the call in a binary search over the number line (seven comparisons for
any number, allowed or not; 10 to 12 instructions for an allowed call), then applies the call's
argument rule if it has one. The kernel (from 5.11) remembers which calls a filter allows
whatever their arguments and skips the filter for them, so an argument rule makes its call run the
filter every time: keep them few.

Why one module of ~1,000 lines: most of it is the allowlist itself, a table of system calls
and argument rules per architecture that must be read (and reviewed) as one.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALLOWED",
    "ARGUMENT_RULES",
    "MAX_INSTRUCTIONS",
    "SYSCALLS",
    "UNAVAILABLE",
    "NoBits",
    "OneOf",
    "describe",
    "memfd",
    "program",
    "supported",
]

# -- the kernel's numbers -------------------------------------------------------------------------
# From 424 on, every architecture numbers new calls alike.
_COMMON: dict[str, int] = {
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "clone3": 435,
    "close_range": 436,
    "openat2": 437,
    "pidfd_getfd": 438,
    "faccessat2": 439,
    "process_madvise": 440,
    "epoll_pwait2": 441,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
    "memfd_secret": 447,
    "process_mrelease": 448,
    "futex_waitv": 449,
    "set_mempolicy_home_node": 450,
    "cachestat": 451,
    "fchmodat2": 452,
    "map_shadow_stack": 453,
    "futex_wake": 454,
    "futex_wait": 455,
    "futex_requeue": 456,
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
    "file_getattr": 468,
    "file_setattr": 469,
    "listns": 470,
    "rseq_slice_yield": 471,
}
# x86_64 (arch/x86/entry/syscalls/syscall_64.tbl, the 64-bit ABI)
_X86_64: dict[str, int] = {
    "read": 0,
    "write": 1,
    "open": 2,
    "close": 3,
    "stat": 4,
    "fstat": 5,
    "lstat": 6,
    "poll": 7,
    "lseek": 8,
    "mmap": 9,
    "mprotect": 10,
    "munmap": 11,
    "brk": 12,
    "rt_sigaction": 13,
    "rt_sigprocmask": 14,
    "rt_sigreturn": 15,
    "ioctl": 16,
    "pread64": 17,
    "pwrite64": 18,
    "readv": 19,
    "writev": 20,
    "access": 21,
    "pipe": 22,
    "select": 23,
    "sched_yield": 24,
    "mremap": 25,
    "msync": 26,
    "mincore": 27,
    "madvise": 28,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "dup": 32,
    "dup2": 33,
    "pause": 34,
    "nanosleep": 35,
    "getitimer": 36,
    "alarm": 37,
    "setitimer": 38,
    "getpid": 39,
    "sendfile": 40,
    "socket": 41,
    "connect": 42,
    "accept": 43,
    "sendto": 44,
    "recvfrom": 45,
    "sendmsg": 46,
    "recvmsg": 47,
    "shutdown": 48,
    "bind": 49,
    "listen": 50,
    "getsockname": 51,
    "getpeername": 52,
    "socketpair": 53,
    "setsockopt": 54,
    "getsockopt": 55,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "exit": 60,
    "wait4": 61,
    "kill": 62,
    "uname": 63,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "fcntl": 72,
    "flock": 73,
    "fsync": 74,
    "fdatasync": 75,
    "truncate": 76,
    "ftruncate": 77,
    "getdents": 78,
    "getcwd": 79,
    "chdir": 80,
    "fchdir": 81,
    "rename": 82,
    "mkdir": 83,
    "rmdir": 84,
    "creat": 85,
    "link": 86,
    "unlink": 87,
    "symlink": 88,
    "readlink": 89,
    "chmod": 90,
    "fchmod": 91,
    "chown": 92,
    "fchown": 93,
    "lchown": 94,
    "umask": 95,
    "gettimeofday": 96,
    "getrlimit": 97,
    "getrusage": 98,
    "sysinfo": 99,
    "times": 100,
    "ptrace": 101,
    "getuid": 102,
    "syslog": 103,
    "getgid": 104,
    "setuid": 105,
    "setgid": 106,
    "geteuid": 107,
    "getegid": 108,
    "setpgid": 109,
    "getppid": 110,
    "getpgrp": 111,
    "setsid": 112,
    "setreuid": 113,
    "setregid": 114,
    "getgroups": 115,
    "setgroups": 116,
    "setresuid": 117,
    "getresuid": 118,
    "setresgid": 119,
    "getresgid": 120,
    "getpgid": 121,
    "setfsuid": 122,
    "setfsgid": 123,
    "getsid": 124,
    "capget": 125,
    "capset": 126,
    "rt_sigpending": 127,
    "rt_sigtimedwait": 128,
    "rt_sigqueueinfo": 129,
    "rt_sigsuspend": 130,
    "sigaltstack": 131,
    "utime": 132,
    "mknod": 133,
    "uselib": 134,
    "personality": 135,
    "ustat": 136,
    "statfs": 137,
    "fstatfs": 138,
    "sysfs": 139,
    "getpriority": 140,
    "setpriority": 141,
    "sched_setparam": 142,
    "sched_getparam": 143,
    "sched_setscheduler": 144,
    "sched_getscheduler": 145,
    "sched_get_priority_max": 146,
    "sched_get_priority_min": 147,
    "sched_rr_get_interval": 148,
    "mlock": 149,
    "munlock": 150,
    "mlockall": 151,
    "munlockall": 152,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "_sysctl": 156,
    "prctl": 157,
    "arch_prctl": 158,
    "adjtimex": 159,
    "setrlimit": 160,
    "chroot": 161,
    "sync": 162,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "getpmsg": 181,
    "putpmsg": 182,
    "afs_syscall": 183,
    "tuxcall": 184,
    "security": 185,
    "gettid": 186,
    "readahead": 187,
    "setxattr": 188,
    "lsetxattr": 189,
    "fsetxattr": 190,
    "getxattr": 191,
    "lgetxattr": 192,
    "fgetxattr": 193,
    "listxattr": 194,
    "llistxattr": 195,
    "flistxattr": 196,
    "removexattr": 197,
    "lremovexattr": 198,
    "fremovexattr": 199,
    "tkill": 200,
    "time": 201,
    "futex": 202,
    "sched_setaffinity": 203,
    "sched_getaffinity": 204,
    "set_thread_area": 205,
    "io_setup": 206,
    "io_destroy": 207,
    "io_getevents": 208,
    "io_submit": 209,
    "io_cancel": 210,
    "get_thread_area": 211,
    "lookup_dcookie": 212,
    "epoll_create": 213,
    "epoll_ctl_old": 214,
    "epoll_wait_old": 215,
    "remap_file_pages": 216,
    "getdents64": 217,
    "set_tid_address": 218,
    "restart_syscall": 219,
    "semtimedop": 220,
    "fadvise64": 221,
    "timer_create": 222,
    "timer_settime": 223,
    "timer_gettime": 224,
    "timer_getoverrun": 225,
    "timer_delete": 226,
    "clock_settime": 227,
    "clock_gettime": 228,
    "clock_getres": 229,
    "clock_nanosleep": 230,
    "exit_group": 231,
    "epoll_wait": 232,
    "epoll_ctl": 233,
    "tgkill": 234,
    "utimes": 235,
    "vserver": 236,
    "mbind": 237,
    "set_mempolicy": 238,
    "get_mempolicy": 239,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    "kexec_load": 246,
    "waitid": 247,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "ioprio_set": 251,
    "ioprio_get": 252,
    "inotify_init": 253,
    "inotify_add_watch": 254,
    "inotify_rm_watch": 255,
    "migrate_pages": 256,
    "openat": 257,
    "mkdirat": 258,
    "mknodat": 259,
    "fchownat": 260,
    "futimesat": 261,
    "newfstatat": 262,
    "unlinkat": 263,
    "renameat": 264,
    "linkat": 265,
    "symlinkat": 266,
    "readlinkat": 267,
    "fchmodat": 268,
    "faccessat": 269,
    "pselect6": 270,
    "ppoll": 271,
    "unshare": 272,
    "set_robust_list": 273,
    "get_robust_list": 274,
    "splice": 275,
    "tee": 276,
    "sync_file_range": 277,
    "vmsplice": 278,
    "move_pages": 279,
    "utimensat": 280,
    "epoll_pwait": 281,
    "signalfd": 282,
    "timerfd_create": 283,
    "eventfd": 284,
    "fallocate": 285,
    "timerfd_settime": 286,
    "timerfd_gettime": 287,
    "accept4": 288,
    "signalfd4": 289,
    "eventfd2": 290,
    "epoll_create1": 291,
    "dup3": 292,
    "pipe2": 293,
    "inotify_init1": 294,
    "preadv": 295,
    "pwritev": 296,
    "rt_tgsigqueueinfo": 297,
    "perf_event_open": 298,
    "recvmmsg": 299,
    "fanotify_init": 300,
    "fanotify_mark": 301,
    "prlimit64": 302,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "syncfs": 306,
    "sendmmsg": 307,
    "setns": 308,
    "getcpu": 309,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "sched_setattr": 314,
    "sched_getattr": 315,
    "renameat2": 316,
    "seccomp": 317,
    "getrandom": 318,
    "memfd_create": 319,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
    "membarrier": 324,
    "mlock2": 325,
    "copy_file_range": 326,
    "preadv2": 327,
    "pwritev2": 328,
    "pkey_mprotect": 329,
    "pkey_alloc": 330,
    "pkey_free": 331,
    "statx": 332,
    "io_pgetevents": 333,
    "rseq": 334,
    "uretprobe": 335,
    "uprobe": 336,
}
# aarch64 (the generic table, include/uapi/asm-generic/unistd.h)
_AARCH64: dict[str, int] = {
    "io_setup": 0,
    "io_destroy": 1,
    "io_submit": 2,
    "io_cancel": 3,
    "io_getevents": 4,
    "setxattr": 5,
    "lsetxattr": 6,
    "fsetxattr": 7,
    "getxattr": 8,
    "lgetxattr": 9,
    "fgetxattr": 10,
    "listxattr": 11,
    "llistxattr": 12,
    "flistxattr": 13,
    "removexattr": 14,
    "lremovexattr": 15,
    "fremovexattr": 16,
    "getcwd": 17,
    "lookup_dcookie": 18,
    "eventfd2": 19,
    "epoll_create1": 20,
    "epoll_ctl": 21,
    "epoll_pwait": 22,
    "dup": 23,
    "dup3": 24,
    "fcntl": 25,
    "inotify_init1": 26,
    "inotify_add_watch": 27,
    "inotify_rm_watch": 28,
    "ioctl": 29,
    "ioprio_set": 30,
    "ioprio_get": 31,
    "flock": 32,
    "mknodat": 33,
    "mkdirat": 34,
    "unlinkat": 35,
    "symlinkat": 36,
    "linkat": 37,
    "renameat": 38,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "nfsservctl": 42,
    "statfs": 43,
    "fstatfs": 44,
    "truncate": 45,
    "ftruncate": 46,
    "fallocate": 47,
    "faccessat": 48,
    "chdir": 49,
    "fchdir": 50,
    "chroot": 51,
    "fchmod": 52,
    "fchmodat": 53,
    "fchownat": 54,
    "fchown": 55,
    "openat": 56,
    "close": 57,
    "vhangup": 58,
    "pipe2": 59,
    "quotactl": 60,
    "getdents64": 61,
    "lseek": 62,
    "read": 63,
    "write": 64,
    "readv": 65,
    "writev": 66,
    "pread64": 67,
    "pwrite64": 68,
    "preadv": 69,
    "pwritev": 70,
    "sendfile": 71,
    "pselect6": 72,
    "ppoll": 73,
    "signalfd4": 74,
    "vmsplice": 75,
    "splice": 76,
    "tee": 77,
    "readlinkat": 78,
    "newfstatat": 79,
    "fstat": 80,
    "sync": 81,
    "fsync": 82,
    "fdatasync": 83,
    "sync_file_range": 84,
    "timerfd_create": 85,
    "timerfd_settime": 86,
    "timerfd_gettime": 87,
    "utimensat": 88,
    "acct": 89,
    "capget": 90,
    "capset": 91,
    "personality": 92,
    "exit": 93,
    "exit_group": 94,
    "waitid": 95,
    "set_tid_address": 96,
    "unshare": 97,
    "futex": 98,
    "set_robust_list": 99,
    "get_robust_list": 100,
    "nanosleep": 101,
    "getitimer": 102,
    "setitimer": 103,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "timer_create": 107,
    "timer_gettime": 108,
    "timer_getoverrun": 109,
    "timer_settime": 110,
    "timer_delete": 111,
    "clock_settime": 112,
    "clock_gettime": 113,
    "clock_getres": 114,
    "clock_nanosleep": 115,
    "syslog": 116,
    "ptrace": 117,
    "sched_setparam": 118,
    "sched_setscheduler": 119,
    "sched_getscheduler": 120,
    "sched_getparam": 121,
    "sched_setaffinity": 122,
    "sched_getaffinity": 123,
    "sched_yield": 124,
    "sched_get_priority_max": 125,
    "sched_get_priority_min": 126,
    "sched_rr_get_interval": 127,
    "restart_syscall": 128,
    "kill": 129,
    "tkill": 130,
    "tgkill": 131,
    "sigaltstack": 132,
    "rt_sigsuspend": 133,
    "rt_sigaction": 134,
    "rt_sigprocmask": 135,
    "rt_sigpending": 136,
    "rt_sigtimedwait": 137,
    "rt_sigqueueinfo": 138,
    "rt_sigreturn": 139,
    "setpriority": 140,
    "getpriority": 141,
    "reboot": 142,
    "setregid": 143,
    "setgid": 144,
    "setreuid": 145,
    "setuid": 146,
    "setresuid": 147,
    "getresuid": 148,
    "setresgid": 149,
    "getresgid": 150,
    "setfsuid": 151,
    "setfsgid": 152,
    "times": 153,
    "setpgid": 154,
    "getpgid": 155,
    "getsid": 156,
    "setsid": 157,
    "getgroups": 158,
    "setgroups": 159,
    "uname": 160,
    "sethostname": 161,
    "setdomainname": 162,
    "getrlimit": 163,
    "setrlimit": 164,
    "getrusage": 165,
    "umask": 166,
    "prctl": 167,
    "getcpu": 168,
    "gettimeofday": 169,
    "settimeofday": 170,
    "adjtimex": 171,
    "getpid": 172,
    "getppid": 173,
    "getuid": 174,
    "geteuid": 175,
    "getgid": 176,
    "getegid": 177,
    "gettid": 178,
    "sysinfo": 179,
    "mq_open": 180,
    "mq_unlink": 181,
    "mq_timedsend": 182,
    "mq_timedreceive": 183,
    "mq_notify": 184,
    "mq_getsetattr": 185,
    "msgget": 186,
    "msgctl": 187,
    "msgrcv": 188,
    "msgsnd": 189,
    "semget": 190,
    "semctl": 191,
    "semtimedop": 192,
    "semop": 193,
    "shmget": 194,
    "shmctl": 195,
    "shmat": 196,
    "shmdt": 197,
    "socket": 198,
    "socketpair": 199,
    "bind": 200,
    "listen": 201,
    "accept": 202,
    "connect": 203,
    "getsockname": 204,
    "getpeername": 205,
    "sendto": 206,
    "recvfrom": 207,
    "setsockopt": 208,
    "getsockopt": 209,
    "shutdown": 210,
    "sendmsg": 211,
    "recvmsg": 212,
    "readahead": 213,
    "brk": 214,
    "munmap": 215,
    "mremap": 216,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,
    "execve": 221,
    "mmap": 222,
    "fadvise64": 223,
    "swapon": 224,
    "swapoff": 225,
    "mprotect": 226,
    "msync": 227,
    "mlock": 228,
    "munlock": 229,
    "mlockall": 230,
    "munlockall": 231,
    "mincore": 232,
    "madvise": 233,
    "remap_file_pages": 234,
    "mbind": 235,
    "get_mempolicy": 236,
    "set_mempolicy": 237,
    "migrate_pages": 238,
    "move_pages": 239,
    "rt_tgsigqueueinfo": 240,
    "perf_event_open": 241,
    "accept4": 242,
    "recvmmsg": 243,
    "wait4": 260,
    "prlimit64": 261,
    "fanotify_init": 262,
    "fanotify_mark": 263,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "syncfs": 267,
    "setns": 268,
    "sendmmsg": 269,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "sched_setattr": 274,
    "sched_getattr": 275,
    "renameat2": 276,
    "seccomp": 277,
    "getrandom": 278,
    "memfd_create": 279,
    "bpf": 280,
    "execveat": 281,
    "userfaultfd": 282,
    "membarrier": 283,
    "mlock2": 284,
    "copy_file_range": 285,
    "preadv2": 286,
    "pwritev2": 287,
    "pkey_mprotect": 288,
    "pkey_alloc": 289,
    "pkey_free": 290,
    "statx": 291,
    "io_pgetevents": 292,
    "rseq": 293,
    "kexec_file_load": 294,
}
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {**_X86_64, **_COMMON},
    "aarch64": {**_AARCH64, **_COMMON},
}

# -- the policy -----------------------------------------------------------------------------------
# Docker's default profile (moby profiles/seccomp/default.json): the calls it allows unconditionally
# that exist on x86_64 or aarch64, plus arch_prctl (allowed there for amd64), less the differences
# the module docstring gives. A name missing from one architecture's table is skipped there.
ALLOWED: frozenset[str] = frozenset(
    """
    accept accept4 access alarm arch_prctl bind brk cachestat capget capset chdir chmod chown
    clock_getres clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup
    dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
    epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2
    fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchownat fcntl
    fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate
    futex futex_requeue futex_wait futex_waitv futex_wake futimesat get_robust_list get_thread_area
    getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername
    getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit getrusage
    getsid getsockname getsockopt gettid gettimeofday getuid getxattr getxattrat inotify_add_watch
    inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents
    io_setup io_submit ioctl ioprio_get ioprio_set kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lgetxattr link linkat listen listmount listxattr listxattrat
    llistxattr lremovexattr lseek lsetxattr lstat madvise map_shadow_stack membarrier memfd_create
    memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect
    mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap mseal msgctl
    msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat open openat openat2
    pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
    prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2 read
    readahead readlink readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo
    sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr sched_getparam
    sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg
    sendmsg sendto set_robust_list set_thread_area set_tid_address setfsgid setfsuid setgid
    setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid setrlimit setsid
    setsockopt setuid setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 splice stat statfs statmount statx symlink symlinkat sync sync_file_range syncfs
    sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_settime
    timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink unlinkat
    uretprobe utime utimensat utimes vfork vmsplice wait4 waitid write writev
    """.split()
)

# ENOSYS, "not here": callers fall back to what they used before (and clone3's flags, which sit in
# memory a filter cannot read, never matter).
UNAVAILABLE: frozenset[str] = frozenset(
    {"io_uring_setup", "io_uring_enter", "io_uring_register", "clone3"}
)


@dataclass(frozen=True)
class OneOf:
    """Allowed when argument ``index`` is one of ``values``; otherwise the call fails with
    ``refusal``."""

    index: int
    values: tuple[int, ...]
    refusal: int = errno.EPERM

    def __str__(self) -> str:
        return ", ".join(getattr(value, "name", hex(value)) for value in self.values)


@dataclass(frozen=True)
class NoBits:
    """Allowed when argument ``index`` has none of the bits of ``mask`` (called ``label``) set;
    otherwise the call fails with ``refusal``."""

    index: int
    mask: int
    label: str
    refusal: int = errno.EPERM

    def __str__(self) -> str:
        return f"no {self.label}"


ArgumentRule = OneOf | NoBits

_PERSONAS = (
    0x0,  # PER_LINUX
    0x8,  # PER_LINUX32
    0x20000,  # UNAME26
    0x20008,  # UNAME26 | PER_LINUX32
    0xFFFFFFFF,  # a query: changes nothing
)
_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
_CLONE_NEW_ANY = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
ARGUMENT_RULES: dict[str, ArgumentRule] = {
    "personality": OneOf(0, _PERSONAS),
    "socket": OneOf(0, _FAMILIES, errno.EAFNOSUPPORT),  # getifaddrs and getaddrinfo use netlink
    "socketpair": OneOf(0, (socket.AF_UNIX,), errno.EAFNOSUPPORT),
    # clone cannot ask for CLONE_NEWTIME (0x80 is in its exit-signal byte); clone3 and unshare can
    "clone": NoBits(0, _CLONE_NEW_ANY, "CLONE_NEW* flag"),
}

# -- the program ----------------------------------------------------------------------------------
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS: the kernel refuses a longer filter
_RET_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_RET_ERRNO = 0x00050000  # SECCOMP_RET_ERRNO | errno
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JA = 0x05  # BPF_JMP | BPF_JA
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_MAX_SHORT_JUMP = 255  # a conditional jump's offsets are one byte each
_OFFSET_NR = 0  # struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_OFFSET_ARCH = 4
_OFFSET_ARGS = 16

Action = int | ArgumentRule  # a SECCOMP_RET_* value, or a rule deciding on the arguments


def supported() -> bool:
    return platform.machine() in SYSCALLS and sys.byteorder == "little"


def program(arch: str | None = None) -> bytes:
    """The filter as ``struct sock_filter[]``, the form bwrap reads from its ``--seccomp`` fd."""
    arch = arch or platform.machine()
    if arch not in SYSCALLS:
        raise ValueError(f"no seccomp filter for {arch}")
    enosys = _insn(_RET_K, 0, 0, _errno_return(errno.ENOSYS))
    body = [
        _insn(_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        enosys,  # another architecture's calls
        _insn(_LD_W_ABS, 0, 0, _OFFSET_NR),
    ]
    if arch == "x86_64":
        body += [_insn(_JGE_K, 0, 1, _X32_SYSCALL_BIT), enosys]
    body += _search(_number_line(arch))
    if len(body) > MAX_INSTRUCTIONS:
        raise ValueError(f"the seccomp filter has {len(body)} instructions")
    return b"".join(body)


def describe(arch: str | None = None) -> str:
    """One line for ``GET /sandbox``."""
    arch = arch or platform.machine()
    allowed = sum(1 for name in SYSCALLS[arch] if _action(name) == _RET_ALLOW)
    rules = ", ".join(f"{name} ({rule})" for name, rule in ARGUMENT_RULES.items())
    return (
        f"allowlist of {allowed} system calls ({arch}) modelled on Docker's default profile, "
        f"plus {rules}; other calls EPERM; io_uring, clone3 and unknown numbers ENOSYS"
    )


def memfd(content: bytes, name: str = "seccomp") -> int:
    """A fresh file descriptor holding ``content`` from its start, for one bwrap (it reads it
    to the end): the filter program, or a job's code (``--ro-bind-data``)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _action(name: str) -> Action:
    """What the filter does with call ``name``."""
    if name in UNAVAILABLE:
        return _errno_return(errno.ENOSYS)
    if name in ARGUMENT_RULES:
        return ARGUMENT_RULES[name]
    return _RET_ALLOW if name in ALLOWED else _errno_return(errno.EPERM)


def _number_line(arch: str) -> list[tuple[int, Action]]:
    """``(first number, action)`` for consecutive ranges covering every 32-bit call number;
    numbers the table does not name are ENOSYS."""
    unknown = _errno_return(errno.ENOSYS)
    ranges: list[tuple[int, Action]] = []
    following = 0
    for number, name in sorted((nr, name) for name, nr in SYSCALLS[arch].items()):
        if number > following:
            ranges.append((following, unknown))
        ranges.append((number, _action(name)))
        following = number + 1
    ranges.append((following, unknown))
    merged = [ranges[0]]
    for first, what in ranges[1:]:
        if what != merged[-1][1]:
            merged.append((first, what))
    return merged


def _search(ranges: Sequence[tuple[int, Action]]) -> list[bytes]:
    """A binary search over ``ranges`` (the call number in the accumulator): each comparison
    halves them; one range left, its action."""
    if len(ranges) == 1:
        return _act(ranges[0][1])
    middle = len(ranges) // 2
    below, above = _search(ranges[:middle]), _search(ranges[middle:])
    boundary = ranges[middle][0]
    if len(below) <= _MAX_SHORT_JUMP:
        return [_insn(_JGE_K, len(below), 0, boundary), *below, *above]
    return [_insn(_JGE_K, 0, 1, boundary), _insn(_JA, 0, 0, len(below)), *below, *above]


def _act(what: Action) -> list[bytes]:
    if isinstance(what, int):
        return [_insn(_RET_K, 0, 0, what)]
    load = _insn(_LD_W_ABS, 0, 0, _OFFSET_ARGS + 8 * what.index)  # the low half: little-endian
    refuse = _insn(_RET_K, 0, 0, _errno_return(what.refusal))
    allow = _insn(_RET_K, 0, 0, _RET_ALLOW)
    if isinstance(what, NoBits):
        return [load, _insn(_JSET_K, 0, 1, what.mask), refuse, allow]
    count = len(what.values)
    checks = [_insn(_JEQ_K, count - i, 0, value) for i, value in enumerate(what.values)]
    return [load, *checks, refuse, allow]


def _errno_return(code: int) -> int:
    return _RET_ERRNO | code


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)
