"""Every test is marked with its tier, the folder it lives in, so that one tier runs alone:
`pytest -m unit` (pure: no process, no server, seconds), `app` (the app in process with real job
processes), `checks` (the repository's files: docs, Dockerfile, manifests), `integration` (the
store and queue on real databases), `acceptance` (real server processes over HTTP), `sandbox`,
`security`, `scaleout` (replicas and workers on PostgreSQL), `faults` (a private PostgreSQL
stopped under load), `client` (the Python SDK, interpreter.client, against real server
processes). The README's test command runs them all."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "app", "checks", "integration", "acceptance", "sandbox", "security", "scaleout")
TIERS += ("faults", "client")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.fspath).relative_to(HERE).parts[0]
        assert tier in TIERS, f"{item.nodeid}: tests live in a tier's folder, one of {TIERS}"
        if tier == "unit" and any(item.get_closest_marker(name) for name in TIERS):
            continue  # a test of a unit's module that needs more (mount(8)) names its tier
        item.add_marker(getattr(pytest.mark, tier))
