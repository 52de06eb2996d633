"""Scale-out on PostgreSQL: queue latency, throughput with one and two workers, cancel latency.

    .venv/bin/python bench/scale.py [--quick] [--out bench/results/scale.json] [--logs DIR]

Creates a fresh database on the local PostgreSQL (trust auth), starts two API-only replicas
(``python -m interpreter.server``, ``INTERPRETER_INPROCESS_WORKER=false``) and workers
(``python -m interpreter.worker``) as real processes on loopback, and measures:

1. submit-to-start latency of ``print(1)`` on an idle queue (one worker, concurrency 4): the
   server's ``started_at - created_at`` and the client's ``started_at - send time``;
2. throughput of ``sleep 0.2`` shell jobs submitted at once through both replicas, with one
   worker process and with two (concurrency 4 each), rounds alternating; jobs/s from the
   jobs' own ``max(completed_at) - min(created_at)``;
3. cancel latency across replicas: a job submitted on replica A, cancelled on replica B, until
   its process (found by a marker on its command line) is dead.

Jobs run unsandboxed (``INTERPRETER_SANDBOX=none``): this measures the queue, not bubblewrap.
Every process started (and every job process under them) is killed at the end, also on error,
and the database dropped. Prints a table and a one-line JSON summary; writes the full report.

One file of ~780 lines on purpose: a benchmark runs as ``python bench/scale.py``
from a checkout with nothing imported from the tests; its phases read top to bottom in the
order they run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.pg: the fresh-database helper the tests use

from bench.run import base_env, free_port, load_at_start, timed  # noqa: E402
from tests import pg  # noqa: E402

JOB_PYTHON = "/usr/bin/python3"
FINAL = {"completed", "failed", "timeout", "cancelled"}

CONCURRENCY = 4  # slots per worker process, in every phase
LATENCY_CODE = "print(1)"
LATENCY_WARMUP = 10
SLEEP_CODE = "sleep 0.2"  # shell
SLEEP_S = 0.2
SUBMIT_THREADS = 8
# Rounds of each worker count, alternating 1, 2, 1, 2, ...: rounds of two workers vary by about
# 4% on this machine, one in five further; medians of five hold still where three did not.
ROUNDS = 5
CANCEL_SLEEP_S = 60
TARGET_THROUGHPUT_RATIO = 1.8
TARGET_CANCEL_MS = 50.0
STOP_GRACE_S = 15.0


class BenchError(Exception):
    """A process misbehaved or a job's answer was wrong."""


# ---------------------------------------------------------------- statistics


def percentile(ordered: list[float], p: float) -> float:
    pos = (len(ordered) - 1) * p
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values_ms: list[float]) -> dict[str, float | int]:
    """Median (p50), p90, p99, min, max and count of a list of milliseconds."""
    if not values_ms:
        return {"n": 0}
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p90": round(percentile(ordered, 0.90), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "min": round(ordered[0], 2),
        "max": round(ordered[-1], 2),
    }


def parse_ts(value: str | None) -> float:
    if not value:
        raise BenchError(f"missing timestamp: {value!r}")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- database


