"""Every error this package raises, in one tree.

    InterpreterError
    ├── ConfigurationError        the server cannot start with these settings
    ├── InvalidRequest            the caller asked for something we refuse (4xx)
    │   ├── UnsupportedLanguage
    │   ├── LanguageUnavailable
    │   ├── InvalidWorkingDirectory
    │   ├── InvalidTimeout
    │   ├── UnsafeEnvironment     an environment variable that could weaken the sandbox
    │   ├── CodeTooLarge
    │   │   └── StdinTooLarge
    │   ├── InvalidInputFile      an input file's path, size or content is refused
    │   ├── BodyTooLarge          the request body is over the limit (refused before it is read)
    │   ├── IdempotencyKeyReused  an Idempotency-Key sent again with another request
    │   ├── InvalidPackages       a requirement that is not a plain one (a URL, an option, ...)
    │   └── PackagesUnresolvable  the registry has no set of wheels that satisfies them (kind)
    ├── AuthenticationFailed
    ├── RateLimited               too many requests from this key or address (retry_after_s)
    │   ├── TooManyPendingJobs    too many of this key's jobs wait to start
    │   └── TooManySessions       this key holds as many sessions as it may
    ├── JobNotFound
    ├── JobFileNotFound           no such file among a finished job's files
    ├── JobAlreadyFinished
    ├── EnvironmentNotFound       no package environment with that id here
    ├── EnvironmentInUse          a running job uses the environment
    ├── IdempotencyKeyTaken       (internal) the store holds a job with that key already
    ├── SessionNotFound           no such session of this caller's (or it ended)
    ├── SessionUnavailable        the session cannot take this execution (dead, too many waiting)
    ├── SessionsUnsupported       this deployment runs no sessions (scale-out, turned off)
    ├── JobNotFinished            the job's files are asked for before it is final
    ├── RangeNotSatisfiable       a byte range outside a file (size)
    ├── ServiceUnavailable        the server is shutting down or overloaded (retry_after_s)
    │   ├── QueueFull             too many jobs wait to start on the whole server
    │   ├── SessionsFull          the server holds as many sessions as it may
    │   └── RegistryUnavailable   the package registry did not answer (in time)
    ├── ExecutionError            a process could not be started or watched
    │   └── EnvironmentFailed     a job's package environment could not be built
    └── StoreError                the job store failed (driver errors are wrapped in it)

The HTTP layer maps this tree to status codes in one table (``interpreter.api.errors``);
business code never raises an HTTP exception. A subclass's docstring is its default message.
"""

from __future__ import annotations


class InterpreterError(Exception):
    """Internal server error."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigurationError(InterpreterError):
    """The server's configuration is invalid."""


class InvalidRequest(InterpreterError):
    """The request is invalid."""


class UnsupportedLanguage(InvalidRequest):
    """The language is not supported."""


class LanguageUnavailable(InvalidRequest):
    """The language's interpreter is not available on this host."""


class InvalidWorkingDirectory(InvalidRequest):
    """working_directory must stay inside the workspace root."""


class InvalidTimeout(InvalidRequest):
    """timeout is out of range."""


class UnsafeEnvironment(InvalidRequest):
    """environment_variables holds names that could weaken the sandbox."""


class CodeTooLarge(InvalidRequest):
    """The submitted code is larger than the configured maximum."""


class StdinTooLarge(CodeTooLarge):
    """The submitted stdin is larger than the configured maximum."""


class InvalidInputFile(InvalidRequest):
    """An input file is invalid."""


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the configured maximum."""


class IdempotencyKeyReused(InvalidRequest):
    """This Idempotency-Key was used with a different request."""


class InvalidPackages(InvalidRequest):
    """packages holds an entry that is not a plain requirement."""


class PackagesUnresolvable(InvalidRequest):
    """The packages cannot be resolved to wheels."""

    def __init__(self, message: str | None = None, *, kind: str = "unsatisfiable") -> None:
        super().__init__(message)
        self.kind = kind  # not_found, unsatisfiable or no_wheel


class AuthenticationFailed(InterpreterError):
    """Missing or invalid API key."""


class RateLimited(InterpreterError):
    """Too many requests; retry later."""

    def __init__(self, message: str | None = None, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyPendingJobs(RateLimited):
    """Too many of this key's jobs are waiting to start."""


class TooManySessions(RateLimited):
    """This API key holds as many sessions as it may; delete one first."""


class JobNotFound(InterpreterError):
    """Job not found."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job not found: {job_id}")
        self.job_id = job_id


class JobFileNotFound(InterpreterError):
    """File not found among the job's files."""


class JobAlreadyFinished(InterpreterError):
    """The job has already finished."""


class JobNotFinished(InterpreterError):
    """The job has not finished yet; its files can be read once it is final."""


class RangeNotSatisfiable(InterpreterError):
    """The requested byte range is outside the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the file ({size} bytes)")
        self.size = size


class ServiceUnavailable(InterpreterError):
    """The server cannot take this request now."""

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(ServiceUnavailable):
    """Too many jobs are waiting to start on this server; retry later."""


class SessionsFull(ServiceUnavailable):
    """The server holds as many sessions as it may; retry later."""


class SessionNotFound(InterpreterError):
    """Session not found."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"Session not found: {session_id} (sessions end when deleted, idle or too old, "
            "and when the server restarts)"
        )


class SessionUnavailable(InterpreterError):
    """The session cannot run this now."""


class SessionsUnsupported(InterpreterError):
    """This server runs no sessions."""


class SessionStartRefused(InvalidRequest):
    """The session's kernel could not start with what the request gave it (its packages, its
    environment variables): retrying the same request would fail the same way."""


class RegistryUnavailable(ServiceUnavailable):
    """The package registry could not be reached; retry later."""


class EnvironmentNotFound(InterpreterError):
    """No package environment with that id on this server."""


class EnvironmentInUse(InterpreterError):
    """A running job uses this environment."""


class IdempotencyKeyTaken(InterpreterError):
    """A job with this idempotency key exists already (the service answers with it)."""


class ExecutionError(InterpreterError):
    """The process could not be started or supervised."""


class EnvironmentFailed(ExecutionError):
    """The job's package environment could not be built."""


class KernelExited(ExecutionError):
    """A session's kernel exited before it answered (its last line says why)."""


class StoreError(InterpreterError):
    """The job store failed."""
