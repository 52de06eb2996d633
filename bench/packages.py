"""Per-job packages: what a job asking for numpy and pandas pays, against uv's own install.

    .venv/bin/python bench/packages.py [--reps 3] [-n 10] [--sandbox none|bwrap]
                                       [--out bench/results/packages.json]

Starts our server as bench/run.py does (SQLite, /usr/bin/python3, no sandbox unless asked), once
per repetition with a fresh data directory so that uv's cache starts empty, and measures, each a
median over the repetitions:

- **a. cold**: the first job with ``"packages": ["numpy", "pandas"]`` on the fresh server, from
  ``POST /execute`` to its final result, with the result's ``resolve_ms`` and ``install_ms``;
  baseline: ``uv venv`` + ``uv pip install numpy pandas`` into a new venv with an empty cache of
  its own (the same uv binary, ``uv.find_uv_bin()``), in the same repetition;
- **b. warm cache**: the environment removed with ``DELETE /environments/{id}`` (the cache and the
  kept resolution stay), the same job again; baselines: uv's own install into a new venv from its
  now warm cache, plain and with ``--compile-bytecode`` (the server compiles: its environments are
  read-only to jobs, which could not write a ``.pyc``);
- **c. repeat**: the environment exists: ``print(1)`` with the packages against ``print(1)``
  without, N each in alternating blocks;
- **d. default packages**: the server restarted on the last repetition's data directory with
  ``INTERPRETER_DEFAULT_PACKAGES="numpy pandas"`` (its environment already built): a job timing
  ``import numpy, pandas`` with ``time.perf_counter`` inside, against a ``pass`` job, N each.

Needs the registry (PyPI). Prints a markdown table and writes every figure as JSON. Each
server is stopped at the end of its phase, also when the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from uv import find_uv_bin

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    FINAL,
    JOB_PYTHON,
    BenchError,
    Server,
    _json,
    base_env,
    free_port,
    load_at_start,
    machine_info,
    spawn,
    stop,
    summary,
    wait_healthy,
)

PACKAGES = ["numpy", "pandas"]
DEFAULT_PACKAGES = "numpy pandas"
CHECK_CODE = "import numpy, pandas; print(numpy.__version__, pandas.__version__)"
REPEAT_CODE = "print(1)"
IMPORT_CODE = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import numpy, pandas\n"
    "print((time.perf_counter() - t0) * 1000)\n"
)
PASS_CODE = "pass"
BLOCK = 5
JOB_DEADLINE_S = 600.0


# ---------------------------------------------------------------- the server


@contextmanager
def server(workdir: Path, data_dir: Path, sandbox: str, **extra: str) -> Iterator[Server]:
    """Our server on ``data_dir`` (made if missing), as bench/run.py starts it, plus ``extra``
    settings; stopped when the block ends."""
    port = free_port()
    data_dir.mkdir(exist_ok=True)
    env = base_env() | {
        "INTERPRETER_PORT": str(port),
        "INTERPRETER_HOST": "127.0.0.1",
        "INTERPRETER_DATA_DIR": str(data_dir),
        "INTERPRETER_LOG_LEVEL": "WARNING",
        "INTERPRETER_PYTHON_COMMAND": JOB_PYTHON,
        "INTERPRETER_RATE_LIMIT": "1000000/minute",
        "INTERPRETER_SANDBOX": sandbox,
        **extra,
    }
    name = f"ours-{data_dir.name}-{len(list(workdir.glob('ours-*.log')))}"
    started = spawn(name, [sys.executable, "-m", "interpreter.server"], env, port, workdir)
    try:
        wait_healthy(started)
        yield started
    finally:
        stop(started)


def job(client: httpx.Client, url: str, code: str, packages: list[str] | None) -> dict[str, Any]:
    """POST /execute, then long polls of the full result until final: the result, with
    ``wall_ms`` (POST to final) added. ``BenchError`` unless it completed."""
    body: dict[str, Any] = {"code": code, "language": "python"}
    if packages is not None:
        body["packages"] = packages
    t0 = time.perf_counter()
    response = client.post(f"{url}/execute", json=body)
    if response.status_code not in (200, 201, 202):
        raise BenchError(f"POST /execute: HTTP {response.status_code}: {response.text[:300]}")
    job_id = response.json()["job_id"]
    while True:
        result = _json(
            client.get(f"{url}/jobs/{job_id}/results", params={"wait": 30}), "GET results"
        )
        if result["status"] in FINAL:
            break
        if time.perf_counter() - t0 > JOB_DEADLINE_S:
            raise BenchError(f"job {job_id} not final after {JOB_DEADLINE_S:g} s")
    wall_ms = (time.perf_counter() - t0) * 1000
    if result["status"] != "completed":
        raise BenchError(
            f"job {job_id} ended {result['status']} ({result.get('termination_reason')}): "
            f"{result.get('error_message')} {str(result.get('stderr'))[-300:]}"
        )
    return {**result, "wall_ms": wall_ms}


def environment_figures(result: dict[str, Any]) -> dict[str, Any]:
    env = result.get("environment")
    if not env:
        raise BenchError(f"the job reports no environment: {result}")
    return {
        "wall_ms": round(result["wall_ms"], 1),
        "resolve_ms": env["resolve_ms"],
        "install_ms": env["install_ms"],
        "cached": env["cached"],
        "execution_ms": result.get("execution_time_ms"),
        "environment": env["id"],
        "packages": env["packages"],
    }


# ---------------------------------------------------------------- uv's own install


def uv_install(root: Path, cache: Path, *flags: str) -> float:
    """``uv venv`` + ``uv pip install numpy pandas`` into a new venv under ``root`` with
    ``cache``; milliseconds, both commands together."""
    venv = root / f"venv-{len(list(root.glob('venv-*')))}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root),
        "UV_CACHE_DIR": str(cache),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    env |= {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    uv = str(find_uv_bin())
    t0 = time.perf_counter()
    for argv in (
        [uv, "venv", "--quiet", "--python", JOB_PYTHON, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *flags]
        + PACKAGES,
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv[1:3])} failed: {done.stderr[-500:]}")
    elapsed = (time.perf_counter() - t0) * 1000
    shutil.rmtree(venv)
    return elapsed


# ---------------------------------------------------------------- phases


def first_jobs(workdir: Path, rep: int, sandbox: str, n: int) -> tuple[dict[str, Any], Path]:
    """One repetition of a, b and c, on a fresh server; its figures and its data directory."""
    out: dict[str, Any] = {}
    data_dir = workdir / f"data-{rep}"
    uv_root = workdir / f"uv-{rep}"
    uv_root.mkdir()
    uv_cache = uv_root / "cache"
    ours_first = rep % 2 == 0  # alternate who goes first: both share the machine's noise

    def uv_cold() -> None:
        out["uv_cold_ms"] = round(uv_install(uv_root, uv_cache), 1)

    if not ours_first:
        uv_cold()
    with (
        server(workdir, data_dir, sandbox) as srv,
        httpx.Client(trust_env=False, timeout=90.0) as client,
    ):
        cold = environment_figures(job(client, srv.url, CHECK_CODE, PACKAGES))
        if cold["cached"]:
            raise BenchError("the first job found its environment already built")
        out["cold"] = cold
        if ours_first:
            uv_cold()
        # b: the environment removed, the cache and the kept resolution stay
        deleted = client.delete(f"{srv.url}/environments/{cold['environment']}")
        if deleted.status_code != 204:
            raise BenchError(f"DELETE /environments: HTTP {deleted.status_code}: {deleted.text}")
        warm_uv: dict[str, float] = {}
        if not ours_first:
            warm_uv["plain"] = uv_install(uv_root, uv_cache)
        warm = environment_figures(job(client, srv.url, CHECK_CODE, PACKAGES))
        if warm["cached"]:
            raise BenchError("the environment was still there after DELETE /environments")
        out["warm"] = warm
        if ours_first:
            warm_uv["plain"] = uv_install(uv_root, uv_cache)
        warm_uv["compiled"] = uv_install(uv_root, uv_cache, "--compile-bytecode")
        out["uv_warm_ms"] = round(warm_uv["plain"], 1)
        out["uv_warm_compiled_ms"] = round(warm_uv["compiled"], 1)
        # c: the environment exists; with packages against without, alternating blocks
        out["repeat"] = alternate(
            n,
            with_packages=lambda: repeat_job(client, srv.url, PACKAGES),
            without=lambda: repeat_job(client, srv.url, None),
        )
    shutil.rmtree(uv_root, ignore_errors=True)
    return out, data_dir


def repeat_job(client: httpx.Client, url: str, packages: list[str] | None) -> float:
    result = job(client, url, REPEAT_CODE, packages)
    if result.get("stdout") != "1\n":
        raise BenchError(f"print(1) answered {result.get('stdout')!r}")
    if packages is not None and not (result.get("environment") or {}).get("cached"):
        raise BenchError(f"a repeat job built its environment again: {result.get('environment')}")
    return float(result["wall_ms"])


def alternate(n: int, **ways: Callable[[], float]) -> dict[str, list[float]]:
    """Each way N times, in alternating blocks of BLOCK (one untimed run of each first)."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for fn in ways.values():
        fn()
    names = list(ways)
    for block in range(0, n, BLOCK):
        order = names if (block // BLOCK) % 2 == 0 else names[::-1]
        for name in order:
            times[name] += [ways[name]() for _ in range(min(BLOCK, n - block))]
    return times


def default_packages(workdir: Path, data_dir: Path, sandbox: str, n: int) -> dict[str, Any]:
    """d: ``import numpy, pandas`` in the default environment against ``pass``."""
    imports_ms: list[float] = []

    def import_job() -> float:
        result = job(client, srv.url, IMPORT_CODE, None)
        env = result.get("environment") or {}
        if set(env.get("packages", {})) < {"numpy", "pandas"}:
            raise BenchError(f"the default environment was not used: {env}")
        imports_ms.append(float(result["stdout"].strip()))
        return float(result["wall_ms"])

    def pass_job() -> float:
        return float(job(client, srv.url, PASS_CODE, None)["wall_ms"])

    extra = {"INTERPRETER_DEFAULT_PACKAGES": DEFAULT_PACKAGES}
    with (
        server(workdir, data_dir, sandbox, **extra) as srv,
        httpx.Client(trust_env=False, timeout=90.0) as client,
    ):
        times = alternate(n, import_numpy_pandas=import_job, python_pass=pass_job)
    return {**times, "import_in_job_ms": imports_ms[1:]}  # the untimed first run left out


# ---------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def collect(reps: list[dict[str, Any]], default: dict[str, Any]) -> dict[str, Any]:
    def over(key: str, field: str | None = None) -> list[float]:
        return [float(r[key] if field is None else r[key][field]) for r in reps]

    repeat_with = [t for r in reps for t in r["repeat"]["with_packages"]]
    repeat_without = [t for r in reps for t in r["repeat"]["without"]]
    return {
        "cold": {
            "wall_ms": med(over("cold", "wall_ms")),
            "resolve_ms": med(over("cold", "resolve_ms")),
            "install_ms": med(over("cold", "install_ms")),
            "uv_ms": med(over("uv_cold_ms")),
        },
        "warm": {
            "wall_ms": med(over("warm", "wall_ms")),
            "resolve_ms": med(over("warm", "resolve_ms")),
            "install_ms": med(over("warm", "install_ms")),
            "uv_ms": med(over("uv_warm_ms")),
            "uv_compiled_ms": med(over("uv_warm_compiled_ms")),
        },
        "repeat": {
            "with_packages_ms": summary(repeat_with),
            "without_ms": summary(repeat_without),
        },
        "default": {
            "import_job_ms": summary(default["import_numpy_pandas"]),
            "pass_job_ms": summary(default["python_pass"]),
            "import_in_job_ms": summary(default["import_in_job_ms"]),
        },
    }


def table(figures: dict[str, Any], reps: int, n: int) -> str:
    cold, warm = figures["cold"], figures["warm"]
    rep, default = figures["repeat"], figures["default"]
    rows = [
        "| numpy + pandas | ours | uv's own | |",
        "|---|---|---|---|",
        f"| a. first job, cold cache (median of {reps}): POST to final | "
        f"{cold['wall_ms']:.0f} ms | {cold['uv_ms']:.0f} ms (`uv venv` + `uv pip install`) | "
        f"resolve {cold['resolve_ms']:.0f} ms, install {cold['install_ms']:.0f} ms |",
        f"| b. new environment, warm cache (median of {reps}): POST to final | "
        f"{warm['wall_ms']:.0f} ms | {warm['uv_ms']:.0f} ms; "
        f"{warm['uv_compiled_ms']:.0f} ms with `--compile-bytecode` | "
        f"resolve {warm['resolve_ms']:.0f} ms (kept lock), install {warm['install_ms']:.0f} ms |",
        f"| c. repeat, environment exists: `print(1)` (median of {reps}×{n}) | "
        f"{rep['with_packages_ms']['median']:.1f} ms | "
        f"{rep['without_ms']['median']:.1f} ms without packages | "
        f"{rep['with_packages_ms']['median'] - rep['without_ms']['median']:+.1f} ms |",
        f"| d. default packages: `import numpy, pandas` job (median of {n}) | "
        f"{default['import_job_ms']['median']:.1f} ms | "
        f"{default['pass_job_ms']['median']:.1f} ms (`pass` job, same server) | "
        f"import inside the job {default['import_in_job_ms']['median']:.1f} ms |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh servers for a, b and c")
    parser.add_argument("-n", type=int, default=10, help="jobs each way in c and d")
    parser.add_argument("--sandbox", choices=("none", "bwrap"), default="none")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load = load_at_start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-packages-") as tmp:
        workdir = Path(tmp)
        reps: list[dict[str, Any]] = []
        data_dir = workdir
        for rep in range(args.reps):
            figures, data_dir = first_jobs(workdir, rep, args.sandbox, args.n)
            reps.append(figures)
            print(
                f"rep {rep + 1}: cold {figures['cold']['wall_ms']:.0f} ms "
                f"(uv {figures['uv_cold_ms']:.0f}), warm {figures['warm']['wall_ms']:.0f} ms "
                f"(uv {figures['uv_warm_ms']:.0f} / {figures['uv_warm_compiled_ms']:.0f})",
                flush=True,
            )
        default = default_packages(workdir, data_dir, args.sandbox, args.n)
    figures = collect(reps, default)
    report = {
        "machine": machine_info(),
        "load_at_start": load,
        "load_at_end": os.getloadavg()[0],
        "sandbox": args.sandbox,
        "reps": args.reps,
        "n": args.n,
        "packages": reps[0]["cold"]["packages"],
        "figures": figures,
        "runs": reps,
        "default_runs": default,
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(table(figures, args.reps, args.n))
    print(
        f"packages: {report['packages']}; sandbox {args.sandbox}; load average "
        f"{load:.2f} -> {report['load_at_end']:.2f}; {report['total_s']:.0f} s"
    )
    out = args.out or Path(__file__).resolve().parent / "results" / "packages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
