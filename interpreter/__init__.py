"""A self-hosted server that runs untrusted code as jobs and answers with structured JSON."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
