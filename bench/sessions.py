"""Sessions through a real server in the default sandbox: start, a cell's round trip, idle memory.

    .venv/bin/python bench/sessions.py [-n 20] [--calls 200] [-k 8] [--no-packages]
                                       [--uv-cache DIR] [--out bench/results/sessions.json]

Run as root, with bubblewrap, with the registry (PyPI) reachable. Starts our server as
bench/run.py does (SQLite, ``/usr/bin/python3``, every other ``INTERPRETER_*`` variable of the
caller dropped), in the default sandbox (bubblewrap), with ``INTERPRETER_MAX_SESSIONS`` and
``INTERPRETER_MAX_SESSIONS_PER_KEY`` raised to K + 2, then measures in turn:

1. **start**: ``POST /sessions`` (no packages) until it answers 201 with the kernel ready. The
   first one builds the environment (uv installs ipykernel): its time is reported alone, as
   "first, with install"; then N more with the environment cached, each deleted before the next;
2. **round trip**: in one session (``x = 1`` run first), ``x + 1`` through
   ``POST /sessions/{id}/execute`` (``wait`` left to its default), the answer checked (``2`` as
   the execute_result's text/plain), against the baseline of the same run on the same server: a
   plain job, ``POST /execute?wait=30`` with ``print(1)`` (stdout checked); and against the same
   kernel reached directly, past the server: a bare ZeroMQ client on its sockets (the
   connection file under ``/run/interpreter/kernels``, which root can read) sends the same
   ``execute_request`` and reads until the reply and the idle status, so that the server's share
   of the round trip is the difference of the medians; 20 warm-up calls each, then ``--calls``
   each in blocks of 10 whose order rotates;
3. **idle memory**: K sessions, ``x = 1`` run in each, then 2 s idle; for each kernel, the
   memory of its cgroup (``session-<id>-<n>`` under the server's jobs parent in the memory
   controller: ``memory.usage_in_bytes`` on cgroup v1, ``memory.current`` on v2, and the
   ``memory.stat`` lines that say what it holds) and the RSS, PSS and USS of its processes (the
   cgroup's processes, each checked to be a descendant of the server); the server's own RSS
   before and after; means over the K kernels and the sessions per GiB they imply;
4. unless ``--no-packages``: the same with ``packages=["pandas", "matplotlib"]`` and
   ``import pandas, matplotlib.pyplot`` run in each session (the first session's start, which
   installs them, reported alone).

uv's cache starts empty (the first session of each kind downloads its wheels) unless
``--uv-cache`` names one to keep between runs. Prints a table and writes every figure as JSON,
with the machine, the load average before and after and the commit. The server is stopped at the
end, also when the run fails or is sent SIGTERM; a process left under it is killed and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import zmq
from jupyter_client.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    BenchError,
    Server,
    _json,
    client,
    expect,
    load_at_start,
    machine_info,
    ms,
    run_footer,
    start_ours,
    summary,
    wait_healthy,
)
from warm_pool import stop_tree  # noqa: E402

from interpreter.config import Settings  # noqa: E402
from interpreter.sandbox.cgroups import CgroupV1, detect  # noqa: E402
from interpreter.sessions.manager import kernels_dir  # noqa: E402

STATE_DIR = Path("/var/tmp/interpreter-bench-sessions")  # each run's data (not a tmpfs)
PACKAGES = ["pandas", "matplotlib"]
PACKAGES_CODE = "import pandas, matplotlib.pyplot"
PLAIN_CODE = "x = 1"
CELL_CODE = "x + 1"
JOB_CODE = "print(1)"
JOB_WAIT_S = 30
WARMUP = 20
BLOCK = 10
IDLE_S = 2.0
START_TIMEOUT_S = 120.0  # the sandbox's checks at start
INSTALL_TIMEOUT_S = 900.0  # a first session: uv resolves, downloads and installs
GIB = 2**30


# ---------------------------------------------------------------- sessions


def create_session(c: httpx.Client, url: str, packages: list[str]) -> tuple[float, dict[str, Any]]:
    """``POST /sessions``: the seconds until it answered 201, and the session."""
    t0 = time.perf_counter()
    response = c.post(f"{url}/sessions", json={"language": "python", "packages": packages})
    elapsed = time.perf_counter() - t0
    if response.status_code != 201:
        raise BenchError(f"POST /sessions: HTTP {response.status_code}: {response.text[:500]}")
    session: dict[str, Any] = response.json()
    expect(session.get("status") == "idle", f"a new session is not idle: {session}")
    return elapsed, session


def delete_session(c: httpx.Client, url: str, session_id: str) -> float:
    t0 = time.perf_counter()
    body = _json(c.delete(f"{url}/sessions/{session_id}"), "DELETE /sessions/{id}")
    elapsed = time.perf_counter() - t0
    expect(body.get("status") == "terminated", f"DELETE /sessions/{session_id}: {body}")
    return elapsed


def cell(c: httpx.Client, url: str, session_id: str, code: str) -> tuple[float, dict[str, Any]]:
    """``POST /sessions/{id}/execute`` (``wait`` left to its default): seconds and result."""
    t0 = time.perf_counter()
    response = c.post(f"{url}/sessions/{session_id}/execute", json={"code": code})
    elapsed = time.perf_counter() - t0
    result = _json(response, "POST /sessions/{id}/execute")
    expect(
        result.get("status") == "completed",
        f"session {session_id}: {code!r} did not complete: {str(result)[:600]}",
    )
    return elapsed, result


def plus_one(c: httpx.Client, url: str, session_id: str) -> float:
    elapsed, result = cell(c, url, session_id, CELL_CODE)
    texts = [r.get("data", {}).get("text/plain") for r in result.get("results") or []]
    expect(texts == ["2"], f"x + 1 answered {str(result)[:600]}")
    return elapsed


def plain_job(c: httpx.Client, url: str) -> float:
    t0 = time.perf_counter()
    response = c.post(
        f"{url}/execute", params={"wait": JOB_WAIT_S}, json={"code": JOB_CODE, "language": "python"}
    )
    elapsed = time.perf_counter() - t0
    result = _json(response, "POST /execute?wait=")
    expect(
        result.get("status") == "completed" and result.get("stdout") == "1\n",
        f"print(1) answered {str(result)[:600]}",
    )
    return elapsed


class RawKernel:
    """A bare ZeroMQ client on the session's own kernel, past the server: the same
    ``execute_request`` as the server sends, read until the reply and the idle status. What is
    left of a cell's round trip when HTTP, the job and the server's own client are taken away."""

    def __init__(self, connection: Path) -> None:
        info = json.loads(connection.read_text())
        base = connection.parent / "k"  # the sockets as the host sees them (the kernel: /.kernel)
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self.context = zmq.Context()
        self.shell = self.context.socket(zmq.DEALER)
        self.shell.connect(f"ipc://{base}-{info['shell_port']}")
        self.iopub = self.context.socket(zmq.SUB)
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.connect(f"ipc://{base}-{info['iopub_port']}")
        self.poller = zmq.Poller()
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)
        time.sleep(0.5)  # the subscription reaches the kernel

    def cell(self, code: str) -> float:
        t0 = time.perf_counter()
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        content |= {"allow_stdin": False, "stop_on_error": True}
        msg_id = self.session.send(self.shell, "execute_request", content)["header"]["msg_id"]
        idle, reply, value = False, None, None
        while not (idle and reply is not None):
            ready = dict(self.poller.poll(10_000))
            expect(bool(ready), f"the kernel did not answer {code!r} within 10 s")
            for sock in ready:
                _, msg = self.session.recv(sock, mode=0)
                if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if sock is self.shell:
                    reply = msg["content"]
                elif msg["msg_type"] == "execute_result":
                    value = msg["content"]["data"].get("text/plain")
                elif msg["msg_type"] == "status":
                    idle = msg["content"]["execution_state"] == "idle"
        elapsed = time.perf_counter() - t0
        expect(reply.get("status") == "ok" and value == "2", f"x + 1 answered {reply}, {value}")
        return elapsed

    def close(self) -> None:
        self.context.destroy(linger=0)


def kernel_connection(server: Server) -> Path:
    """The connection file of the server's one session (a root can read the sealed directory)."""
    data_dir = server.log.parent / f"{server.name}-data"  # start_ours's
    run_dir = Settings.model_fields["sandbox_run_dir"].default  # the server runs with it
    found = list(kernels_dir(data_dir, run_dir).glob("*/connection.json"))
    expect(len(found) == 1, f"one kernel's connection file expected, found {found}")
    return found[0]


