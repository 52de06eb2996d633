"""``interpreter jobs list|show|cancel|logs`` and ``interpreter files``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from interpreter.cli.output import UsageError, print_json, print_table
from interpreter.client import Client

__all__ = ["files_command", "jobs_command"]


def jobs_command(client: Client, args: argparse.Namespace) -> int:
    if args.jobs_command == "list":
        return _list(client, args)
    if args.jobs_command == "show":
        return _show(client, args)
    if args.jobs_command == "cancel":
        return _cancel(client, args)
    return _logs(client, args)


def _list(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(status=args.status, limit=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    rows = [
        (
            job.get("job_id"),
            job.get("status"),
            (job.get("metadata") or {}).get("language"),
            job.get("created_at"),
            _ms(job.get("execution_time_ms")),
        )
        for job in jobs
    ]
    print_table(("JOB", "STATUS", "LANGUAGE", "CREATED", "TIME"), rows)
    return 0


def _show(client: Client, args: argparse.Namespace) -> int:
    result = client.job(args.job).full_result()
    if args.json:
        print_json(result)
        return 0
    fields = (
        "job_id",
        "status",
        "exit_code",
        "signal",
        "termination_reason",
        "error_message",
        "created_at",
        "started_at",
        "completed_at",
        "execution_time_ms",
    )
    for name in fields:
        if result.get(name) is not None:
            print(f"{name + ':':20}{result[name]}")
    environment = result.get("environment")
    if isinstance(environment, dict):
        installed = ", ".join(
            f"{name} {version}" for name, version in (environment.get("packages") or {}).items()
        )
        print(f"{'packages:':20}{installed} (environment {environment.get('id')})")
    for name in ("files_created", "files_modified", "files_deleted"):
        if result.get(name):
            print(f"{name + ':':20}{', '.join(str(p) for p in result[name])}")
    for name in ("stdout", "stderr"):
        text = result.get(name) or ""
        print(f"{name + ':':20}{len(text.encode())} bytes (interpreter jobs logs {args.job})")
    return 0


def _cancel(client: Client, args: argparse.Namespace) -> int:
    answer = client.job(args.job).cancel()
    if args.json:
        print_json(answer)
    else:
        print(f"job {args.job}: {answer.get('status', 'cancelled')}")
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    if args.follow and not args.json:
        for event in job.stream():
            if event.event in ("stdout", "stderr"):
                stream = sys.stdout if event.event == "stdout" else sys.stderr
                stream.buffer.write(event.bytes)
                stream.buffer.flush()
        return 0
    if args.follow:
        job.wait()
    result = job.full_result()
    if args.json:
        print_json({key: result.get(key) for key in ("job_id", "status", "stdout", "stderr")})
        return 0
    sys.stdout.write(result.get("stdout") or "")
    sys.stdout.flush()
    sys.stderr.write(result.get("stderr") or "")
    return 0


def files_command(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job)
    if args.archive:
        if args.path is not None:
            raise UsageError("give PATH or --archive, not both")
        if args.output is None and sys.stdout.isatty():
            raise UsageError("the archive is binary: give -o FILE (or pipe it)")
        return _save(job.archive(), args.output)
    if args.path is not None:
        return _save(job.download(args.path), args.output)
    if args.output is not None:
        raise UsageError("-o needs PATH or --archive")
    files = job.files()
    if args.json:
        print_json([dataclasses.asdict(info) for info in files])
        return 0
    print_table(
        ("PATH", "SIZE", "MODIFIED"), [(info.path, info.size, info.modified_at) for info in files]
    )
    return 0


def _save(data: bytes, output: str | None) -> int:
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc
    return 0


def _ms(value: Any) -> str:
    return "" if value is None else f"{value} ms"
