"""The sandbox tier: limits, cgroups and bubblewrap, with real processes.

The API fixtures are the unit tier's (the real app in process with a MemoryStore).
"""

from __future__ import annotations

from tests.app.conftest import _isolated_environment, api, make_api  # noqa: F401
