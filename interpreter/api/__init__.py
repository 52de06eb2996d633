"""The HTTP layer: thin routes over ``interpreter.service``."""

from __future__ import annotations

from interpreter.api.app import create_app

__all__ = ["create_app"]
