"""Benchmark our server against a ~40-line FastAPI + subprocess baseline, same machine, same run.

    .venv/bin/python bench/run.py [--quick] [--out bench/results/latest.json]

Starts both servers as real processes on free loopback ports with the same job interpreter, then
measures a trivial job's latency (ours: the spec's polling protocol; baseline: one request),
throughput with 8 concurrent clients, a job printing 10 MB, and each server's idle RSS. Prints a
table and writes the figures as JSON. See bench/README.md for how to read them.

One file of ~780 lines on purpose: a benchmark runs as ``python bench/run.py``
from a checkout with nothing imported from the tests; its phases read top to bottom in the
order they run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
JOB_PYTHON = "/usr/bin/python3"
TRIVIAL_CODE = "print(1)"
LARGE_CODE = "import sys; sys.stdout.write('x'*10_000_000)"
LARGE_BYTES = 10_000_000
FINAL = {"completed", "failed", "timeout", "cancelled"}
POLL_SLEEP_S = 0.001
# --protocol poll: the spec's protocol, a status request every POLL_SLEEP_S until final.
# --protocol wait: the same requests, the status one long-polled with ?wait= (one request).
STATUS_PARAMS: dict[str, str] = {}
CLIENTS = 8
WARMUP = 20
BLOCK = 10
LARGE_REPEATS = 5
IDLE_S = 2.0
ROUND_S = 2.5
TARGET_OVERHEAD_MS = 3.0
TARGET_THROUGHPUT_RATIO = 0.5


class BenchError(Exception):
    """A server misbehaved or a job's answer was wrong."""


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} server exited ({self.proc.returncode}): {self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def run_footer(report: dict[str, Any]) -> str:
    """The closing lines of a benchmark that ran at ``report["machine"]``: how long, where, on
    which commit, and the load before and after."""
    machine = report["machine"]
    changes = " + changes in interpreter/" if machine["interpreter_has_uncommitted_changes"] else ""
    return (
        f"\ntotal {report['total_run_s']} s on {machine['cpu_model']}, {machine['cores']} cores, "
        f"kernel {machine['kernel']}, commit {machine['git_commit']}{changes}\n"
        f"load average 1 min: {report['loadavg_1m_at_start']:.2f} at start, "
        f"{report['loadavg_1m_at_end']:.2f} at end"
    )


def load_at_start() -> float:
    """The 1-minute load average, with a warning when something else is using the CPU."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f} before the run: "
            "something else is using the CPU; absolute figures will be noisy"
        )
    return load


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    """The harness's environment without proxies or stray INTERPRETER_* settings."""
    drop = ("INTERPRETER_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}


def spawn(name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Server(name, proc, f"http://127.0.0.1:{port}", log)


def start_ours(workdir: Path, name: str = "ours", **extra: str) -> Server:
    """Our server, unsandboxed unless ``extra`` settings say otherwise."""
    port = free_port()
    data_dir = workdir / f"{name}-data"
    data_dir.mkdir(exist_ok=True)
    env = base_env() | {
        "INTERPRETER_PORT": str(port),
        "INTERPRETER_HOST": "127.0.0.1",
        "INTERPRETER_DATA_DIR": str(data_dir),
        "INTERPRETER_LOG_LEVEL": "WARNING",
        "INTERPRETER_MAX_JOBS": str(CLIENTS),
        "INTERPRETER_PYTHON_COMMAND": JOB_PYTHON,
        # Thousands of jobs a minute from one address: the check stays on the path, never refuses
        "INTERPRETER_RATE_LIMIT": "1000000/minute",
        # Against an unsandboxed baseline: the sandbox's own cost is bench/sandbox.py's figure
        "INTERPRETER_SANDBOX": "none",
        **extra,
    }
    return spawn(name, [sys.executable, "-m", "interpreter.server"], env, port, workdir)


def start_baseline(workdir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), str(port), JOB_PYTHON]
    return spawn("baseline", argv, base_env(), port, workdir)


def wait_healthy(server: Server, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                if client.get(f"{server.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise BenchError(f"{server.name} server not healthy after {timeout_s} s: {server.log_tail()}")


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


# ---------------------------------------------------------------- one job, both protocols


@dataclass
class OursTiming:
    total_s: float
    post_s: float
    poll_s: list[float]
    results_s: float
    status: dict[str, Any]
    detected_at: float  # wall clock when the final status arrived
    result: dict[str, Any] = field(repr=False)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


def ours_job(client: httpx.Client, url: str, code: str, deadline_s: float) -> OursTiming:
    """POST /execute, poll GET /jobs/{id}/status until final, GET /results/{id}."""
    t0 = time.perf_counter()
    job_id = _json(
        client.post(f"{url}/execute", json={"code": code, "language": "python"}), "POST /execute"
    )["job_id"]
    t1 = time.perf_counter()
    polls: list[float] = []
    limit = t0 + deadline_s
    while True:
        tp = time.perf_counter()
        status = _json(
            client.get(f"{url}/jobs/{job_id}/status", params=STATUS_PARAMS), "GET status"
        )
        polls.append(time.perf_counter() - tp)
        if status["status"] in FINAL:
            break
        if time.perf_counter() > limit:
            raise BenchError(f"job {job_id} not final after {deadline_s} s: {status}")
        time.sleep(POLL_SLEEP_S)
    detected_at = time.time()
    t2 = time.perf_counter()
    result = _json(client.get(f"{url}/results/{job_id}"), "GET /results")
    t3 = time.perf_counter()
    return OursTiming(t3 - t0, t1 - t0, polls, t3 - t2, status, detected_at, result)


def baseline_job(client: httpx.Client, url: str, code: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    result = _json(
        client.post(f"{url}/execute", json={"code": code, "language": "python"}),
        "baseline POST /execute",
    )
    return time.perf_counter() - t0, result


async def ours_job_async(
    client: httpx.AsyncClient, url: str, code: str, deadline_s: float
) -> tuple[str, int]:
    """The same protocol as ``ours_job``; returns stdout and the number of HTTP requests made."""
    body = {"code": code, "language": "python"}
    job_id = _json(await client.post(f"{url}/execute", json=body), "POST /execute")["job_id"]
    limit = time.perf_counter() + deadline_s
    requests = 2
    while True:
        status = _json(
            await client.get(f"{url}/jobs/{job_id}/status", params=STATUS_PARAMS), "GET status"
        )
        requests += 1
        if status["status"] in FINAL:
            break
        if time.perf_counter() > limit:
            raise BenchError(f"job {job_id} not final after {deadline_s} s")
        await asyncio.sleep(POLL_SLEEP_S)
    result = _json(await client.get(f"{url}/results/{job_id}"), "GET /results")
    return str(result["stdout"]), requests


async def baseline_job_async(client: httpx.AsyncClient, url: str, code: str) -> str:
    body = {"code": code, "language": "python"}
    return str(_json(await client.post(f"{url}/execute", json=body), "baseline POST")["stdout"])


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# ---------------------------------------------------------------- statistics


def ms(values: list[float]) -> list[float]:
    return [v * 1000.0 for v in values]


def summary(values_ms: list[float]) -> dict[str, float | int]:
    """Median, p90, p99, min, max and count of a list of milliseconds."""
    if not values_ms:
        return {"n": 0}
    ordered = sorted(values_ms)

    def pct(p: float) -> float:
        pos = (len(ordered) - 1) * p
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p90": round(pct(0.90), 3),
        "p99": round(pct(0.99), 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
    }


def parse_ts(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- phases


def client(timeout_s: float = 60.0) -> httpx.Client:
    limits = httpx.Limits(max_keepalive_connections=4, keepalive_expiry=60.0)
    return httpx.Client(trust_env=False, timeout=timeout_s, limits=limits)


def run_trivial_ours(c: httpx.Client, url: str) -> OursTiming:
    timing = ours_job(c, url, TRIVIAL_CODE, deadline_s=30.0)
    expect(
        timing.result.get("status") == "completed" and timing.result.get("stdout") == "1\n",
        f"ours: wrong result for print(1): {timing.result}",
    )
    return timing


def run_trivial_baseline(c: httpx.Client, url: str) -> float:
    elapsed, result = baseline_job(c, url, TRIVIAL_CODE)
    expect(
        result.get("exit_code") == 0 and result.get("stdout") == "1\n",
        f"baseline: wrong result for print(1): {result}",
    )
    return elapsed


def floor_spawn(repeats: int) -> dict[str, Any]:
    """Spawning the job interpreter directly from the harness: the floor under both servers."""
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [JOB_PYTHON, "-c", TRIVIAL_CODE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=30,
        )
        times.append(time.perf_counter() - t0)
    return summary(ms(times))


def latency_phase(ours: Server, base: Server, n: int) -> dict[str, Any]:
    ours_times: list[float] = []
    base_times: list[float] = []
    posts: list[float] = []
    polls_all: list[float] = []
    polls_last: list[float] = []
    poll_counts: list[float] = []
    results: list[float] = []
    queue_ms: list[float] = []
    run_ms: list[float] = []
    exec_ms: list[float] = []
    detect_lag_ms: list[float] = []
    with client() as oc, client() as bc:
        for _ in range(WARMUP):
            run_trivial_ours(oc, ours.url)
            run_trivial_baseline(bc, base.url)
        blocks = max(1, n // BLOCK)
        for b in range(blocks):
            order: list[str] = ["ours", "base"] if b % 2 == 0 else ["base", "ours"]
            for who in order:
                for _ in range(BLOCK):
                    if who == "base":
                        base_times.append(run_trivial_baseline(bc, base.url))
                        continue
                    t = run_trivial_ours(oc, ours.url)
                    ours_times.append(t.total_s)
                    posts.append(t.post_s)
                    polls_all.extend(t.poll_s)
                    polls_last.append(t.poll_s[-1])
                    poll_counts.append(len(t.poll_s))
                    results.append(t.results_s)
                    s = t.status
                    created, started, completed = (
                        parse_ts(s.get(k)) for k in ("created_at", "started_at", "completed_at")
                    )
                    if created and started and completed:
                        queue_ms.append((started - created) * 1000)
                        run_ms.append((completed - started) * 1000)
                        detect_lag_ms.append((t.detected_at - completed) * 1000)
                    if s.get("execution_time_ms") is not None:
                        exec_ms.append(float(s["execution_time_ms"]))
            ours.check_alive()
            base.check_alive()
    o, bl = summary(ms(ours_times)), summary(ms(base_times))
    overhead = round(float(o["median"]) - float(bl["median"]), 3)
    return {
        "n": n,
        "warmup": WARMUP,
        "ours_ms": o,
        "baseline_ms": bl,
        "overhead_median_ms": overhead,
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "meets_target": overhead <= TARGET_OVERHEAD_MS,
        "ours_breakdown": {
            "post_execute_ms": summary(ms(posts)),
            "status_poll_ms_all": summary(ms(polls_all)),
            "status_poll_ms_final": summary(ms(polls_last)),
            "polls_per_job": summary(poll_counts),
            "get_results_ms": summary(ms(results)),
            "server_queue_ms (started_at - created_at)": summary(queue_ms),
            "server_run_ms (completed_at - started_at)": summary(run_ms),
            "server_execution_time_ms": summary(exec_ms),
            "detect_lag_ms (final status seen - completed_at)": summary(detect_lag_ms),
        },
    }


async def _throughput_once(
    url: str, is_ours: bool, duration_s: float
) -> tuple[int, float, list[float], int]:
    deadline = time.perf_counter() + duration_s
    latencies: list[float] = []
    requests = 0

    async def worker() -> int:
        nonlocal requests
        done = 0
        limits = httpx.Limits(max_keepalive_connections=2, keepalive_expiry=60.0)
        async with httpx.AsyncClient(trust_env=False, timeout=60.0, limits=limits) as ac:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if is_ours:
                    out, made = await ours_job_async(ac, url, TRIVIAL_CODE, deadline_s=30.0)
                else:
                    out, made = await baseline_job_async(ac, url, TRIVIAL_CODE), 1
                requests += made
                expect(out == "1\n", f"wrong stdout under load: {out[:100]!r}")
                latencies.append(time.perf_counter() - t0)
                done += 1
        return done

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return sum(counts), time.perf_counter() - t0, latencies, requests


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def throughput_phase(ours: Server, base: Server, duration_s: float) -> dict[str, Any]:
    """Rounds of ROUND_S per server, alternating (ours, base, base, ours, ...), so that both share
    the machine's noise; ``duration_s`` in all per server."""
    totals: dict[str, dict[str, Any]] = {
        name: {
            "jobs": 0,
            "elapsed_s": 0.0,
            "lat": [],
            "cpu_s": 0.0,
            "rounds": [],
            "req": 0,
            "client_cpu_s": 0.0,
        }
        for name in ("ours", "baseline")
    }
    rounds = max(2, round(duration_s / ROUND_S))
    for rnd in range(rounds):
        order = [("ours", ours), ("baseline", base)]
        if rnd % 2:
            order.reverse()
        for name, server in order:
            cpu0, client0 = cpu_s(server.proc.pid), cpu_s(os.getpid())
            jobs, elapsed, lat, req = asyncio.run(
                _throughput_once(server.url, name == "ours", duration_s / rounds)
            )
            server.check_alive()
            t = totals[name]
            t["cpu_s"] += cpu_s(server.proc.pid) - cpu0
            t["client_cpu_s"] += cpu_s(os.getpid()) - client0
            t["req"] += req
            t["jobs"] += jobs
            t["elapsed_s"] += elapsed
            t["lat"] += lat
            t["rounds"].append(round(jobs / elapsed, 2))
    out: dict[str, Any] = {"clients": CLIENTS, "duration_s_each": duration_s}
    for name, t in totals.items():
        out[name] = {
            "jobs": t["jobs"],
            "jobs_per_s": round(t["jobs"] / t["elapsed_s"], 2),
            "jobs_per_s_by_round": t["rounds"],
            "latency_under_load_ms": summary(ms(t["lat"])),
            "http_requests_per_job": round(t["req"] / max(1, t["jobs"]), 2),
            "server_cpu_ms_per_job": round(1000 * t["cpu_s"] / max(1, t["jobs"]), 3),
            "harness_cpu_ms_per_job": round(1000 * t["client_cpu_s"] / max(1, t["jobs"]), 3),
        }
    ratio = out["ours"]["jobs_per_s"] / out["baseline"]["jobs_per_s"]
    out["ratio_ours_over_baseline"] = round(ratio, 3)
    out["ratio_by_round"] = [
        round(o / b, 3)
        for o, b in zip(
            out["ours"]["jobs_per_s_by_round"], out["baseline"]["jobs_per_s_by_round"], strict=True
        )
    ]
    out["target_ratio"] = TARGET_THROUGHPUT_RATIO
    out["meets_target"] = ratio >= TARGET_THROUGHPUT_RATIO
    return out


def large_output_phase(ours: Server, base: Server) -> dict[str, Any]:
    ours_t: list[float] = []
    ours_results: list[float] = []
    base_t: list[float] = []
    with client(120.0) as oc, client(120.0) as bc:
        for _ in range(LARGE_REPEATS):
            t = ours_job(oc, ours.url, LARGE_CODE, deadline_s=60.0)
            got = len(t.result.get("stdout", ""))
            expect(
                t.result.get("status") == "completed" and got == LARGE_BYTES,
                f"ours: 10 MB job returned {got} bytes, status {t.result.get('status')}",
            )
            ours_t.append(t.total_s)
            ours_results.append(t.results_s)
            elapsed, result = baseline_job(bc, base.url, LARGE_CODE)
            got = len(result.get("stdout", ""))
            expect(got == LARGE_BYTES, f"baseline: 10 MB job returned {got} bytes")
            base_t.append(elapsed)
    return {
        "code": LARGE_CODE,
        "bytes_checked": LARGE_BYTES,
        "ours_ms": summary(ms(ours_t)),
        "ours_get_results_ms": summary(ms(ours_results)),
        "baseline_ms": summary(ms(base_t)),
    }


def request_cost_phase(ours: Server, base: Server, repeats: int) -> dict[str, Any]:
    """Each request type alone on an idle server, against a finished job: pure per-request cost.
    The baseline's GET /health (a constant dict) is the floor of FastAPI + uvicorn + httpx here."""
    with client() as oc, client() as bc:
        job_id = _json(oc.post(f"{ours.url}/execute", json={"code": TRIVIAL_CODE}), "POST")[
            "job_id"
        ]
        deadline = time.monotonic() + 30
        while _json(oc.get(f"{ours.url}/jobs/{job_id}/status"), "status")["status"] not in FINAL:
            expect(time.monotonic() < deadline, "job did not finish")
            time.sleep(0.01)
        requests: dict[str, Callable[[], httpx.Response]] = {
            "baseline GET /health (framework floor)": lambda: bc.get(f"{base.url}/health"),
            "ours GET /jobs/{id}/status": lambda: oc.get(f"{ours.url}/jobs/{job_id}/status"),
            "ours GET /results/{id}": lambda: oc.get(f"{ours.url}/results/{job_id}"),
            "ours GET /jobs/{id}/results": lambda: oc.get(f"{ours.url}/jobs/{job_id}/results"),
            "ours GET /jobs/<unknown> (404)": lambda: oc.get(
                f"{ours.url}/jobs/00000000-0000-4000-8000-000000000000/status"
            ),
        }
        out: dict[str, Any] = {}
        for name, send in requests.items():
            times: list[float] = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                response = send()
                times.append(time.perf_counter() - t0)
                expect(response.status_code in (200, 404), f"{name}: HTTP {response.status_code}")
            out[name] = summary(ms(times))
    return out


def own_cpu_s(servers: list[Server]) -> float:
    """CPU seconds of the harness, both servers and every child they reaped (the jobs)."""
    total = 0.0
    for pid in (os.getpid(), *(s.proc.pid for s in servers)):
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot, from /proc/stat."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def rss_mb(server: Server) -> float:
    return round(psutil.Process(server.proc.pid).memory_info().rss / 1e6, 1)


# ---------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "job_interpreter": JOB_PYTHON,
        "job_interpreter_version": subprocess.run(
            [JOB_PYTHON, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "interpreter_has_uncommitted_changes": bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "interpreter"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        ),
    }


def table(report: dict[str, Any]) -> str:
    lat, thr, big, rss = (
        report[k] for k in ("latency", "throughput", "large_output", "idle_rss_mb")
    )
    rows = [
        (
            "print(1) median ms",
            lat["ours_ms"]["median"],
            lat["baseline_ms"]["median"],
            f"overhead {lat['overhead_median_ms']:+.2f} ms (target <= {TARGET_OVERHEAD_MS})",
        ),
        ("print(1) p90 ms", lat["ours_ms"]["p90"], lat["baseline_ms"]["p90"], ""),
        ("print(1) p99 ms", lat["ours_ms"]["p99"], lat["baseline_ms"]["p99"], ""),
        (
            f"jobs/s, {CLIENTS} clients",
            thr["ours"]["jobs_per_s"],
            thr["baseline"]["jobs_per_s"],
            f"ratio {thr['ratio_ours_over_baseline']:.2f} (target >= {TARGET_THROUGHPUT_RATIO})",
        ),
        (
            "latency under load median ms",
            thr["ours"]["latency_under_load_ms"]["median"],
            thr["baseline"]["latency_under_load_ms"]["median"],
            "",
        ),
        (
            "server CPU ms per job",
            thr["ours"]["server_cpu_ms_per_job"],
            thr["baseline"]["server_cpu_ms_per_job"],
            "server process only, under load",
        ),
        (
            "HTTP requests per job",
            thr["ours"]["http_requests_per_job"],
            thr["baseline"]["http_requests_per_job"],
            "under load",
        ),
        (
            "harness CPU ms per job",
            thr["ours"]["harness_cpu_ms_per_job"],
            thr["baseline"]["harness_cpu_ms_per_job"],
            "the clients share the machine",
        ),
        (
            "10 MB stdout median ms",
            big["ours_ms"]["median"],
            big["baseline_ms"]["median"],
            f"{LARGE_BYTES:,} bytes checked",
        ),
        ("idle RSS MB", rss["ours"], rss["baseline"], "server process only"),
        (
            "RSS MB after the run",
            report["rss_after_run_mb"]["ours"],
            report["rss_after_run_mb"]["baseline"],
            "",
        ),
    ]
    lines = [f"{'':32} {'ours':>10} {'baseline':>10}  notes", "-" * 90]
    lines += [f"{name:32} {o!s:>10} {b!s:>10}  {note}" for name, o, b, note in rows]
    lines += [
        "",
        f"floor (spawn {JOB_PYTHON} -c directly) median ms: {report['floor_spawn_ms']['median']}",
        "",
        "ours, per request (medians, ms):",
    ]
    for key, stats in lat["ours_breakdown"].items():
        lines.append(f"  {key:52} {stats.get('median')!s:>8}  p90 {stats.get('p90')}")
    lines.append(f"  {'GET /results of 10 MB':52} {big['ours_get_results_ms']['median']!s:>8}")
    lines += ["", "each request alone on an idle server, finished job (medians, ms):"]
    for key, stats in report["request_cost_ms"].items():
        lines.append(f"  {key:52} {stats.get('median')!s:>8}  p90 {stats.get('p90')}")
    return "\n".join(lines)


@contextmanager
def servers(workdir: Path) -> Iterator[tuple[Server, Server]]:
    started: list[Server] = []
    try:
        started.append(start_ours(workdir))
        started.append(start_baseline(workdir))
        for server in started:
            wait_healthy(server)
        yield started[0], started[1]
    finally:
        for server in started:
            stop(server)


def timed(label: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    print(f"... {label}", end="", flush=True)
    value = fn()
    print(f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=50, 5 s throughput")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--protocol",
        choices=["poll", "wait"],
        default="poll",
        help="poll: GET status every 1 ms (the spec's protocol); wait: GET status?wait=30",
    )
    args = parser.parse_args(argv)
    if args.protocol == "wait":
        STATUS_PARAMS["wait"] = "30"
    n = 50 if args.quick else 200
    duration_s = 5.0 if args.quick else 10.0

    report: dict[str, Any] = {
        "machine": machine_info(),
        "quick": args.quick,
        "protocol": args.protocol,
    }
    report["loadavg_1m_at_start"] = load_at_start()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="interpreter-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with servers(workdir) as (ours, base):
                busy0, own0, wall0 = machine_busy_s(), own_cpu_s([ours, base]), time.monotonic()
                report["floor_spawn_ms"] = timed("floor", lambda: floor_spawn(20))
                report["latency"] = timed(f"latency, N={n}", lambda: latency_phase(ours, base, n))
                report["request_cost_ms"] = timed(
                    "per-request cost", lambda: request_cost_phase(ours, base, 100)
                )
                time.sleep(IDLE_S)
                report["idle_rss_mb"] = {"ours": rss_mb(ours), "baseline": rss_mb(base)}
                report["throughput"] = timed(
                    f"throughput, {CLIENTS} clients, {duration_s:g} s each",
                    lambda: throughput_phase(ours, base, duration_s),
                )
                report["large_output"] = timed(
                    "10 MB stdout", lambda: large_output_phase(ours, base)
                )
                report["rss_after_run_mb"] = {"ours": rss_mb(ours), "baseline": rss_mb(base)}
                foreign = (machine_busy_s() - busy0) - (own_cpu_s([ours, base]) - own0)
                cores = os.cpu_count() or 1
                report["other_processes_cpu_percent"] = round(
                    max(0.0, 100 * foreign / ((time.monotonic() - wall0) * cores)), 1
                )
        except BenchError as exc:
            print(f"\nbench failed: {exc}", file=sys.stderr)
            return 1
    report["total_run_s"] = round(time.perf_counter() - t_start, 1)
    report["loadavg_1m_at_end"] = os.getloadavg()[0]
    print()
    print(table(report))
    print(
        f"\ntotal {report['total_run_s']} s on {report['machine']['cpu_model']}, "
        f"{report['machine']['cores']} cores, kernel {report['machine']['kernel']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "CPU used by other processes during the run: "
        f"{report['other_processes_cpu_percent']}% of the machine (0 = a quiet machine)"
    )
    print(
        f"load average 1 min: {report['loadavg_1m_at_start']:.2f} at start, "
        f"{report['loadavg_1m_at_end']:.2f} at end (the benchmark itself adds about 2)"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
