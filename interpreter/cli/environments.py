"""``interpreter environments list|build|delete``: the server's package environments (see
docs/packages.md). Building one ahead makes the first job that names its packages start at once;
deleting one frees its disk. A refusal (an unknown id, one a running job holds, packages that
cannot be had) is a ``ClientError``: one line and exit 2, as for the other commands."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from interpreter.cli.output import print_json, print_table
from interpreter.client import Client, EnvironmentInfo

__all__ = ["environments_command"]

_BUILD_ONLY = ("cached", "resolve_ms", "install_ms")  # None in a listing: left out of its JSON


def environments_command(client: Client, args: argparse.Namespace) -> int:
    if args.environments_command == "list":
        return _list(client, args)
    if args.environments_command == "build":
        return _build(client, args)
    return _delete(client, args)


def _list(client: Client, args: argparse.Namespace) -> int:
    environments = client.environments()
    if args.json:
        print_json([_listed(info) for info in environments])
        return 0
    rows = [
        (
            info.id,
            _packages(info),
            _size(info.size_bytes),
            info.last_used_at,
            "yes" if info.in_use else "no",
        )
        for info in environments
    ]
    print_table(("ENVIRONMENT", "PACKAGES", "SIZE", "LAST USED", "IN USE"), rows)
    return 0


def _build(client: Client, args: argparse.Namespace) -> int:
    info = client.build_environment(args.packages)
    if args.json:
        print_json(dataclasses.asdict(info))
        return 0
    fields = (
        ("id", info.id),
        ("packages", _packages(info)),
        ("status", "cached" if info.cached else "installed"),
        ("resolve", _ms(info.resolve_ms)),
        ("install", _ms(info.install_ms)),
        ("size", _size(info.size_bytes)),
    )
    for name, value in fields:
        print(f"{name + ':':20}{value}")
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_environment(args.environment)
    if args.json:
        print_json({"id": args.environment, "deleted": True})
    else:
        print(f"environment {args.environment}: deleted")
    return 0


def _listed(info: EnvironmentInfo) -> dict[str, Any]:
    document = dataclasses.asdict(info)
    for name in _BUILD_ONLY:
        document.pop(name, None)
    return document


def _packages(info: EnvironmentInfo) -> str:
    return " ".join(f"{name}=={version}" for name, version in sorted(info.packages.items()))


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} ms"


def _size(size: int) -> str:
    """Bytes for people: 1023 B, 4.0 KiB, 12.3 MiB."""
    if size < 1024:
        return f"{size} B"
    amount = size / 1024
    for unit in ("KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"
