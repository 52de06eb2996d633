"""What the hardened launch costs a trivial job, against the launch it replaced, in one run.

    .venv/bin/python bench/hardening.py [-n 100] [--out bench/results/hardening.json]

Three runners, the server's own ``JobRunner`` each, alternating job by job so that they share
the machine's noise (python ``print(1)``, shell ``echo 1``, javascript ``console.log(1)``):

- **none**: no sandbox (``INTERPRETER_SANDBOX=none``), the floor;
- **before**: bubblewrap as the previous release launched it, rebuilt here: bwrap run by root (the
  job is host uid 0 behind its user namespace), no ``/proc`` masks, the working directory bound
  by path, no filesystem of its own; same cgroup, gate, rlimits and seccomp program;
- **hardened**: the server's sandbox as it is: ``setpriv`` to a leased uid, ``/proc`` masks, the
  directory opened beneath the root and bound by descriptor through an overlay on a capped ext4
  volume of its own, the job's changes applied to the directory afterwards.

Prints the median and p90 of each and the median of the per-pair difference (hardened - before).
Needs root (cgroups, mounts) and bubblewrap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sandbox import JOBS, one, runner, summary  # noqa: E402
from interpreter.config import Settings  # noqa: E402
from interpreter.running.runner import JobRunner  # noqa: E402
from interpreter.sandbox import bwrap, seccomp  # noqa: E402
from interpreter.sandbox.base import CgroupConfinement, Prepared, SandboxJob  # noqa: E402


class BeforeHardening(bwrap.BwrapSandbox):
    """The launch this release replaced, kept here only to measure against."""

    def prepare(self, job: SandboxJob) -> Prepared:
        cgroup = self.cgroups.create(job.job_id, job.limits)
        static = bwrap.static_args(self.tmp_bytes, self.run.etc, [], ())
        argv = [self.bwrap, *static]
        fds: list[int] = []
        if self.seccomp is not None:
            fds.append(seccomp.memfd(self.seccomp))
            argv += ["--seccomp", str(fds[-1])]
        cwd = str(job.cwd)
        argv += ["--bind", cwd, cwd]
        if job.code is not None:
            fds.append(seccomp.memfd(job.code[1], "code"))
            argv += ["--ro-bind-data", str(fds[-1]), job.code[0]]
        argv += ["--remount-ro", "/", "--chdir", cwd]
        for name, value in job.env.items():
            argv += ["--setenv", name, value]
        argv += ["--", *job.argv]
        confinement = CgroupConfinement(cgroup, job.limits, python=job.language == "python")
        return Prepared(
            argv=tuple(argv),
            env={},
            confinement=confinement,
            pass_fds=tuple(fds),
            cleanup=cgroup,
            spawn_cwd=Path("/"),
        )

    def collect(self, prepared: Prepared) -> str | None:
        return None

    def release(self, prepared: Prepared) -> None:
        bwrap._close_all(list(prepared.pass_fds))
        self.remover.remove(prepared.cleanup)  # type: ignore[arg-type]


def before(settings: Settings) -> JobRunner:
    made = runner(settings)
    sandbox = made.sandbox
    assert isinstance(sandbox, bwrap.BwrapSandbox)
    sandbox.__class__ = BeforeHardening
    return made


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="jobs per language and mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results/hardening.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        modes = {
            "none": runner(Settings(data_dir=base / "none", sandbox="none")),
            "before": before(Settings(data_dir=base / "before", sandbox="bwrap")),
            "hardened": runner(Settings(data_dir=base / "hardened", sandbox="bwrap")),
        }
        figures: dict[str, dict[str, object]] = {}
        try:
            for language in JOBS:
                for _ in range(10):  # warm up every mode
                    for run in modes.values():
                        await one(run, language)
                timings: dict[str, list[float]] = {mode: [] for mode in modes}
                added: list[float] = []
                for _ in range(args.n):
                    for mode, run in modes.items():
                        timings[mode].append(await one(run, language))
                    added.append(timings["hardened"][-1] - timings["before"][-1])
                figures[language] = {
                    **{mode: summary(values) for mode, values in timings.items()},
                    "hardened_minus_before_median_ms": round(statistics.median(added), 2),
                }
                medians = "  ".join(
                    f"{mode} {summary(values)['median_ms']:6.2f} ms"
                    for mode, values in timings.items()
                )
                print(
                    f"{language:11} {medians}  hardened - before "
                    f"{statistics.median(added):+5.2f} ms (median of pairs, n={args.n})"
                )
        finally:
            for run in modes.values():
                run.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "figures": figures,
        "machine": {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
