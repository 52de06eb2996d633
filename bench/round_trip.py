"""One round trip against two: ``POST /execute?wait=`` versus ``POST /execute`` + a long poll.

    .venv/bin/python bench/round_trip.py [-n 200] [--out bench/results/round_trip.json]

Starts our server as bench/run.py does (SQLite, no sandbox, /usr/bin/python3), then runs
``print(1)`` N times each way, alternating in blocks of 10 so that both share the machine's noise:

- **one trip**: ``POST /execute?wait=30`` answers with the full result;
- **two trips**: ``POST /execute``, then ``GET /results/{id}?wait=30`` (a long poll).

Prints the median, p90 and p99 of each and the median of the per-pair difference. What the second
request costs is the figure an agent's tool call saves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    BenchError,
    _json,
    machine_info,
    start_ours,
    stop,
    summary,
    wait_healthy,
)

CODE = "print(1)"
BLOCK = 10
WARM_UP = 20


def one_trip(client: httpx.Client, url: str) -> float:
    t0 = time.perf_counter()
    body = _json(
        client.post(f"{url}/execute", params={"wait": 30}, json={"code": CODE}), "one trip"
    )
    elapsed = time.perf_counter() - t0
    if body.get("stdout") != "1\n":
        raise BenchError(f"one trip answered {body}")
    return elapsed


def two_trips(client: httpx.Client, url: str) -> float:
    t0 = time.perf_counter()
    job_id = _json(client.post(f"{url}/execute", json={"code": CODE}), "POST /execute")["job_id"]
    result = _json(client.get(f"{url}/results/{job_id}", params={"wait": 30}), "long poll")
    elapsed = time.perf_counter() - t0
    if result.get("stdout") != "1\n":
        raise BenchError(f"long poll answered {result}")
    return elapsed


def measure(url: str, n: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"one_trip": [], "two_trips": []}
    with httpx.Client(trust_env=False, timeout=60.0) as client:
        for _ in range(WARM_UP):
            one_trip(client, url)
            two_trips(client, url)
        for block in range(0, n, BLOCK):
            order = [("one_trip", one_trip), ("two_trips", two_trips)]
            if (block // BLOCK) % 2:
                order.reverse()
            for name, fn in order:
                times[name] += [fn(client, url) for _ in range(min(BLOCK, n - block))]
    pairs = [b - a for a, b in zip(times["one_trip"], times["two_trips"], strict=True)]
    return {
        "n": n,
        "one_trip_ms": summary([t * 1000 for t in times["one_trip"]]),
        "two_trips_ms": summary([t * 1000 for t in times["two_trips"]]),
        "saved_median_ms": round(statistics.median(pairs) * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-trip-") as tmp:
        server = start_ours(Path(tmp))
        try:
            wait_healthy(server)
            report = {"machine": machine_info(), **measure(server.url, args.n)}
        finally:
            stop(server)
    one, two = report["one_trip_ms"], report["two_trips_ms"]
    print(f"print(1), N={args.n}     median    p90    p99 (ms)")
    print(f"one trip (?wait=)   {one['median']:7.2f} {one['p90']:6.2f} {one['p99']:6.2f}")
    print(f"POST + long poll    {two['median']:7.2f} {two['p90']:6.2f} {two['p99']:6.2f}")
    print(f"saved per job (median of pairs): {report['saved_median_ms']:.2f} ms")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
