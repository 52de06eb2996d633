"""The language registry: which interpreter runs a job, chosen deliberately and configurable.

A language runs as ``command + [code_file]``: the code is written to a file outside the job's
working directory (argv has a 128 KiB limit per argument, and stdin stays /dev/null).
``INTERPRETER_LANGUAGES`` (JSON) adds or replaces languages, for example::

    {"ruby": {"command": ["/usr/bin/ruby"], "aliases": ["rb"], "extension": ".rb"}}

A language is available when its executable exists and, in a process that runs jobs, its version
command (``executable + command[1:] + version_args``) succeeded once at start the way jobs run
(``LanguageRegistry.check``, in the sandbox when there is one): a command that cannot run there
is caught once, with the reason, instead of failing every job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, LanguageUnavailable, UnsupportedLanguage

INLINE_CODE_MAX_BYTES = 64 * 1024

# The environment of a version command run outside a sandbox.
VERSION_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Language:
    name: str
    command: tuple[str, ...]  # argv before the code file; command[0] may be a bare name
    extension: str
    aliases: tuple[str, ...] = ()
    version_args: tuple[str, ...] = ("--version",)
    inline_args: tuple[str, ...] | None = None  # e.g. ("-c",): run code given on the command line
    executable: str | None = None  # command[0] resolved to an absolute path, None if missing
    problem: str | None = None  # why it cannot run although it exists (its check at start)

    @property
    def available(self) -> bool:
        return (
            self.problem is None
            and self.executable is not None
            and os.access(self.executable, os.X_OK)
        )

    def version_argv(self) -> tuple[str, ...]:
        return (self.executable or self.command[0], *self.command[1:], *self.version_args)

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


@dataclass(frozen=True, slots=True)
class Trial:
    """One run of a language's version command: its exit code (None: it did not end in time,
    or could not start) and what it wrote."""

    exit_code: int | None
    stdout: str
    stderr: str

    def problem(self) -> str | None:
        """Why the command failed, in one line (the first of its error output), or None."""
        if self.exit_code == 0:
            return None
        for text in (self.stderr, self.stdout):
            if lines := [line.strip() for line in text.splitlines() if line.strip()]:
                return lines[0]
        if self.exit_code is None:
            return "its version command did not finish"
        return f"its version command exited with code {self.exit_code}"

    def version(self) -> str | None:
        """The first line it printed (some interpreters print their version on stderr)."""
        lines = (self.stdout.strip() or self.stderr.strip()).splitlines()
        return lines[0] if lines else None


@dataclass
class LanguageRegistry:
    languages: dict[str, Language]
    versions: dict[str, str | None] = field(default_factory=dict)
    checked: bool = False  # each available language's version command ran the way jobs run

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
        if language.problem is not None:
            raise LanguageUnavailable(
                f"Language '{language.name}' cannot run on this host: {language.problem}"
            )
        if not language.available:
            raise LanguageUnavailable(
                f"Language '{language.name}' is not available on this host "
                f"({language.command[0]} not found)"
            )
        return language

    def check(self, run: Callable[[str, tuple[str, ...]], Trial]) -> None:
        """Run each available language's version command once, the way its jobs run (``run``,
        given the language's name and the command: in the sandbox, or directly without one).
        One that fails becomes unavailable, saying why; the others keep the version they
        printed. Blocking: called while the process that runs jobs is built, before it serves."""
        for name, language in list(self.languages.items()):
            if not language.available:
                continue
            trial = run(name, language.version_argv())
            problem = trial.problem()
            if problem is None:
                self.versions[name] = trial.version()
                continue
            logger.error(
                "language %s cannot run (%s): %s",
                name,
                language.executable,
                problem,
                extra={"language": name},
            )
            self.languages[name] = dataclasses.replace(language, problem=problem)
            self.versions[name] = None
        self.checked = True

    def problems(self) -> dict[str, str]:
        """Why each language that exists but cannot run is unavailable."""
        return {n: lang.problem for n, lang in self.languages.items() if lang.problem is not None}

    async def probe_versions(self) -> None:
        """Ask each available interpreter for its version, once, concurrently (unless ``check``
        already did, where jobs run: a process that runs none, an API-only replica, asks here
        and only for the version)."""
        if self.checked:
            return

        async def probe(language: Language) -> tuple[str, str | None]:
            if not language.available:
                return language.name, None
            try:
                proc = await asyncio.create_subprocess_exec(
                    *language.version_argv(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=dict(VERSION_ENV),
                )
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
            except (OSError, TimeoutError):
                return language.name, None
            text = out.decode(errors="replace").strip().splitlines()
            return language.name, (text[0] if text else None)

        results = await asyncio.gather(*(probe(lang) for lang in self.languages.values()))
        self.versions = dict(results)