@contextmanager
def fresh_database() -> Iterator[str]:
    """An empty database for this run (tests/pg.py's), dropped afterwards."""
    try:
        with pg.fresh_database() as url:
            yield url
    except RuntimeError as exc:  # PostgreSQL unreachable: tests/pg.py says how to start it
        raise BenchError(str(exc)) from exc


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str | None = None  # APIs only
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # descendants ever seen
    stopped: bool = False  # stopped on purpose (or a one-shot command)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def descendants(self) -> list[psutil.Process]:
        with suppress(psutil.Error):
            for child in psutil.Process(self.popen.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        return list(self.seen.values())


class Cluster:
    """Every process of the run: API replicas and workers, each in a session of its own."""

    def __init__(self, workdir: Path, database_url: str) -> None:
        self.workdir = workdir
        self.env = base_env() | {
            "INTERPRETER_HOST": "127.0.0.1",
            "INTERPRETER_DATABASE_URL": database_url,
            "INTERPRETER_LOG_LEVEL": "WARNING",
            "INTERPRETER_SANDBOX": "none",  # the queue, not bubblewrap
            "INTERPRETER_RATE_LIMIT": "100000/minute",
            "INTERPRETER_PYTHON_COMMAND": JOB_PYTHON,
            "INTERPRETER_SHUTDOWN_GRACE_S": "5",
        }
        self.procs: list[Proc] = []
        self.apis: list[Proc] = []
        self.workers: list[Proc] = []
        self._count = 0

    def _spawn(self, name: str, module: str, env: dict[str, str], args: list[str]) -> Proc:
        self._count += 1
        data = self.workdir / f"{name}-{self._count}"
        data.mkdir()
        log = self.workdir / f"{name}-{self._count}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env=self.env | {"INTERPRETER_DATA_DIR": str(data)} | env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def apply_schema(self) -> float:
        t0 = time.perf_counter()
        proc = self._spawn("schema", "interpreter.worker", {}, ["--apply-schema"])
        proc.stopped = True
        try:
            code = proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise BenchError("worker --apply-schema did not finish in 60 s") from exc
        if code != 0:
            raise BenchError(f"worker --apply-schema exited {code}:\n{proc.log_tail()}")
        return time.perf_counter() - t0

    def api(self) -> Proc:
        port = free_port()
        name = f"api{'AB'[len(self.apis)] if len(self.apis) < 2 else len(self.apis)}"
        env = {
            "INTERPRETER_PORT": str(port),
            "INTERPRETER_INPROCESS_WORKER": "false",
            "INTERPRETER_APPLY_SCHEMA": "false",
        }
        proc = self._spawn(name, "interpreter.server", env, [])
        proc.url = f"http://127.0.0.1:{port}"
        self.apis.append(proc)
        return proc

    def worker(self) -> Proc:
        env = {"INTERPRETER_WORKER_CONCURRENCY": str(CONCURRENCY)}
        proc = self._spawn(f"worker{len(self.live_workers()) + 1}", "interpreter.worker", env, [])
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.popen.poll() is None]

    def wait_healthy(self, api: Proc, timeout_s: float = 30.0) -> None:
        assert api.url is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                api.check_alive()
                with suppress(httpx.TransportError):
                    if client.get(f"{api.url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        raise BenchError(f"{api.name} not healthy after {timeout_s} s:\n{api.log_tail()}")

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> float:
        """Until the first API's /health counts ``count`` live workers; returns the seconds."""
        t0 = time.perf_counter()
        url = self.apis[0].url
        alive = None
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.perf_counter() - t0 < timeout_s:
                for proc in self.procs:
                    if not proc.stopped:
                        proc.check_alive()
                alive = client.get(f"{url}/health").json()["queue"]["workers_alive"]
                if alive == count:
                    return time.perf_counter() - t0
                time.sleep(0.05)
        logs = "\n".join(w.log_tail() for w in self.workers)
        raise BenchError(f"{alive} workers alive, not {count}, after {timeout_s} s\n{logs}")

    def stop(self, proc: Proc) -> None:
        """SIGTERM (a graceful stop), SIGKILL past STOP_GRACE_S; then its group and every job
        process ever seen under it (jobs run in sessions of their own)."""
        proc.stopped = True
        proc.descendants()
        if proc.popen.poll() is None:
            with suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        left = [p for p in proc.seen.values() if p.is_running()]
        for p in left:
            with suppress(psutil.Error):
                p.kill()  # psutil checks the pid was not reused
        psutil.wait_procs(left, timeout=3)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the APIs
            with suppress(Exception):
                self.stop(proc)


# ---------------------------------------------------------------- HTTP helpers


def http_client(timeout_s: float = 60.0) -> httpx.Client:
    limits = httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60.0)
    return httpx.Client(trust_env=False, timeout=timeout_s, limits=limits)


def ok_json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


def submit(client: httpx.Client, url: str, code: str, language: str, timeout: float) -> str:
    body = {"code": code, "language": language, "timeout": timeout}
    return str(ok_json(client.post(f"{url}/execute", json=body), "POST /execute")["job_id"])


def wait_final(client: httpx.Client, url: str, job_id: str, deadline_s: float) -> dict[str, Any]:
    """GET /jobs/{id}/results?wait= (woken by the final status' NOTIFY) until final."""
    limit = time.monotonic() + deadline_s
    while True:
        full = ok_json(client.get(f"{url}/jobs/{job_id}/results", params={"wait": 30}), "results")
        if full["status"] in FINAL:
            return full
        if time.monotonic() > limit:
            raise BenchError(f"job {job_id} not final after {deadline_s} s: {full['status']}")


# ---------------------------------------------------------------- 1. submit-to-start latency


