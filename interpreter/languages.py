"""The language registry: which interpreter runs a job, chosen deliberately and configurable.

A language runs as ``command + [code_file]``: the code is written to a file outside the job's
working directory (argv has a 128 KiB limit per argument, and stdin stays /dev/null).
``INTERPRETER_LANGUAGES`` (JSON) adds or replaces languages, for example::

    {"ruby": {"command": ["/usr/bin/ruby"], "aliases": ["rb"], "extension": ".rb"}}
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, LanguageUnavailable, UnsupportedLanguage

INLINE_CODE_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Language:
    name: str
    command: tuple[str, ...]  # argv before the code file; command[0] may be a bare name
    extension: str
    aliases: tuple[str, ...] = ()
    version_args: tuple[str, ...] = ("--version",)
    inline_args: tuple[str, ...] | None = None  # e.g. ("-c",): run code given on the command line
    executable: str | None = None  # command[0] resolved to an absolute path, None if missing

    @property
    def available(self) -> bool:
        return self.executable is not None and os.access(self.executable, os.X_OK)

    def argv(self, code_file: str) -> tuple[str, ...]:
        """Run the code written to ``code_file``."""
        assert self.executable is not None
        return (self.executable, *self.command[1:], code_file)

    def inline_argv(self, code: str) -> tuple[str, ...] | None:
        """Run ``code`` given on the command line (no file to write), if this language can and
        the code fits well within the kernel's 128 KiB limit on one argument."""
        if self.inline_args is None or self.executable is None:
            return None
        if "\x00" in code or len(code.encode("utf-8", "surrogatepass")) > INLINE_CODE_MAX_BYTES:
            return None
        return (self.executable, *self.command[1:], *self.inline_args, code)


def _first_found(candidates: Iterable[str], path: str) -> str | None:
    for candidate in candidates:
        if "/" in candidate:
            if os.access(candidate, os.X_OK):
                return candidate
        elif found := shutil.which(candidate, path=path):
            return found
    return None


def _default_languages(settings: Settings) -> list[Language]:
    # /usr/bin/python3 first: a pyenv shim on PATH costs ~70 ms a start (SANDBOX-FACTS.md).
    search = settings.job_path
    python = (
        settings.python_command
        or _first_found(["/usr/bin/python3", "/usr/local/bin/python3", "python3"], search)
        or "python3"
    )
    node = settings.node_command or _first_found(["/usr/bin/node", "node"], search) or "node"
    bash = settings.bash_command or _first_found(["/bin/bash", "bash"], search) or "bash"
    return [
        Language("python", (python,), ".py", aliases=("python3", "py"), inline_args=("-c",)),
        Language("shell", (bash,), ".sh", aliases=("bash", "sh"), inline_args=("-c",)),
        Language("javascript", (node,), ".js", aliases=("js", "node"), inline_args=("-e",)),
    ]


def _parse_custom(raw: str) -> list[Language]:
    try:
        data = json.loads(raw)
        languages = []
        for name, spec in data.items():
            command = spec["command"]
            if isinstance(command, str):
                command = [command]
            languages.append(
                Language(
                    name=name,
                    command=tuple(command),
                    extension=spec.get("extension", ""),
                    aliases=tuple(spec.get("aliases", ())),
                    version_args=tuple(spec.get("version_args", ("--version",))),
                    inline_args=tuple(spec["inline_args"]) if "inline_args" in spec else None,
                )
            )
        return languages
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigurationError(f"INTERPRETER_LANGUAGES is not valid: {exc}") from exc


def _resolve(language: Language, path: str) -> Language:
    head = language.command[0]
    if "/" in head:
        executable = head if os.access(head, os.X_OK) else None
    else:
        executable = shutil.which(head, path=path)
    return dataclasses.replace(language, executable=executable)


@dataclass
class LanguageRegistry:
    languages: dict[str, Language]
    versions: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> LanguageRegistry:
        by_name = {lang.name: lang for lang in _default_languages(settings)}
        if settings.languages_json:
            by_name.update({lang.name: lang for lang in _parse_custom(settings.languages_json)})
        return cls({n: _resolve(lang, settings.job_path) for n, lang in by_name.items()})

    def lookup(self, name: str) -> Language:
        """The language called ``name`` or one of its aliases (case-insensitive)."""
        key = name.strip().lower()
        for language in self.languages.values():
            if key == language.name or key in language.aliases:
                return language
        supported = ", ".join(
            f"{lang.name} ({', '.join(lang.aliases)})" if lang.aliases else lang.name
            for lang in self.languages.values()
        )
        raise UnsupportedLanguage(f"Unsupported language '{name}'. Supported: {supported}")

    def require_available(self, name: str) -> Language:
        language = self.lookup(name)
        if not language.available:
            raise LanguageUnavailable(
                f"Language '{language.name}' is not available on this host "
                f"({language.command[0]} not found)"
            )
        return language

    async def probe_versions(self) -> None:
        """Ask each available interpreter for its version, once, concurrently."""

        async def probe(language: Language) -> tuple[str, str | None]:
            if not language.available:
                return language.name, None
            try:
                proc = await asyncio.create_subprocess_exec(
                    language.executable or language.command[0],
                    *language.command[1:],
                    *language.version_args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                )
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
            except (OSError, TimeoutError):
                return language.name, None
            text = out.decode(errors="replace").strip().splitlines()
            return language.name, (text[0] if text else None)

        results = await asyncio.gather(*(probe(lang) for lang in self.languages.values()))
        self.versions = dict(results)
