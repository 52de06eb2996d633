"""The warm Python pool (issue 14): sandboxed jobs with the pool, without it, and the baseline.

    .venv/bin/python bench/warm_pool.py [--quick] [-n N] [--seconds S] [--packages-n N]
                                        [--no-packages] [--out bench/results/warm_pool.json]

Run as root, with bubblewrap (the sandbox). Starts three servers as real processes on free
loopback ports, each with the job interpreter /usr/bin/python3 and a data directory of its own:

- **pool**: ``python -m interpreter.server`` in the default sandbox (bubblewrap) with the warm
  pool (``INTERPRETER_WARM_POOL`` left to its default: on);
- **cold**: the same with ``INTERPRETER_WARM_POOL=false``: every job a cold launch;
- **baseline**: ``bench/baseline_server.py``, FastAPI + one unsandboxed subprocess per request.

Then measures, interleaved so that all three share the machine's noise:

1. ``print(1)`` end to end in one round trip (ours: ``POST /execute?wait=30`` answering the full
   result; the baseline: its one ``POST /execute``): N sequential jobs each, in blocks of 10 whose
   order rotates; medians, p90 and the ratios to the baseline;
2. throughput: 8 concurrent clients running jobs back to back for a fixed time per server, in
   rounds whose order rotates; jobs/s and the ratios;
3. idle memory of each server's process tree (the server and every descendant: RSS, PSS and USS
   added up), and of each warm parent (a descendant whose command line holds
   ``interpreter-warm-parent``);
4. the pool's starts by outcome, read from ``/metrics``
   (``interpreter_warm_pool_starts_total{outcome=...}``), and every other warm pool series;
5. unless ``--no-packages``: pool and cold started again with
   ``INTERPRETER_DEFAULT_PACKAGES="numpy pandas"``; once ``GET /environments`` shows the default
   environment (built at start; up to 10 minutes), ``import numpy, pandas; print(1)`` and
   ``print(1)`` end to end in it, then 3 and 4 again. uv's cache is kept between runs
   (``--uv-cache``), so only the first run downloads the wheels.

Every job's stdout must be ``"1\\n"``. Prints a table and writes every figure as JSON with the
machine, the load average and the commit. Every server is stopped at the end, also when the run
fails or is sent SIGTERM; a process left under a stopped server is killed and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    CLIENTS,
    BenchError,
    Server,
    _json,
    client,
    cpu_s,
    expect,
    load_at_start,
    machine_info,
    ms,
    run_footer,
    start_baseline,
    stop,
    summary,
    wait_healthy,
)
from run import start_ours as run_start_ours  # noqa: E402

TRIVIAL_CODE = "print(1)"
IMPORT_CODE = "import numpy, pandas; print(1)"
DEFAULT_PACKAGES = "numpy pandas"
PARENT_MARKER = "interpreter-warm-parent"
METRIC_PREFIX = "interpreter_warm_pool"
STARTS = re.compile(r"^interpreter_warm_pool_starts_total\{(?P<labels>[^}]*)\}$")
STATE_DIR = Path("/var/tmp/interpreter-bench-warm-pool")  # uv's cache and each run's data
OURS = ("pool", "cold")
BLOCK = 10
PACKAGES_BLOCK = 5
WARMUP = 20
PACKAGES_WARMUP = 5
ROUND_S = 2.5
IDLE_S = 2.0
START_TIMEOUT_S = 120.0  # the sandbox's checks at start (a workspace volume made, trial runs)
ENVIRONMENT_TIMEOUT_S = 600.0
JOB_WAIT_S = 30
TARGET_LATENCY_RATIO = 0.6  # issue 14: pool median <= 0.6 x the baseline's
TARGET_THROUGHPUT_RATIO = 1.5  # issue 14: pool jobs/s >= 1.5 x the baseline's
TARGET_IMPORT_MS = 30.0  # issue 14: import numpy, pandas; print(1) in the warm default env


# ---------------------------------------------------------------- servers


def start_ours(name: str, workdir: Path, pool: bool, **extra: str) -> Server:
    """Our server in the default sandbox (bench/run.py's, sandboxed); the pool off when
    ``pool`` is false, plus ``extra`` settings."""
    if not pool:
        extra = {"INTERPRETER_WARM_POOL": "false", **extra}
    return run_start_ours(workdir, name, INTERPRETER_SANDBOX="bwrap", **extra)


def stop_tree(server: Server) -> list[dict[str, Any]]:
    """Stop the server (bench/run.py's ``stop``), then kill whatever it left running of the
    processes that were under it; those, as found."""
    try:
        below = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        below = []
    stop(server)
    left: list[dict[str, Any]] = []
    for proc in below:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            left.append({"pid": proc.pid, "cmdline": " ".join(proc.cmdline())[:200]})
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    if left:
        print(f"warning: {server.name} left {len(left)} process(es) running: killed {left}")
    return left


def stop_into(server: Server, left: dict[str, list[dict[str, Any]]]) -> None:
    left.setdefault(server.name, []).extend(stop_tree(server))


@contextmanager
def running(
    starters: dict[str, Callable[[], Server]], left: dict[str, list[dict[str, Any]]]
) -> Iterator[dict[str, Server]]:
    """Start every server at once, wait until each answers ``/health``; stop them all when the
    block ends, whatever happens (what each left behind goes into ``left``)."""
    started: dict[str, Server] = {}
    with ExitStack() as stack:
        for name, start in starters.items():
            server = start()
            started[name] = server
            stack.callback(stop_into, server, left)
        for server in started.values():
            wait_healthy(server, START_TIMEOUT_S)
        yield started


# ---------------------------------------------------------------- one job


def ours_job(c: httpx.Client, url: str, code: str) -> tuple[float, dict[str, Any]]:
    """``POST /execute?wait=30``: the seconds until the full result, and the result."""
    t0 = time.perf_counter()
    response = c.post(
        f"{url}/execute", params={"wait": JOB_WAIT_S}, json={"code": code, "language": "python"}
    )
    elapsed = time.perf_counter() - t0
    result = _json(response, "POST /execute?wait=")
    expect(
        result.get("status") == "completed" and result.get("stdout") == "1\n",
        f"{url}: wrong result for {code!r}: {str(result)[:600]}",
    )
    return elapsed, result


def baseline_job(c: httpx.Client, url: str, code: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    response = c.post(f"{url}/execute", json={"code": code, "language": "python"})
    elapsed = time.perf_counter() - t0
    result = _json(response, "baseline POST /execute")
    expect(
        result.get("exit_code") == 0 and result.get("stdout") == "1\n",
        f"baseline: wrong result for {code!r}: {str(result)[:600]}",
    )
    return elapsed, result


def one_job(name: str, c: httpx.Client, url: str, code: str) -> tuple[float, dict[str, Any]]:
    return baseline_job(c, url, code) if name == "baseline" else ours_job(c, url, code)


# ---------------------------------------------------------------- phases


def latency_phase(
    servers: dict[str, Server], code: str, n: int, warmup: int, block: int
) -> dict[str, Any]:
    """N jobs per server one at a time, in blocks whose order rotates by block."""
    names = list(servers)
    times: dict[str, list[float]] = {name: [] for name in names}
    process_ms: dict[str, list[float]] = {name: [] for name in names}
    with ExitStack() as stack:
        clients = {name: stack.enter_context(client()) for name in names}
        for _ in range(warmup):
            for name in names:
                one_job(name, clients[name], servers[name].url, code)
        for b, start in enumerate(range(0, n, block)):
            shift = b % len(names)
            for name in names[shift:] + names[:shift]:
                for _ in range(min(block, n - start)):
                    elapsed, result = one_job(name, clients[name], servers[name].url, code)
                    times[name].append(elapsed)
                    if result.get("execution_time_precise_ms") is not None:
                        process_ms[name].append(float(result["execution_time_precise_ms"]))
            for server in servers.values():
                server.check_alive()
    out: dict[str, Any] = {"code": code, "n": n, "warmup": warmup}
    for name in names:
        out[name] = {"end_to_end_ms": summary(ms(times[name]))}
        if process_ms[name]:
            out[name]["execution_time_precise_ms"] = summary(process_ms[name])
    if "baseline" in servers:
        base = float(out["baseline"]["end_to_end_ms"]["median"])
        out["ratio_median_to_baseline"] = {
            name: round(float(out[name]["end_to_end_ms"]["median"]) / base, 3) for name in OURS
        }
    return out


async def _throughput_once(
    name: str, url: str, duration_s: float
) -> tuple[int, float, list[float]]:
    deadline = time.perf_counter() + duration_s
    latencies: list[float] = []
    body = {"code": TRIVIAL_CODE, "language": "python"}
    params = {} if name == "baseline" else {"wait": JOB_WAIT_S}

    async def worker() -> int:
        done = 0
        limits = httpx.Limits(max_keepalive_connections=2, keepalive_expiry=60.0)
        async with httpx.AsyncClient(trust_env=False, timeout=60.0, limits=limits) as ac:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                result = _json(await ac.post(f"{url}/execute", params=params, json=body), name)
                expect(
                    result.get("stdout") == "1\n",
                    f"{name}: wrong result under load: {str(result)[:300]}",
                )
                latencies.append(time.perf_counter() - t0)
                done += 1
        return done

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return sum(counts), time.perf_counter() - t0, latencies


def throughput_phase(servers: dict[str, Server], duration_s: float) -> dict[str, Any]:
    """``duration_s`` per server in rounds of about ROUND_S, the order rotating by round."""
    names = list(servers)
    totals: dict[str, dict[str, Any]] = {
        name: {"jobs": 0, "elapsed_s": 0.0, "cpu_s": 0.0, "lat": []} for name in names
    }
    by_round: dict[str, list[float]] = {name: [] for name in names}
    rounds = max(2, round(duration_s / ROUND_S))
    for rnd in range(rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            server = servers[name]
            cpu0 = cpu_s(server.proc.pid)
            jobs, elapsed, lat = asyncio.run(
                _throughput_once(name, server.url, duration_s / rounds)
            )
            server.check_alive()
            t = totals[name]
            t["cpu_s"] += cpu_s(server.proc.pid) - cpu0
            t["jobs"] += jobs
            t["elapsed_s"] += elapsed
            t["lat"] += lat
            by_round[name].append(round(jobs / elapsed, 2))
    out: dict[str, Any] = {"clients": CLIENTS, "seconds_each": duration_s, "rounds": rounds}
    for name, t in totals.items():
        out[name] = {
            "jobs": t["jobs"],
            "jobs_per_s": round(t["jobs"] / t["elapsed_s"], 2),
            "jobs_per_s_by_round": by_round[name],
            "latency_under_load_ms": summary(ms(t["lat"])),
            "server_process_cpu_ms_per_job": round(1000 * t["cpu_s"] / max(1, t["jobs"]), 3),
        }
    base = out["baseline"]["jobs_per_s"]
    out["ratio_to_baseline"] = {name: round(out[name]["jobs_per_s"] / base, 3) for name in OURS}
    return out


def mb(value: float) -> float:
    return round(value / 1e6, 1)


def tree_memory(server: Server) -> dict[str, Any]:
    """RSS, PSS and USS of the server and every descendant, added up (RSS counts shared pages
    once per process; PSS splits them), and each warm parent's."""
    root = psutil.Process(server.proc.pid)
    totals = {"rss": 0, "pss": 0, "uss": 0}
    count = 0
    parents: list[dict[str, Any]] = []
    for proc in (root, *root.children(recursive=True)):
        try:
            info = proc.memory_full_info()
            cmdline = proc.cmdline()
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count += 1
        for key in totals:
            totals[key] += getattr(info, key)
        stage = next((arg for arg in cmdline if arg.startswith(PARENT_MARKER)), None)
        if stage is not None:  # "interpreter-warm-parent" starting, ":serving" once up
            parents.append(
                {
                    "pid": proc.pid,
                    "name": name,
                    "stage": stage,
                    "rss_mb": mb(info.rss),
                    "pss_mb": mb(info.pss),
                    "uss_mb": mb(info.uss),
                }
            )
    return {
        "processes": count,
        "server_rss_mb": mb(root.memory_info().rss),
        **{f"tree_{key}_mb": mb(value) for key, value in totals.items()},
        "parents": parents,
    }


def idle_memory(servers: dict[str, Server]) -> dict[str, Any]:
    time.sleep(IDLE_S)
    return {name: tree_memory(server) for name, server in servers.items()}


def pool_metrics(server: Server) -> dict[str, Any]:
    """Every warm pool series of ``/metrics`` (histogram buckets left out), and the starts by
    outcome; empty where the server exports none."""
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        response = c.get(f"{server.url}/metrics")
    expect(response.status_code == 200, f"{server.name}: GET /metrics: {response.status_code}")
    series: dict[str, float] = {}
    starts: dict[str, float] = {}
    for line in response.text.splitlines():
        if not line.startswith(METRIC_PREFIX) or "_bucket{" in line or "_created" in line:
            continue
        key, _, value = line.rpartition(" ")
        try:
            series[key] = float(value)
        except ValueError:
            continue
        match = STARTS.match(key)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            outcome = labels.get("outcome", "?")
            starts[outcome] = starts.get(outcome, 0.0) + series[key]
    return {"starts_by_outcome": starts, "series": series}


def wait_default_environment(server: Server, t0: float) -> float:
    """Seconds from ``t0`` (monotonic) until ``GET /environments`` lists an environment holding
    numpy and pandas."""
    wanted = set(DEFAULT_PACKAGES.split())
    with httpx.Client(trust_env=False, timeout=30.0) as c:
        while time.monotonic() - t0 < ENVIRONMENT_TIMEOUT_S:
            server.check_alive()
            response = c.get(f"{server.url}/environments")
            if response.status_code == 200 and any(
                wanted <= {name.lower() for name in env.get("packages", {})}
                for env in response.json()
            ):
                return round(time.monotonic() - t0, 1)
            time.sleep(1.0)
    raise BenchError(
        f"{server.name}: no default environment after {ENVIRONMENT_TIMEOUT_S:g} s: "
        f"{server.log_tail()}"
    )


def check_default_environment_used(server: Server) -> None:
    with client(90.0) as c:
        _, result = ours_job(c, server.url, IMPORT_CODE)
    packages = (result.get("environment") or {}).get("packages", {})
    expect(
        set(DEFAULT_PACKAGES.split()) <= set(packages),
        f"{server.name}: a job ran outside the default environment: {result.get('environment')}",
    )


def shared_cache(workdir: Path, uv_cache: Path) -> None:
    """Each packages server's uv cache is ``uv_cache``, kept between runs (the environments
    hard-link from it: the same filesystem as the data directories)."""
    uv_cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in OURS:
        packages = workdir / f"{name}-packages-data" / "packages"
        packages.mkdir(parents=True)
        (packages / "cache").symlink_to(uv_cache, target_is_directory=True)


def packages_phase(
    workdir: Path, uv_cache: Path, n: int, left: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    shared_cache(workdir, uv_cache)
    extra = {"INTERPRETER_DEFAULT_PACKAGES": DEFAULT_PACKAGES}
    starters: dict[str, Callable[[], Server]] = {
        name: partial(start_ours, f"{name}-packages", workdir, name == "pool", **extra)
        for name in OURS
    }
    out: dict[str, Any] = {"default_packages": DEFAULT_PACKAGES}
    with running(starters, left) as servers:
        t0 = time.monotonic()  # both servers answer /health: each builds its own
        out["environment_ready_s"] = {
            name: wait_default_environment(server, t0) for name, server in servers.items()
        }
        for server in servers.values():
            check_default_environment_used(server)
        out["import"] = latency_phase(servers, IMPORT_CODE, n, PACKAGES_WARMUP, PACKAGES_BLOCK)
        out["print"] = latency_phase(servers, TRIVIAL_CODE, n, PACKAGES_WARMUP, PACKAGES_BLOCK)
        out["idle_memory"] = idle_memory(servers)
        out["metrics"] = {name: pool_metrics(server) for name, server in servers.items()}
    pool_ms = float(out["import"]["pool"]["end_to_end_ms"]["median"])
    out["import_target_ms"] = TARGET_IMPORT_MS
    out["import_meets_target"] = pool_ms <= TARGET_IMPORT_MS
    return out


# ---------------------------------------------------------------- report

Row = tuple[str, Any, Any, Any, str]
COLUMNS = (*OURS, "baseline")


def row(label: str, values: Iterable[Any], note: str = "") -> Row:
    """A table row: pool, cold and baseline (missing ones blank)."""
    v = [*values, "", "", ""]
    return (label, v[0], v[1], v[2], note)


def parents_cell(parents: list[dict[str, Any]]) -> str:
    """How many warm parents, and the range of their RSS (one pool per environment: they
    differ by what each imported)."""
    sizes = sorted(p["rss_mb"] for p in parents)
    if not sizes:
        return "0"
    return f"{len(sizes)}: {sizes[0]:g}" + (f"-{sizes[-1]:g}" if sizes[-1] != sizes[0] else "")


def memory_rows(memory: dict[str, Any]) -> list[Row]:
    def each(key: str) -> list[Any]:
        return [memory[n][key] if n in memory else "" for n in COLUMNS]

    parents = [parents_cell(memory[n]["parents"]) for n in OURS]
    return [
        row("idle RSS MB, server process", each("server_rss_mb")),
        row("idle RSS MB, process tree", each("tree_rss_mb"), "server + every descendant, summed"),
        row("idle PSS MB, process tree", each("tree_pss_mb"), "shared pages split"),
        row("processes in the tree", each("processes")),
        row("warm parents: count, RSS MB", parents, f"cmdline holds {PARENT_MARKER}"),
    ]


def starts_row(metrics: dict[str, Any]) -> Row:
    def text(name: str) -> str:
        starts = metrics[name]["starts_by_outcome"]
        return " ".join(f"{k}={v:g}" for k, v in sorted(starts.items())) or "none"

    return row("pool starts (/metrics)", [text(n) for n in OURS], "by outcome")


def table(report: dict[str, Any]) -> str:
    lat, thr = report["latency"], report["throughput"]

    def e2e(section: dict[str, Any], key: str, names: tuple[str, ...] = COLUMNS) -> list[Any]:
        return [section[n]["end_to_end_ms"][key] for n in names]

    rows: list[Row] = [
        row("print(1) one trip, median ms", e2e(lat, "median"), f"N={lat['n']} each"),
        row("print(1) one trip, p90 ms", e2e(lat, "p90")),
        row(
            "  ratio to the baseline (medians)",
            lat["ratio_median_to_baseline"].values(),
            f"target pool <= {TARGET_LATENCY_RATIO}",
        ),
        row(
            "  process time in the server, median ms",
            [lat[n].get("execution_time_precise_ms", {}).get("median", "") for n in OURS],
            "execution_time_precise_ms",
        ),
        row(
            f"jobs/s, {CLIENTS} clients",
            [thr[n]["jobs_per_s"] for n in COLUMNS],
            f"{thr['seconds_each']:g} s each",
        ),
        row(
            "  ratio to the baseline",
            thr["ratio_to_baseline"].values(),
            f"target pool >= {TARGET_THROUGHPUT_RATIO}",
        ),
        row(
            "  latency under load, median ms",
            [thr[n]["latency_under_load_ms"]["median"] for n in COLUMNS],
        ),
        *memory_rows(report["idle_memory"]),
        starts_row(report["metrics"]),
    ]
    pkg = report.get("packages")
    if pkg:
        imp = pkg["import"]
        rows += [
            row(f"-- INTERPRETER_DEFAULT_PACKAGES={DEFAULT_PACKAGES}", []),
            row("default environment ready after, s", pkg["environment_ready_s"].values()),
            row(
                "import numpy, pandas; print(1), median ms",
                e2e(imp, "median", OURS),
                f"N={imp['n']} each; target pool <= {TARGET_IMPORT_MS:g}",
            ),
            row("  p90 ms", e2e(imp, "p90", OURS)),
            row("print(1) in the default env, median ms", e2e(pkg["print"], "median", OURS)),
            *memory_rows(pkg["idle_memory"]),
            starts_row(pkg["metrics"]),
        ]
    lines = [f"{'':42} {'pool':>12} {'cold':>12} {'baseline':>10}  notes", "-" * 104]
    lines += [f"{r[0]:42} {r[1]!s:>12} {r[2]!s:>12} {r[3]!s:>10}  {r[4]}" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def measure(args: argparse.Namespace, report: dict[str, Any], workdir: Path) -> None:
    left: dict[str, list[dict[str, Any]]] = {}
    report["left_running_after_stop"] = left
    starters: dict[str, Callable[[], Server]] = {
        "pool": lambda: start_ours("pool", workdir, pool=True),
        "cold": lambda: start_ours("cold", workdir, pool=False),
        "baseline": lambda: start_baseline(workdir),
    }
    with running(starters, left) as servers:
        t0 = time.perf_counter()
        print(f"... print(1), N={args.n} each", end="", flush=True)
        report["latency"] = latency_phase(servers, TRIVIAL_CODE, args.n, WARMUP, BLOCK)
        print(f" ({time.perf_counter() - t0:.1f} s)\n... throughput", end="", flush=True)
        report["throughput"] = throughput_phase(servers, args.seconds)
        print(f" ({time.perf_counter() - t0:.1f} s)", flush=True)
        report["idle_memory"] = idle_memory(servers)
        report["metrics"] = {name: pool_metrics(servers[name]) for name in OURS}
    if args.no_packages:
        return
    t0 = time.perf_counter()
    print("... default packages (the environment built at start)", end="", flush=True)
    report["packages"] = packages_phase(workdir, args.uv_cache, args.packages_n, left)
    print(f" ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=30, 4 s, 10 package jobs")
    parser.add_argument("-n", type=int, default=None, help="print(1) jobs each (100; quick 30)")
    parser.add_argument("--seconds", type=float, default=None, help="throughput (10; quick 4)")
    parser.add_argument("--packages-n", type=int, default=None, help="jobs each (30; quick 10)")
    parser.add_argument("--no-packages", action="store_true", help="skip the numpy/pandas part")
    parser.add_argument("--uv-cache", type=Path, default=STATE_DIR / "uv-cache")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results/warm_pool.json"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (30 if args.quick else 100)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.packages_n = args.packages_n or (10 if args.quick else 30)
    if os.geteuid() != 0:
        print("warning: not root: the servers' bubblewrap sandbox will not start", file=sys.stderr)
    # SIGTERM unwinds like an error, so that every server is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report: dict[str, Any] = {
        "machine": machine_info(),
        "quick": args.quick,
        "loadavg_1m_at_start": load_at_start(),
    }
    t_start = time.perf_counter()
    args.uv_cache.parent.mkdir(parents=True, exist_ok=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # next to uv's cache: the package environments hard-link from it
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
    if not report["metrics"]["pool"]["starts_by_outcome"]:
        ran = "warm parents were up" if report["idle_memory"]["pool"]["parents"] else "it ran cold"
        print(f"note: the pool server exports no interpreter_warm_pool_starts_total ({ran})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