def latency_phase(cluster: Cluster, n: int) -> dict[str, Any]:
    api = cluster.apis[0]
    assert api.url is not None
    server_ms: list[float] = []
    client_ms: list[float] = []
    post_ms: list[float] = []
    run_ms: list[float] = []
    end_to_end_ms: list[float] = []
    with http_client() as client:
        for i in range(LATENCY_WARMUP + n):
            sent = time.time()
            t0 = time.perf_counter()
            job_id = submit(client, api.url, LATENCY_CODE, "python", 30)
            t1 = time.perf_counter()
            full = wait_final(client, api.url, job_id, 30)
            t2 = time.perf_counter()
            if full["status"] != "completed" or full["stdout"] != "1\n":
                raise BenchError(f"print(1): {full['status']} {full['stdout']!r}")
            if i < LATENCY_WARMUP:
                continue
            created, started, completed = (
                parse_ts(full[k]) for k in ("created_at", "started_at", "completed_at")
            )
            server_ms.append((started - created) * 1000)
            client_ms.append((started - sent) * 1000)
            run_ms.append((completed - started) * 1000)
            post_ms.append((t1 - t0) * 1000)
            end_to_end_ms.append((t2 - t0) * 1000)
        for proc in cluster.procs:
            if not proc.stopped:
                proc.check_alive()
    return {
        "n": n,
        "warmup": LATENCY_WARMUP,
        "code": LATENCY_CODE,
        "workers": 1,
        "concurrency": CONCURRENCY,
        "submit_to_start_server_ms (started_at - created_at)": summary(server_ms),
        "submit_to_start_client_ms (started_at - client send time)": summary(client_ms),
        "post_execute_ms": summary(post_ms),
        "run_ms (completed_at - started_at)": summary(run_ms),
        "end_to_end_ms (POST, then GET results?wait until final)": summary(end_to_end_ms),
    }


# ---------------------------------------------------------------- 2. throughput


def warm_up(cluster: Cluster, n: int) -> None:
    """``n`` trivial jobs at once, untimed, so that every worker (the second one has just
    started) runs its first jobs before the measured round: its first job pays for its lazy
    imports and cold caches, a cost of starting a process, not of running jobs."""
    urls = [str(api.url) for api in cluster.apis[:2]]
    with http_client() as client:
        ids = [submit(client, urls[i % 2], "true", "shell", 30) for i in range(n)]
        for i, job_id in enumerate(ids):
            wait_final(client, urls[i % 2], job_id, 60)


def throughput_round(cluster: Cluster, m: int) -> dict[str, Any]:
    urls = [str(api.url) for api in cluster.apis[:2]]
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = http_client()
            with lock:
                clients.append(local.client)
        c: httpx.Client = local.client
        return c

    def one(i: int) -> str:
        return submit(client(), urls[i % 2], SLEEP_CODE, "shell", 30)

    def final(item: tuple[int, str]) -> dict[str, Any]:
        i, job_id = item
        return wait_final(client(), urls[(i + 1) % 2], job_id, 120)  # read on the other replica

    try:
        with concurrent.futures.ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            t0 = time.perf_counter()
            ids = list(pool.map(one, range(m)))
            submitted = time.perf_counter() - t0
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(final, enumerate(ids)))
        seen_all = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    bad = [r["status"] for r in results if r["status"] != "completed"]
    if bad:
        raise BenchError(f"{len(bad)} of {m} sleep jobs did not complete: {bad[:5]}")
    created = [parse_ts(r["created_at"]) for r in results]
    started = [parse_ts(r["started_at"]) for r in results]
    completed = [parse_ts(r["completed_at"]) for r in results]
    wall = max(completed) - min(created)
    per_worker: dict[str, int] = {}
    for r in results:
        worker = (r.get("worker") or {}).get("id") or "?"
        per_worker[worker] = per_worker.get(worker, 0) + 1
    queue_ms = [(s - c) * 1000 for s, c in zip(started, created, strict=True)]
    run_s = [c - s for s, c in zip(started, completed, strict=True)]
    slots = len(per_worker) * CONCURRENCY
    return {
        "jobs": m,
        "wall_s (max completed_at - min created_at)": round(wall, 3),
        "jobs_per_s": round(m / wall, 2),
        "submit_window_s (client, all POSTs)": round(submitted, 3),
        "client_wall_s (first POST to last final seen)": round(seen_all, 3),
        "run_ms (completed_at - started_at)": summary([r * 1000 for r in run_s]),
        "slot_occupancy (sum of run times / slots x wall)": round(sum(run_s) / (slots * wall), 3),
        "queue_ms (started_at - created_at)": summary(queue_ms),
        "jobs_per_worker": sorted(per_worker.values(), reverse=True),
    }


