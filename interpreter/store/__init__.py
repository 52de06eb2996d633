"""Job storage behind one seam, ``JobStore``: ``MemoryStore`` (the fake) and ``SqlStore``."""

from __future__ import annotations

from interpreter.store.base import JobStore
from interpreter.store.cached import CachedStore
from interpreter.store.memory import MemoryStore
from interpreter.store.sql import SqlStore

__all__ = ["CachedStore", "JobStore", "MemoryStore", "SqlStore"]
