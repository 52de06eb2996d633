"""What the Python SDK costs: ``Client.run("print(1)")`` against the same request in raw httpx.

    .venv/bin/python bench/client.py [-n 200] [--out bench/results/client.json]

Starts our server as bench/run.py does (SQLite, no sandbox, /usr/bin/python3), then runs
``print(1)`` N times each way, alternating in blocks of 10 so that both share the machine's noise:

- **sdk**: ``interpreter.client.Client.run("print(1)")`` (one ``POST /execute?wait=``, an
  Idempotency-Key, the answer parsed into a ``Result``);
- **raw**: ``httpx.Client.post("/execute?wait=30", json=...)`` and ``response.json()``;
- **raw+key**: the same with an ``Idempotency-Key`` header, as the SDK sends (the server looks
  the key up and stores it: its cost, apart from the SDK's).

Prints the median and p90 of each and the medians of the per-pair differences: the SDK's own
cost (sdk - raw+key) and the key's (raw+key - raw).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import BenchError, machine_info, start_ours, stop, summary, wait_healthy  # noqa: E402

from interpreter.client import Client  # noqa: E402

CODE = "print(1)"
BLOCK = 10
WARM_UP = 20


def sdk_run(client: Client) -> float:
    t0 = time.perf_counter()
    result = client.run(CODE)
    elapsed = time.perf_counter() - t0
    if result.stdout != "1\n":
        raise BenchError(f"the SDK answered {result}")
    return elapsed


def raw_run(client: httpx.Client, key: bool = False) -> float:
    headers = {"Idempotency-Key": uuid.uuid4().hex} if key else {}
    t0 = time.perf_counter()
    response = client.post("/execute", params={"wait": 30}, json={"code": CODE}, headers=headers)
    body = response.json()
    elapsed = time.perf_counter() - t0
    if body.get("stdout") != "1\n":
        raise BenchError(f"raw HTTP answered {response.status_code} {body}")
    return elapsed


def measure(url: str, n: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"sdk": [], "raw": [], "raw+key": []}
    with Client(url) as sdk, httpx.Client(base_url=url, trust_env=False, timeout=60) as raw:
        runs = {
            "sdk": lambda: sdk_run(sdk),
            "raw": lambda: raw_run(raw),
            "raw+key": lambda: raw_run(raw, key=True),
        }
        for _ in range(WARM_UP):
            for run in runs.values():
                run()
        names = list(runs)
        for block in range(0, n, BLOCK):
            count = min(BLOCK, n - block)
            shift = (block // BLOCK) % len(names)
            for name in names[shift:] + names[:shift]:
                times[name] += [runs[name]() for _ in range(count)]

    def paired(a: str, b: str) -> float:
        pairs = [x - y for x, y in zip(times[a], times[b], strict=True)]
        return round(statistics.median(pairs) * 1000, 2)

    return {
        "n": n,
        **{f"{name}_ms": summary([t * 1000 for t in times[name]]) for name in names},
        "sdk_cost_median_ms": paired("sdk", "raw+key"),
        "key_cost_median_ms": paired("raw+key", "raw"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        server = start_ours(Path(tmp))
        try:
            wait_healthy(server)
            report = {"machine": machine_info(), **measure(server.url, args.n)}
        finally:
            stop(server)
    print(f"print(1), N={args.n}          median    p90 (ms)")
    for name, label in (("sdk", "Client.run"), ("raw", "raw httpx"), ("raw+key", "raw + key")):
        figures = report[f"{name}_ms"]
        print(f"{label:22} {figures['median']:7.2f} {figures['p90']:6.2f}")
    print(f"the SDK's own cost (median of pairs): {report['sdk_cost_median_ms']:.2f} ms")
    print(f"the Idempotency-Key's cost on the server: {report['key_cost_median_ms']:.2f} ms")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