def throughput_phase(cluster: Cluster, m: int, rounds: int) -> dict[str, Any]:
    """Rounds alternate one worker, two workers: the second worker is started for each of its
    rounds and stopped (SIGTERM) after it, so both configurations share the machine's noise.
    Before each round, untimed warm-up jobs (two per slot) run on whichever workers are up."""
    by_count: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for r in range(rounds):
        for count in (1, 2):
            if count == 2:
                cluster.worker()
                cluster.wait_workers(2)
            elif len(cluster.live_workers()) != 1:
                raise BenchError(f"{len(cluster.live_workers())} workers running, not 1")
            else:
                cluster.wait_workers(1)
            warm_up(cluster, 2 * count * CONCURRENCY)
            result = throughput_round(cluster, m)
            result["round"] = r + 1
            if len(result["jobs_per_worker"]) != count:
                raise BenchError(f"{count} worker(s), jobs ran on {result['jobs_per_worker']}")
            by_count[count].append(result)
            if count == 2:
                cluster.stop(cluster.workers[-1])
    one = statistics.median(r["jobs_per_s"] for r in by_count[1])
    two = statistics.median(r["jobs_per_s"] for r in by_count[2])
    ratio = two / one
    ideal = {c: c * CONCURRENCY / SLEEP_S for c in (1, 2)}
    return {
        "code": f"{SLEEP_CODE} (shell)",
        "jobs_per_round": m,
        "concurrency_per_worker": CONCURRENCY,
        "api_replicas": 2,
        "rounds_each": rounds,
        "ideal_jobs_per_s (slots / 0.2 s)": ideal,
        "one_worker": {"jobs_per_s_median": round(one, 2), "rounds": by_count[1]},
        "two_workers": {"jobs_per_s_median": round(two, 2), "rounds": by_count[2]},
        "ratio_two_over_one": round(ratio, 3),
        "ratio_by_round": [
            round(b["jobs_per_s"] / a["jobs_per_s"], 3)
            for a, b in zip(by_count[1], by_count[2], strict=True)
        ],
        "target_ratio": TARGET_THROUGHPUT_RATIO,
        "meets_target": ratio >= TARGET_THROUGHPUT_RATIO,
    }


# ---------------------------------------------------------------- 3. cancel latency


