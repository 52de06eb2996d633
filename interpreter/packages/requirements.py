"""A caller's package list, checked entry by entry before anything reads it.

Each entry must be one plain requirement: a name, optional extras and version specifiers
(``numpy>=2``, ``pandas[excel]==3.1.1``). Refused: URLs and direct references (``@``), markers
(``;``), options (``-r /etc/machine-id`` makes a requirements reader open a host file and send
it to the index), anything that is not one line. What uv later reads is the canonical form
``packaging`` prints of each accepted entry, as data in a ``pyproject.toml`` (never a
requirements file): no caller's text reaches uv as syntax.
"""

from __future__ import annotations

from collections.abc import Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from interpreter.errors import InvalidPackages

__all__ = ["MAX_REQUIREMENT_CHARS", "canonical_requirements", "pin_name"]

MAX_REQUIREMENT_CHARS = 200


def _canonical(entry: str) -> str:
    if not isinstance(entry, str):
        raise InvalidPackages("each entry of packages must be a string")
    text = entry.strip()
    if not text:
        raise InvalidPackages("packages holds an empty entry")
    if len(text) > MAX_REQUIREMENT_CHARS:
        raise InvalidPackages(
            f"package requirement longer than {MAX_REQUIREMENT_CHARS} characters: {text[:40]!r}..."
        )
    if text.startswith("-"):
        raise InvalidPackages(f"package requirement {text!r}: options are not accepted")
    if any(c in text for c in "@;\\\n\r\t\x00") or "://" in text:
        raise InvalidPackages(
            f"package requirement {text!r}: only a name, extras and version specifiers are "
            "accepted (no URL, path, '@' reference or marker)"
        )
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidPackages(f"package requirement {text!r} is not valid: {exc}") from None
    if requirement.url or requirement.marker:
        raise InvalidPackages(f"package requirement {text!r}: no URL or marker is accepted")
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


def canonical_requirements(entries: Sequence[str], max_count: int) -> tuple[str, ...]:
    """The entries in canonical form, sorted and without repeats; ``InvalidPackages`` saying
    which entry is refused and why."""
    if len(entries) > max_count:
        raise InvalidPackages(
            f"packages names {len(entries)} requirements; the maximum is {max_count}"
        )
    return tuple(sorted({_canonical(entry) for entry in entries}))


def pin_name(pin: str) -> tuple[str, str]:
    """(name, version) of a lock's ``name==version`` line."""
    name, _, version = pin.partition("==")
    return name, version