# ---------------------------------------------------------------- phases


def start_phase(server: Server, n: int) -> dict[str, Any]:
    """The first session alone (it builds the environment), then N with it cached."""
    with client(INSTALL_TIMEOUT_S) as c:
        first_s, session = create_session(c, server.url, [])
        environment = session.get("environment") or {}
        delete_session(c, server.url, session["session_id"])
        starts: list[float] = []
        deletes: list[float] = []
        for _ in range(n):
            elapsed, session = create_session(c, server.url, [])
            starts.append(elapsed)
            expect(
                (session.get("environment") or {}).get("id") == environment.get("id"),
                f"a session got another environment: {session.get('environment')}",
            )
            deletes.append(delete_session(c, server.url, session["session_id"]))
            server.check_alive()
    return {
        "first_with_install_ms": round(first_s * 1000, 1),
        "environment": environment,
        "n": n,
        "start_cached_ms": summary(ms(starts)),
        "delete_ms": summary(ms(deletes)),
    }


def round_trip_phase(server: Server, calls: int) -> dict[str, Any]:
    """``x + 1`` in a session against a plain ``print(1)`` job and against the same kernel
    reached directly, in alternating blocks."""
    times: dict[str, list[float]] = {"session": [], "job": [], "kernel": []}
    with client() as c:
        _, session = create_session(c, server.url, [])
        session_id = session["session_id"]
        cell(c, server.url, session_id, PLAIN_CODE)
        raw = RawKernel(kernel_connection(server))
        try:
            run: dict[str, Callable[[], float]] = {
                "session": lambda: plus_one(c, server.url, session_id),
                "job": lambda: plain_job(c, server.url),
                "kernel": lambda: raw.cell(CELL_CODE),
            }
            for _ in range(WARMUP):
                for fn in run.values():
                    fn()
            for b, start in enumerate(range(0, calls, BLOCK)):
                order = ["session", "job", "kernel"][b % 3 :] + ["session", "job", "kernel"][
                    : b % 3
                ]
                for name in order:
                    times[name] += [run[name]() for _ in range(min(BLOCK, calls - start))]
                server.check_alive()
            info = _json(c.get(f"{server.url}/sessions/{session_id}"), "GET /sessions/{id}")
        finally:
            raw.close()
            delete_session(c, server.url, session_id)
    expect(info.get("executions") == 1 + WARMUP + calls, f"executions counted: {info}")
    session_ms, job_ms = summary(ms(times["session"])), summary(ms(times["job"]))
    kernel_ms = summary(ms(times["kernel"]))
    return {
        "calls": calls,
        "warmup": WARMUP,
        "session_x_plus_1_ms": session_ms,
        "kernel_x_plus_1_ms": kernel_ms,
        "job_print_1_ms": job_ms,
        "ratio_medians": round(float(session_ms["median"]) / float(job_ms["median"]), 3),
        "server_share_ms": round(float(session_ms["median"]) - float(kernel_ms["median"]), 2),
    }


