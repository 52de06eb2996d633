"""What the sandbox costs a trivial job: the runner with bwrap + a cgroup against the runner bare.

    .venv/bin/python bench/sandbox.py [-n 200] [--out bench/results/sandbox.json]

Runs ``print(1)`` (python), ``echo 1`` (shell) and ``console.log(1)`` (javascript) through
``JobRunner.run`` (working directory, environment, spawn, output capture, file tracking, and with
the sandbox: cgroup creation with limits, the gate, rlimits, bwrap, cgroup accounting), alternating
a sandboxed and an unsandboxed job so that both share the machine's noise. Prints the median and
p90 of each and the median of the per-pair difference. Needs root (cgroups) and bubblewrap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interpreter.config import Settings  # noqa: E402
from interpreter.job import Job, JobRequest, JobStatus, new_job_id  # noqa: E402
from interpreter.languages import LanguageRegistry  # noqa: E402
from interpreter.running.runner import JobRunner  # noqa: E402
from interpreter.workspace import JobPaths  # noqa: E402

JOBS = {"python": "print(1)", "shell": "echo 1", "javascript": "console.log(1)"}


def runner(settings: Settings) -> JobRunner:
    """The server's own runner for ``settings`` (sandbox included, as INTERPRETER_SANDBOX says)."""
    registry = LanguageRegistry.from_settings(settings)
    paths = JobPaths(settings.data_dir, settings.workspaces)
    paths.ensure()
    return JobRunner.from_settings(settings, registry, paths)


async def one(run: JobRunner, language: str) -> float:
    job = Job(new_job_id(), JobRequest(code=JOBS[language], language=language, timeout_s=10))
    started = time.perf_counter()
    finish = await run.run(job, asyncio.Event())
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert finish.status is JobStatus.COMPLETED, finish.error_message
    return elapsed_ms


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
        "min_ms": round(ordered[0], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="jobs per language and mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sandbox.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        bare = runner(Settings(data_dir=base / "bare", sandbox="none"))
        boxed = runner(Settings(data_dir=base / "boxed", sandbox="bwrap"))
        figures: dict[str, dict[str, object]] = {}
        try:
            for language in JOBS:
                for _ in range(10):  # warm up both
                    await one(bare, language)
                    await one(boxed, language)
                plain, sandboxed, added = [], [], []
                for _ in range(args.n):
                    a = await one(bare, language)
                    b = await one(boxed, language)
                    plain.append(a)
                    sandboxed.append(b)
                    added.append(b - a)
                figures[language] = {
                    "none": summary(plain),
                    "bwrap": summary(sandboxed),
                    "added_median_ms": round(statistics.median(added), 2),
                }
                print(
                    f"{language:11} none {figures[language]['none']['median_ms']:6.2f} ms  "
                    f"bwrap {figures[language]['bwrap']['median_ms']:6.2f} ms  "
                    f"added {figures[language]['added_median_ms']:5.2f} ms (median of pairs, "
                    f"n={args.n})"
                )
        finally:
            bare.close()
            boxed.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "figures": figures,
        "machine": {"kernel": platform.release(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
