"""Live output latency: from a job's flushed ``print`` to the SSE event on the client.

    .venv/bin/python bench/stream.py [-n 200] [--gap 0.05] [--no-scaleout] [--out FILE]

The job prints ``time.time()`` with ``flush=True`` N times, ``--gap`` seconds apart; the client
follows ``GET /jobs/{id}/stream`` and takes ``time.time()`` when each ``stdout`` event's data
line arrives (same machine, same clock). Latency = receipt − the printed stamp; median, p95 and
max over the N prints. Two set-ups, each real processes on loopback, jobs unsandboxed
(``INTERPRETER_SANDBOX=none``: the stream's path, not bubblewrap's):

- **embedded**: ``python -m interpreter.server`` on SQLite (the capture wakes the stream in
  process; the stream reads the output file);
- **scale-out** (when PostgreSQL answers at 127.0.0.1:5432): a fresh database, one API-only
  replica and one worker (``python -m interpreter.worker``): the worker batches the output into
  ``job_chunks`` (one insert per 15 ms window), the replica is woken by NOTIFY and reads the rows.

Every process is stopped at the end, also on error, and the database dropped. Prints a table and
writes the figures as JSON (``bench/results/stream.json``).

One file on purpose, like the other benchmarks: it runs as ``python bench/stream.py`` from a
checkout; it borrows the process handling of ``bench/scale.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import BenchError, Cluster, fresh_database  # noqa: E402

WARMUP_JOBS = 3


def job_code(n: int, gap_s: float) -> str:
    return (
        "import time\n"
        f"for _ in range({n}):\n"
        "    print(repr(time.time()), flush=True)\n"
        f"    time.sleep({gap_s})\n"
    )


def percentile(ordered: list[float], p: float) -> float:
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def measure(url: str, n: int, gap_s: float) -> dict[str, Any]:
    """Submit the printing job on ``url`` and follow its stream; the delays in ms."""
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as client:
        for _ in range(WARMUP_JOBS):  # imports, caches, the worker's first job
            body = {"code": "print(1)", "language": "python"}
            client.post("/execute", json=body, params={"wait": 30}).raise_for_status()
        body = {"code": job_code(n, gap_s), "language": "python", "timeout": n * gap_s + 60}
        response = client.post("/execute", json=body)
        response.raise_for_status()
        job_id = response.json()["job_id"]
        delays_ms: list[float] = []
        name = ""
        with client.stream("GET", f"/jobs/{job_id}/stream") as stream:
            for line in stream.iter_lines():
                received = time.time()
                if line.startswith("event:"):
                    name = line.partition(":")[2].strip()
                elif line.startswith("data:") and name == "stdout":
                    text = json.loads(line.partition(":")[2])["text"]
                    delays_ms += [(received - float(stamp)) * 1000 for stamp in text.split()]
                elif line.startswith("data:") and name == "end":
                    end = json.loads(line.partition(":")[2])
    if end["status"] != "completed" or len(delays_ms) != n:
        raise BenchError(f"the job ended {end} with {len(delays_ms)} of {n} prints received")
    ordered = sorted(delays_ms)
    return {
        "n": n,
        "gap_s": gap_s,
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(percentile(ordered, 95), 2),
        "max_ms": round(ordered[-1], 2),
        "min_ms": round(ordered[0], 2),
    }


def embedded(workdir: Path, n: int, gap_s: float) -> dict[str, Any]:
    cluster = Cluster(workdir / "embedded", "")
    (workdir / "embedded").mkdir()
    cluster.env.pop("INTERPRETER_DATABASE_URL")
    try:
        api = cluster.api()
        cluster.wait_healthy(api)
        assert api.url is not None
        return measure(api.url, n, gap_s)
    finally:
        cluster.cleanup()


def scaleout(workdir: Path, n: int, gap_s: float) -> dict[str, Any]:
    (workdir / "scaleout").mkdir()
    with fresh_database() as url:
        cluster = Cluster(workdir / "scaleout", url)
        try:
            cluster.apply_schema()
            api = cluster.api()
            cluster.wait_healthy(api)
            cluster.worker()
            cluster.wait_workers(1)
            assert api.url is not None
            return measure(api.url, n, gap_s)
        finally:
            cluster.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="prints per job")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between prints")
    parser.add_argument("--no-scaleout", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream.json")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load_at_start": os.getloadavg()[0],
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        try:
            report["embedded"] = embedded(Path(tmp), args.n, args.gap)
            if not args.no_scaleout:
                try:
                    report["scaleout"] = scaleout(Path(tmp), args.n, args.gap)
                except BenchError as exc:
                    if "PostgreSQL" not in str(exc) and "connect" not in str(exc):
                        raise
                    print(f"scale-out skipped: {exc}")
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{'':10} {'median':>8} {'p95':>8} {'max':>8}  (ms, {args.n} prints, {args.gap} s apart)")
    for mode in ("embedded", "scaleout"):
        if mode in report:
            r = report[mode]
            print(f"{mode:10} {r['median_ms']:8.2f} {r['p95_ms']:8.2f} {r['max_ms']:8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
