"""Per-job Python packages: resolved by the server with uv (wheels only, never build code),
installed once per lock into an environment on this machine's disk, and bound read-only into
the jobs that ask for them, whose network stays off.

- ``requirements``: what a caller may name (plain requirements only);
- ``uv``: running uv on the host, its errors read back;
- ``resolver``: a request's packages to a lock, kept and reused;
- ``environments``: one environment per lock, built once, evicted least recently used.
"""

from __future__ import annotations

from dataclasses import dataclass

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, InvalidPackages
from interpreter.packages.environments import EnvironmentInfo, Environments, Lease
from interpreter.packages.resolver import PackageResolver, Resolution
from interpreter.packages.uv import Uv, find_uv

__all__ = ["EnvironmentInfo", "Environments", "Lease", "PackageResolver", "Packages", "Resolution"]


@dataclass(frozen=True, slots=True)
class Packages:
    """What a process needs for packages: every process resolves (the API answers 422 for a
    request that cannot be); a process that runs jobs also builds (``environments``)."""

    resolver: PackageResolver
    environments: Environments | None
    default: tuple[str, ...]  # INTERPRETER_DEFAULT_PACKAGES, canonical

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
