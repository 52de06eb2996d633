"""Per-job Python packages: resolved by the server with uv (wheels only, never build code),
installed once per lock into an environment on this machine's disk, and bound read-only into
the jobs that ask for them, whose network stays off.

- ``requirements``: what a caller may name (plain requirements only);
- ``uv``: running uv on the host, its errors read back;
- ``resolver``: a request's packages to a lock, kept and reused;
- ``environments``: one environment per lock, built once, evicted least recently used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, InterpreterError, InvalidPackages
from interpreter.packages.environments import EnvironmentInfo, Environments, Lease
from interpreter.packages.resolver import PackageResolver, Resolution
from interpreter.packages.uv import Uv, find_uv

logger = logging.getLogger(__name__)

__all__ = ["EnvironmentInfo", "Environments", "Lease", "PackageResolver", "Packages", "Resolution"]


@dataclass(slots=True)
class Packages:
    """What a process needs for packages: every process resolves (the API answers 422 for a
    request that cannot be); a process that runs jobs also builds (``environments``)."""

    resolver: PackageResolver
    environments: Environments | None
    default: tuple[str, ...]  # INTERPRETER_DEFAULT_PACKAGES, canonical
    # Told where the default environment is once built ahead (warm parents start in it)
    on_default_ready: Callable[[Path], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, python: str, runs_jobs: bool) -> Packages:
        root = settings.data_dir / "packages"
        uv = Uv(find_uv(), root / "cache", settings.packages_index_url)
        resolver = PackageResolver(
            uv,
            python,
            root / "locks",
            settings.max_packages,
            settings.packages_lock_ttl_s,
            settings.packages_resolve_timeout_s,
        )
        try:
            default = resolver.check(settings.default_packages)
        except InvalidPackages as exc:
            raise ConfigurationError(f"INTERPRETER_DEFAULT_PACKAGES: {exc.message}") from None
        environments = None
        if not runs_jobs:  # nothing else bounds the cache its resolutions fill
            resolver.cache_bytes = settings.packages_cache_bytes
        if runs_jobs:
            environments = Environments(
                root,
                uv,
                python,
                settings.packages_install_timeout_s,
                settings.packages_max_env_bytes,
                settings.packages_cache_bytes,
            )
        return cls(resolver, environments, default)

    async def prebuild(self) -> None:
        """Build the default environment ahead of the first job that needs it. A failure is
        logged only: the first such job tries again, and fails saying why if it must."""
        if not self.default or self.environments is None:
            return
        try:
            resolution = await self.resolver.resolve(self.default)
            lease = await self.environments.acquire(resolution.requirements, resolution.pins)
        except InterpreterError as exc:
            logger.warning("INTERPRETER_DEFAULT_PACKAGES not ready at start: %s", exc.message)
            return
        lease.release()
        logger.info("default packages ready", extra={"environment": lease.id})
        if self.on_default_ready is not None:
            self.on_default_ready(lease.path)