def memory_parent(server: Server) -> Path:
    """The jobs' parent directory in the memory controller, as the server set it up."""
    driver = detect(proc=Path(f"/proc/{server.proc.pid}"))
    parent = driver.parents["memory"] if isinstance(driver, CgroupV1) else driver.parent
    if not parent.is_dir():  # v2: the server may have moved itself into <own>/interpreter-server
        parent = parent.parent.parent / parent.name
    expect(parent.is_dir(), f"no jobs' cgroup parent at {parent}")
    return parent


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kernel_memory(
    parent: Path, session_id: str, descendants: dict[int, psutil.Process]
) -> dict[str, Any]:
    """One kernel's cgroup memory and its processes' RSS, PSS and USS."""
    found = sorted(parent.glob(f"session-{session_id}-*"))
    expect(len(found) == 1, f"session {session_id}: cgroups {found} under {parent}")
    cgroup = found[0]
    usage = read_int(cgroup / "memory.usage_in_bytes")
    if usage is None:
        usage = read_int(cgroup / "memory.current")
    expect(usage is not None, f"no memory usage in {cgroup}")
    stat: dict[str, int] = {}
    for line in (cgroup / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("total_rss", "total_cache", "total_mapped_file", "total_shmem", "anon", "file"):
            stat[key] = int(value)
    kmem = read_int(cgroup / "memory.kmem.usage_in_bytes")
    pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    totals = {"rss": 0, "pss": 0, "uss": 0}
    names: list[str] = []
    for pid in pids:
        proc = descendants.get(pid)
        expect(proc is not None, f"pid {pid} of {cgroup.name} is not under the server")
        assert proc is not None
        try:
            info = proc.memory_full_info()
            names.append(proc.name())
        except psutil.NoSuchProcess as exc:
            raise BenchError(f"pid {pid} of {cgroup.name} went away") from exc
        for key in totals:
            totals[key] += getattr(info, key)
    return {
        "cgroup": cgroup.name,
        "cgroup_usage_bytes": usage,
        "memory_stat": stat,
        "kmem_usage_bytes": kmem,
        "processes": names,
        **{f"{key}_bytes": value for key, value in totals.items()},
    }


def mib(value: float) -> float:
    return round(value / 2**20, 1)


def memory_phase(
    server: Server, parent: Path, k: int, packages: list[str], code: str
) -> dict[str, Any]:
    """K sessions with ``packages``, ``code`` run in each, then idle: each kernel's memory."""
    root = psutil.Process(server.proc.pid)
    server_rss_before = root.memory_info().rss
    ids: list[str] = []
    starts: list[float] = []
    cells: list[float] = []
    out: dict[str, Any] = {"k": k, "packages": packages, "code": code}
    with client(INSTALL_TIMEOUT_S) as c:
        try:
            for i in range(k):
                elapsed, session = create_session(c, server.url, packages)
                ids.append(session["session_id"])
                if i == 0:
                    out["environment"] = session.get("environment")
                    if packages:  # the first one installs them: alone, as in the start phase
                        out["first_with_install_ms"] = round(elapsed * 1000, 1)
                        continue
                starts.append(elapsed)
            for session_id in ids:
                cells.append(cell(c, server.url, session_id, code)[0])
            server.check_alive()
            time.sleep(IDLE_S)
            descendants = {p.pid: p for p in root.children(recursive=True)}
            kernels = [kernel_memory(parent, s, descendants) for s in ids]
            server_rss_after = root.memory_info().rss
        finally:
            for session_id in ids:
                delete_session(c, server.url, session_id)
    usage = [kk["cgroup_usage_bytes"] for kk in kernels]
    rss = [kk["rss_bytes"] for kk in kernels]
    pss = [kk["pss_bytes"] for kk in kernels]
    stat_keys = sorted({key for kk in kernels for key in kk["memory_stat"]})
    out |= {
        "start_cached_ms": summary(ms(starts)),
        "first_cell_ms": summary(ms(cells)),
        "kernels": kernels,
        "cgroup_usage_mib": {
            "mean": mib(statistics.mean(usage)),
            "min": mib(min(usage)),
            "max": mib(max(usage)),
        },
        "memory_stat_mean_mib": {
            key: mib(statistics.mean(kk["memory_stat"].get(key, 0) for kk in kernels))
            for key in stat_keys
        },
        "rss_mib": {"mean": mib(statistics.mean(rss)), "min": mib(min(rss)), "max": mib(max(rss))},
        "pss_mib_mean": mib(statistics.mean(pss)),
        "uss_mib_mean": mib(statistics.mean(kk["uss_bytes"] for kk in kernels)),
        "server_rss_mib": {"before": mib(server_rss_before), "with_k": mib(server_rss_after)},
        "server_rss_per_session_mib": mib((server_rss_after - server_rss_before) / k),
        "sessions_per_gib_by_cgroup": round(GIB / statistics.mean(usage), 1),
        "sessions_per_gib_by_rss": round(GIB / statistics.mean(rss), 1),
        "sessions_per_gib_by_pss": round(GIB / statistics.mean(pss), 1),
    }
    return out


# ---------------------------------------------------------------- report


def line(label: str, value: str) -> str:
    return f"{label:40} {value}"


def table(report: dict[str, Any]) -> str:
    start, trip = report["start"], report["round_trip"]
    s, j, c = trip["session_x_plus_1_ms"], trip["job_print_1_ms"], start["start_cached_ms"]
    k = trip["kernel_x_plus_1_ms"]
    lines = [
        line(
            "session start, first, with install", f"{start['first_with_install_ms'] / 1000:.1f} s"
        ),
        line(
            "session start, cached, p50 / p90",
            f"{c['median']:.1f} / {c['p90']:.1f} ms (N={c['n']})",
        ),
        line("DELETE /sessions/{id}, p50", f"{start['delete_ms']['median']:.1f} ms"),
        line(
            "x + 1 in a session, p50 / p90", f"{s['median']:.2f} / {s['p90']:.2f} ms (N={s['n']})"
        ),
        line(
            "print(1) job, ?wait=30, p50 / p90",
            f"{j['median']:.2f} / {j['p90']:.2f} ms (N={j['n']})",
        ),
        line("  ratio of the medians", f"{trip['ratio_medians']:.3f}"),
        line(
            "x + 1, the kernel alone, p50 / p90",
            f"{k['median']:.2f} / {k['p90']:.2f} ms (N={k['n']})",
        ),
        line("  the server's share (p50 difference)", f"{trip['server_share_ms']:.2f} ms"),
    ]
    for key, label in (("memory", PLAIN_CODE), ("memory_packages", PACKAGES_CODE)):
        mem = report.get(key)
        if not mem:
            continue
        lines.append(f"-- {mem['k']} idle sessions, packages {mem['packages']}, ran {label!r}")
        if "first_with_install_ms" in mem:
            first = mem["first_with_install_ms"] / 1000
            lines.append(line("session start, first, with install", f"{first:.1f} s"))
        if mem["start_cached_ms"].get("n"):
            lines.append(
                line("session start, cached, p50", f"{mem['start_cached_ms']['median']:.1f} ms")
            )
        u, r, rss = mem["cgroup_usage_mib"], mem["rss_mib"], mem["server_rss_mib"]
        stat = ", ".join(f"{k} {v:g}" for k, v in mem["memory_stat_mean_mib"].items())
        lines += [
            line("that cell, p50", f"{mem['first_cell_ms']['median']:.1f} ms"),
            line(
                "cgroup memory per kernel, mean", f"{u['mean']:.1f} MiB ({u['min']:g}-{u['max']:g})"
            ),
            line("  memory.stat, mean MiB", stat),
            line("RSS of its processes, mean", f"{r['mean']:.1f} MiB ({r['min']:g}-{r['max']:g})"),
            line(
                "PSS / USS of its processes, mean",
                f"{mem['pss_mib_mean']:.1f} / {mem['uss_mib_mean']:.1f} MiB",
            ),
            line(
                "server RSS per session",
                f"{mem['server_rss_per_session_mib']:.1f} MiB "
                f"({rss['before']:g} -> {rss['with_k']:g})",
            ),
            line(
                "sessions per GiB, cgroup / RSS / PSS",
                f"{mem['sessions_per_gib_by_cgroup']:g} / {mem['sessions_per_gib_by_rss']:g} / "
                f"{mem['sessions_per_gib_by_pss']:g}",
            ),
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def measure(args: argparse.Namespace, report: dict[str, Any], workdir: Path) -> None:
    if args.uv_cache is not None:  # the environments hard-link from it: same filesystem
        args.uv_cache.mkdir(mode=0o755, parents=True, exist_ok=True)
        packages = workdir / "sessions-data" / "packages"
        packages.mkdir(parents=True)
        (packages / "cache").symlink_to(args.uv_cache.resolve(), target_is_directory=True)
    cap = str(args.k + 2)
    server = start_ours(
        workdir,
        "sessions",
        INTERPRETER_SANDBOX="bwrap",
        INTERPRETER_MAX_SESSIONS=cap,
        INTERPRETER_MAX_SESSIONS_PER_KEY=cap,
    )
    try:
        measure_on(args, report, server)
    except httpx.TransportError as exc:  # the server went away: how, and its last words
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=5)
        kept = STATE_DIR / "failed-server.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log, kept)
        raise BenchError(
            f"{type(exc).__name__}: {exc}; server exit status {server.proc.returncode}, "
            f"its log kept in {kept}: {server.log_tail()}"
        ) from exc
    finally:
        report["left_running_after_stop"] = stop_tree(server)


def measure_on(args: argparse.Namespace, report: dict[str, Any], server: Server) -> None:
    wait_healthy(server, START_TIMEOUT_S)
    parent = memory_parent(server)
    report["memory_cgroup_parent"] = str(parent)
    t0 = time.perf_counter()

    def step(label: str) -> None:
        print(f" ({time.perf_counter() - t0:.1f} s)\n... {label}", end="", flush=True)

    print(f"... session start, first then N={args.n}", end="", flush=True)
    report["start"] = start_phase(server, args.n)
    step(f"x + 1 against print(1), {args.calls} calls each")
    report["round_trip"] = round_trip_phase(server, args.calls)
    step(f"{args.k} idle sessions")
    report["memory"] = memory_phase(server, parent, args.k, [], PLAIN_CODE)
    if not args.no_packages:
        step(f"{args.k} idle sessions with {', '.join(PACKAGES)}")
        report["memory_packages"] = memory_phase(server, parent, args.k, PACKAGES, PACKAGES_CODE)
    print(f" ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="session starts, cached (20)")
    parser.add_argument("--calls", type=int, default=200, help="x + 1 calls, and jobs (200)")
    parser.add_argument("-k", type=int, default=8, help="idle sessions measured (8)")
    parser.add_argument("--no-packages", action="store_true", help="skip pandas + matplotlib")
    parser.add_argument("--uv-cache", type=Path, default=None, help="uv cache kept between runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/sessions.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("warning: not root: the server's bubblewrap sandbox will not start", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the server is stopped

    report: dict[str, Any] = {
        "machine": machine_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loadavg_1m_at_start": load_at_start(),
    }
    t_start = time.perf_counter()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix="run-", dir=STATE_DIR, ignore_cleanup_errors=True
    ) as tmp:
        try:
            measure(args, report, Path(tmp))
        except BenchError as exc:
            print(f"\nbench failed: {exc}", file=sys.stderr)
            return 1
    report["total_run_s"] = round(time.perf_counter() - t_start, 1)
    report["loadavg_1m_at_end"] = os.getloadavg()[0]
    print()
    print(table(report))
    print(run_footer(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
