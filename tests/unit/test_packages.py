"""What a caller may name as packages, and how uv's failures read to the caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from interpreter.errors import InvalidPackages, PackagesUnresolvable, RegistryUnavailable
from interpreter.packages.requirements import canonical_requirements
from interpreter.packages.resolver import PackageResolver
from interpreter.packages.uv import Uv, UvFailed, classify


def test_requirements_are_canonical_sorted_and_without_repeats() -> None:
    entries = ["Pandas==3.1.1", "numpy >= 2", "numpy>=2", "Typing_Extensions", "requests[socks]"]
    assert canonical_requirements(entries, 10) == (
        "numpy>=2",
        "pandas==3.1.1",
        "requests[socks]",
        "typing-extensions",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "-r /etc/machine-id",
        "--extra-index-url http://127.0.0.1:9",
        "six @ file:///etc/passwd",
        "git+https://example.org/x.git",
        "six; sys_platform == 'linux'",
        "six\n-r x",
        "six\\",
        "x" * 201,
        "",
        "  ",
        "six===",
    ],
)
def test_anything_but_a_plain_requirement_is_refused(entry: str) -> None:
    with pytest.raises(InvalidPackages):
        canonical_requirements([entry], 10)


def test_the_count_is_capped() -> None:
    with pytest.raises(InvalidPackages, match="the maximum is 2"):
        canonical_requirements(["a", "b", "c"], 2)


NOT_FOUND = """error: No solution found when resolving dependencies
  cause: Because zz was not found in the package registry and the-job depends on zz, we can \
conclude that your requirements are unsatisfiable.
"""
NO_WHEEL = """error: No solution found when resolving dependencies
  cause: Because all versions of docopt have no usable wheels and the-job depends on docopt, we \
can conclude that your requirements are unsatisfiable.

hint: Wheels are required for `docopt` because building from source is disabled
"""
UNREACHABLE = """error: Request failed after 3 retries
  cause: Failed to fetch: http://127.0.0.1:9/simple/idna/
  cause: tcp connect error
  cause: Connection refused (os error 111)
"""


CONFLICT = """error: No solution found when resolving dependencies
  cause: Because requests==2.31.0 depends on urllib3>=1.21.1,<3 and the-job depends on \
requests==2.31.0, we can conclude that the-job depends on urllib3>=1.21.1,<3.
         And because the-job depends on urllib3<1.21, we can conclude that your requirements \
are unsatisfiable.
"""


def test_a_cause_over_several_lines_is_read_whole() -> None:
    error = classify(UvFailed(1, CONFLICT))
    assert isinstance(error, PackagesUnresolvable) and error.kind == "unsatisfiable"
    assert error.message.endswith(
        "And because your request needs urllib3<1.21, we can conclude that your requirements are "
        "unsatisfiable."
    )


def test_uv_failures_read_as_the_kind_and_cause() -> None:
    error = classify(UvFailed(1, NOT_FOUND))
    assert isinstance(error, PackagesUnresolvable) and error.kind == "not_found"
    assert "your request needs zz" in error.message and "the-job" not in error.message
    error = classify(UvFailed(1, NO_WHEEL))
    assert isinstance(error, PackagesUnresolvable) and error.kind == "no_wheel"
    error = classify(UvFailed(2, UNREACHABLE))
    assert isinstance(error, RegistryUnavailable)
    assert "Connection refused" in error.message
    assert isinstance(classify(UvFailed(None, "")), RegistryUnavailable)


async def test_a_request_that_leaves_does_not_fail_the_others_waiting_on_its_resolution(
    tmp_path: Path,
) -> None:
    class SlowUv(Uv):
        async def compile(
            self,
            requirements: tuple[str, ...],
            python: str,
            timeout_s: float,
            offline: bool = False,
        ) -> tuple[str, ...]:
            await asyncio.sleep(0.2)
            return ("six==1.17.0",)

    resolver = PackageResolver(
        SlowUv("uv", tmp_path / "cache"), "/usr/bin/python3", tmp_path / "locks", 8, 60, 10
    )
    first = asyncio.create_task(resolver.resolve(["six"]))
    second = asyncio.create_task(resolver.resolve(["six"]))
    await asyncio.sleep(0.05)
    first.cancel()  # its client went away
    resolution = await second
    assert resolution.pins == ("six==1.17.0",)
    with pytest.raises(asyncio.CancelledError):
        await first