def find_marked(worker: Proc, marker: str, timeout_s: float) -> psutil.Process:
    """The job's process: a descendant of the worker with ``marker`` on its command line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check_alive()
        with suppress(psutil.Error):
            for child in psutil.Process(worker.popen.pid).children(recursive=True):
                worker.seen.setdefault(child.pid, child)
                with suppress(psutil.Error):
                    if any(marker in part for part in child.cmdline()):
                        return child
        time.sleep(0.002)
    raise BenchError(f"the job's process ({marker}) never appeared under {worker.name}")


def cancel_phase(cluster: Cluster, n: int) -> dict[str, Any]:
    a, b = (str(api.url) for api in cluster.apis[:2])
    worker = cluster.live_workers()[0]
    killed_ms: list[float] = []
    reaped_ms: list[float] = []
    request_ms: list[float] = []
    with http_client() as ca, http_client() as cb:
        for _ in range(n):
            marker = f"MARK{uuid.uuid4().hex}"
            code = f"import time  # {marker}\ntime.sleep({CANCEL_SLEEP_S})"
            job_id = submit(ca, a, code, "python", CANCEL_SLEEP_S + 30)
            proc = find_marked(worker, marker, 10)
            deadline = time.monotonic() + 10
            while ok_json(cb.get(f"{b}/jobs/{job_id}/status"), "status")["status"] != "running":
                if time.monotonic() > deadline:
                    raise BenchError(f"job {job_id} has a process but is not running")
                time.sleep(0.002)
            t0 = time.perf_counter()
            response = cb.post(f"{b}/jobs/{job_id}/cancel")
            t1 = time.perf_counter()
            if response.status_code != 200 or response.json()["status"] != "cancelled":
                raise BenchError(f"cancel: HTTP {response.status_code}: {response.text[:300]}")
            killed: float | None = None
            while True:
                try:
                    dead = proc.status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    now = time.perf_counter()
                    killed = killed if killed is not None else now
                    break
                if dead and killed is None:
                    killed = time.perf_counter()
                if time.perf_counter() - t0 > 5:
                    raise BenchError(f"job {job_id}'s process still there 5 s after the cancel")
                time.sleep(0.001)
            killed_ms.append((killed - t0) * 1000)
            reaped_ms.append((now - t0) * 1000)
            request_ms.append((t1 - t0) * 1000)
            final = wait_final(ca, a, job_id, 10)
            if final["status"] != "cancelled":
                raise BenchError(f"cancelled job {job_id} ended {final['status']}")
    gone = summary(reaped_ms)
    return {
        "n": n,
        "submitted_on": "A",
        "cancelled_on": "B",
        "workers": 1,
        "process_killed_ms (zombie or gone, from POST cancel sent)": summary(killed_ms),
        "process_gone_ms (reaped)": gone,
        "post_cancel_ms (response)": summary(request_ms),
        "target_ms": TARGET_CANCEL_MS,
        "meets_target": float(gone["p99"]) <= TARGET_CANCEL_MS,  # p99 of gone (reaped)
    }


# ---------------------------------------------------------------- report


LOG_NOTEWORTHY = re.compile(r"warning|error|critical|traceback|exception", re.IGNORECASE)
LOG_EXPECTED = re.compile(r"INTERPRETER_SANDBOX=none: jobs run without a sandbox")  # every worker


def log_findings(cluster: Cluster) -> dict[str, Any]:
    """Lines of each process's log that look like warnings or errors (the level is WARNING, so
    a quiet run logs nothing): counts and the first distinct lines."""
    out: dict[str, Any] = {}
    for proc in cluster.procs:
        try:
            lines = proc.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [
            line for line in lines if LOG_NOTEWORTHY.search(line) and not LOG_EXPECTED.search(line)
        ]
        if hits:
            distinct = list(dict.fromkeys(line[:400] for line in hits))
            out[proc.log.name] = {
                "lines": len(lines),
                "noteworthy": len(hits),
                "first": distinct[:5],
            }
    return out


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    with psycopg.connect(pg.ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "interpreter_has_uncommitted_changes": bool(
            git("status", "--porcelain", "--", "interpreter")
        ),
    }


def own_cpu_s() -> float:
    """CPU seconds of the harness and of every process it started and reaped (with their jobs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_busy_s() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def table(report: dict[str, Any]) -> str:
    lat, thr, can = report["latency"], report["throughput"], report["cancel"]
    srv = lat["submit_to_start_server_ms (started_at - created_at)"]
    cli = lat["submit_to_start_client_ms (started_at - client send time)"]
    killed = can["process_killed_ms (zombie or gone, from POST cancel sent)"]
    gone = can["process_gone_ms (reaped)"]
    one, two = thr["one_worker"], thr["two_workers"]
    ideal = thr["ideal_jobs_per_s (slots / 0.2 s)"]
    rows = [
        ("submit-to-start, server clock (ms)", srv["p50"], srv["p99"], f"N={lat['n']}, idle"),
        ("submit-to-start, client send (ms)", cli["p50"], cli["p99"], ""),
        (
            "end to end print(1) (ms)",
            lat["end_to_end_ms (POST, then GET results?wait until final)"]["p50"],
            lat["end_to_end_ms (POST, then GET results?wait until final)"]["p99"],
            "",
        ),
        ("cancel on B -> process killed (ms)", killed["p50"], killed["p99"], f"N={can['n']}"),
        (
            "cancel on B -> process reaped (ms)",
            gone["p50"],
            gone["p99"],
            f"target <= {TARGET_CANCEL_MS:g}: {'met' if can['meets_target'] else 'NOT met'}",
        ),
    ]
    lines = [f"{'':38} {'p50':>8} {'p99':>8}  notes", "-" * 80]
    lines += [f"{name:38} {p50!s:>8} {p99!s:>8}  {note}" for name, p50, p99, note in rows]
    lines += [
        "",
        f"throughput, {thr['jobs_per_round']} x `{SLEEP_CODE}` through 2 replicas, "
        f"concurrency {CONCURRENCY} per worker (jobs/s, from the jobs' timestamps):",
        f"  one worker  : median {one['jobs_per_s_median']:>6}  rounds "
        f"{[r['jobs_per_s'] for r in one['rounds']]}  (ideal {ideal[1]:g})",
        f"  two workers : median {two['jobs_per_s_median']:>6}  rounds "
        f"{[r['jobs_per_s'] for r in two['rounds']]}  (ideal {ideal[2]:g})"
        f"  split {[r['jobs_per_worker'] for r in two['rounds']]}",
        f"  ratio two/one: {thr['ratio_two_over_one']:.2f} (by round {thr['ratio_by_round']}), "
        f"target >= {TARGET_THROUGHPUT_RATIO}: {'met' if thr['meets_target'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def one_line(report: dict[str, Any]) -> dict[str, Any]:
    lat, thr, can = report["latency"], report["throughput"], report["cancel"]
    srv = lat["submit_to_start_server_ms (started_at - created_at)"]
    cli = lat["submit_to_start_client_ms (started_at - client send time)"]
    gone = can["process_gone_ms (reaped)"]
    return {
        "date": report["machine"]["date"],
        "quick": report["quick"],
        "submit_to_start_server_ms": {"p50": srv["p50"], "p99": srv["p99"]},
        "submit_to_start_client_ms": {"p50": cli["p50"], "p99": cli["p99"]},
        "throughput_one_worker_jobs_s": thr["one_worker"]["jobs_per_s_median"],
        "throughput_two_workers_jobs_s": thr["two_workers"]["jobs_per_s_median"],
        "ratio_two_over_one": thr["ratio_two_over_one"],
        "ratio_target_met": thr["meets_target"],
        "cancel_ms": {"p50": gone["p50"], "p99": gone["p99"]},
        "cancel_target_met": can["meets_target"],
        "total_run_s": report.get("total_run_s"),
    }


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the finally blocks stop the processes


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n_latency = 50 if args.quick else 200
    m_jobs = 40 if args.quick else 80
    n_cancel = 10 if args.quick else 30
    report: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    report["loadavg_1m_at_start"] = load_at_start()
    t_start = time.perf_counter()
    busy0, own0 = machine_busy_s(), own_cpu_s()
    with fresh_database() as url:
        cluster = Cluster(workdir, url)
        try:
            setup: dict[str, float] = {}
            setup["apply_schema_s"] = round(timed("schema", cluster.apply_schema), 2)
            t0 = time.perf_counter()
            for _ in range(2):
                cluster.api()
            cluster.worker()
            for api in cluster.apis:
                cluster.wait_healthy(api)
            cluster.wait_workers(1)
            setup["two_apis_one_worker_ready_s"] = round(time.perf_counter() - t0, 2)
            report["setup"] = setup
            report["latency"] = timed(
                f"submit-to-start latency, N={n_latency}", lambda: latency_phase(cluster, n_latency)
            )
            report["cancel"] = timed(
                f"cancel latency, N={n_cancel}", lambda: cancel_phase(cluster, n_cancel)
            )
            report["throughput"] = timed(
                f"throughput, {m_jobs} jobs, {ROUNDS} rounds each of 1 and 2 workers",
                lambda: throughput_phase(cluster, m_jobs, ROUNDS),
            )
        finally:
            cluster.cleanup()
            report["server_logs"] = log_findings(cluster)
    wall = time.perf_counter() - t_start
    report["total_run_s"] = round(wall, 1)
    report["loadavg_1m_at_end"] = os.getloadavg()[0]
    capacity = wall * (os.cpu_count() or 1)
    busy, own = machine_busy_s() - busy0, own_cpu_s() - own0
    report["machine_cpu_busy_percent"] = round(100 * busy / capacity, 1)
    # the harness, the APIs, the workers and the jobs (all reaped by now)
    report["own_processes_cpu_percent"] = round(100 * own / capacity, 1)
    report["other_cpu_percent (PostgreSQL and anything else)"] = round(
        100 * max(0.0, busy - own) / capacity, 1
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=50 latency, 40 jobs, 10 cancels")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="interpreter-scale-"))
    try:
        report = run(args, workdir)
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(report))
    m = report["machine"]
    print(
        f"\ntotal {report['total_run_s']} s on {m['cpu_model']}, {m['cores']} cores, "
        f"PostgreSQL {m['postgresql']}, jobs unsandboxed (INTERPRETER_SANDBOX=none); "
        f"machine CPU busy {report['machine_cpu_busy_percent']}% during the run "
        f"({report['own_processes_cpu_percent']}% harness, APIs, workers and jobs; the rest "
        "PostgreSQL and anything else)"
    )
    if report["server_logs"]:
        print("warnings or errors in the processes' logs:")
        for name, found in report["server_logs"].items():
            print(f"  {name}: {found['noteworthy']} lines, e.g. {found['first'][0][:200]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    print(json.dumps(one_line(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
