"""The job service: what the HTTP routes call. Validation, submission, reads, cancel, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from interpreter.config import Settings
from interpreter.environment import invalid_names, refused_names
from interpreter.errors import (
    CodeTooLarge,
    IdempotencyKeyReused,
    IdempotencyKeyTaken,
    InvalidPackages,
    InvalidRequest,
    InvalidTimeout,
    JobAlreadyFinished,
    JobNotFinished,
    JobNotFound,
    ServiceUnavailable,
    StdinTooLarge,
    UnsafeEnvironment,
)
from interpreter.inputs import InputLimits, check_input_files
from interpreter.job import (
    CapturedOutput,
    InputFile,
    Job,
    JobRequest,
    JobStatus,
    OutputChunk,
    idempotency_scope,
    new_job_id,
    utcnow,
)
from interpreter.jobfiles import DiskFiles, FileSource, NoFiles, StoredFiles
from interpreter.languages import LanguageRegistry
from interpreter.limits import resolve_limits
from interpreter.packages import Packages
from interpreter.queues.base import JobQueue, until_final
from interpreter.store.base import ExpiredJob, JobStore
from interpreter.workspace import JobPaths, named_directory

logger = logging.getLogger(__name__)

INLINE_READ_BYTES = 256 * 1024
IDEMPOTENCY_WINDOW = timedelta(hours=24)  # an Idempotency-Key answers with its job this long
STREAM_READ_BYTES = 1024 * 1024  # of a stream's output file per read of a live stream


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


class SessionFiles(Protocol):
    def files(self, session_id: str) -> FileSource | None:
        """The session's files now; None when it does not run here."""


@dataclass(frozen=True, slots=True)
class Submission:
    """What the caller sent, before validation against this server's settings."""

    code: str
    language: str
    timeout_s: float | None = None
    capture_files: bool = True
    working_directory: str | None = None
    environment: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None
    limits: dict[str, float | int | None] | None = None  # per-job overrides of the defaults
    stdin: str | None = None
    input_files: tuple[InputFile, ...] = ()  # written into its directory before it starts
    packages: tuple[str, ...] = ()  # Python requirements, resolved when it is submitted
    session_id: str | None = None  # run in this session's kernel


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A submission's Idempotency-Key and the digest of its request (what a retry must match)."""

    key: str
    digest: str


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    estimate: datetime  # when it is expected to start
    replayed: bool = False  # an earlier submission with the same Idempotency-Key made it


@dataclass(frozen=True, slots=True)
class Outputs:
    stdout: str
    stderr: str


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        queue: JobQueue,
        registry: LanguageRegistry,
        paths: JobPaths,
        outputs_in_store: bool = False,
        packages: Packages | None = None,
    ) -> None:
        self.settings = settings
        self.packages = packages
        self.store = store
        self.queue = queue
        self.registry = registry
        self.paths = paths
        self.outputs_in_store = outputs_in_store  # scale-out: workers put them in the store
        self.sessions: SessionFiles | None = None  # the sessions whose files this process reads

    # -- submission -------------------------------------------------------------------------
    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(
            max_files=self.settings.max_input_files,
            max_file_bytes=self.settings.max_input_file_bytes,
            max_total_bytes=self.settings.max_upload_bytes,
        )

    def validate(
        self, sub: Submission, owner: str | None = None
    ) -> tuple[JobRequest, tuple[InputFile, ...]]:
        """The job's request and its input files (paths made canonical), once both are valid."""
        inputs = check_input_files(sub.input_files, self.input_limits)
        size = len(sub.code.encode("utf-8", errors="surrogatepass"))
        if size > self.settings.max_code_bytes:
            raise CodeTooLarge(
                f"code is {size} bytes; the maximum is {self.settings.max_code_bytes} bytes"
            )
        if sub.stdin is not None:
            size = len(sub.stdin.encode("utf-8", errors="surrogatepass"))
            if size > self.settings.max_stdin_bytes:
                raise StdinTooLarge(
                    f"stdin is {size} bytes; the maximum is {self.settings.max_stdin_bytes} bytes"
                )
        language = self.registry.require_available(sub.language)
        timeout_s = self.settings.default_timeout_s if sub.timeout_s is None else sub.timeout_s
        if not 0 < timeout_s <= self.settings.max_timeout_s:
            raise InvalidTimeout(
                f"timeout must be greater than 0 and at most {self.settings.max_timeout_s:g} "
                f"seconds; got {timeout_s:g}"
            )
        environment = dict(sub.environment or {})
        if refused := refused_names(environment):
            raise UnsafeEnvironment(
                "environment variables refused, as they could weaken the sandbox: "
                + "; ".join(f"{name} ({reason})" for name, reason in refused.items())
            )
        if bad := invalid_names(environment):
            raise InvalidRequest(f"invalid environment variable names: {', '.join(sorted(bad))}")
        if any("\x00" in v for v in environment.values()):
            raise InvalidRequest("environment variable values must not contain NUL bytes")
        workdir = None
        if sub.working_directory:
            path = named_directory(self.paths.workspace_root, sub.working_directory, owner)
            self.paths.check_named(path)  # refused now if it could never run (where jobs run)
            # kept relative to the root: a worker opens it beneath its own workspace root
            workdir = str(path.relative_to(self.paths.workspace_root))
        request = JobRequest(
            code=sub.code,
            language=language.name,
            timeout_s=timeout_s,
            capture_files=sub.capture_files,
            working_directory=workdir,
            environment=environment,
            metadata=dict(sub.metadata or {}),
            limits=resolve_limits(self.settings, sub.limits),
            stdin=sub.stdin,
            input_file_count=len(inputs),
            session_id=sub.session_id,
        )
        return request, inputs

    async def submit(
        self, sub: Submission, owner: str | None, idempotency: Idempotency | None = None
    ) -> Submitted:
        """Validate and queue a new job; with ``idempotency``, the job an earlier submission
        with that key made instead, when there is one (``replayed``), and it is not older than
        ``IDEMPOTENCY_WINDOW``. Of concurrent submissions with one key, on any replica, one
        makes the job (the store's unique key) and the others answer with it."""
        key = None if idempotency is None else idempotency_scope(owner, idempotency.key)
        if key is not None and idempotency is not None:  # a retry answers as the first one did,
            # even while the server shuts down or after its settings changed
            if (earlier := await self._earlier(key, idempotency)) is not None:
                return earlier
        if not self.queue.accepting:
            raise ServiceUnavailable("the server is shutting down and takes no new jobs")
        request, inputs = self.validate(sub, owner)
        if sub.packages:
            request = await self._resolve(request, sub.packages)
        job = Job(id=new_job_id(), request=request, owner=owner)
        if key is not None and idempotency is not None:
            job = job.evolve(idempotency_key=key, request_digest=idempotency.digest)
        try:
            job, estimate = await self.queue.submit(job, inputs)
        except IdempotencyKeyTaken:
            assert idempotency is not None and job.idempotency_key is not None
            earlier = await self._earlier(job.idempotency_key, idempotency)
            if earlier is None:  # made and gone again (deleted) meanwhile: a rare race
                raise ServiceUnavailable("the job of this Idempotency-Key changed; retry") from None
            return earlier
        self.queue.metrics.jobs_submitted.inc()
        logger.info(
            "job pending",
            extra={"job_id": job.id, "status": "pending", "language": request.language},
        )
        return Submitted(job, estimate)

    async def _resolve(self, request: JobRequest, packages: tuple[str, ...]) -> JobRequest:
        """The request with its packages resolved to a lock (``InvalidPackages``,
        ``PackagesUnresolvable`` or ``RegistryUnavailable`` when they cannot be)."""
        if request.language != "python" or self.packages is None:
            raise InvalidPackages("packages are installed for Python jobs only")
        resolution = await self.packages.resolver.resolve(packages)
        return dataclasses.replace(
            request,
            packages=resolution.requirements,
            lock=resolution.pins,
            resolve_ms=resolution.resolve_ms,
            lock_python=resolution.python,
        )

    async def _earlier(self, key: str, idempotency: Idempotency) -> Submitted | None:
        """The job an earlier submission made with ``key``, unless it expired (its key is then
        released); ``IdempotencyKeyReused`` when that submission's request was another."""
        job = await self.store.find_by_idempotency_key(key)
        if job is None:
            return None
        if job.created_at < utcnow() - IDEMPOTENCY_WINDOW:
            await self.store.release_idempotency_key(job.id)
            return None
        if job.request_digest != idempotency.digest:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency.key!r} was used with a different request "
                f"(job {job.id}); send a new key for a new request"
            )
        return Submitted(job, job.started_at or job.created_at, replayed=True)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, job_id: str, owner: str | None) -> Job:
        if not _is_uuid(job_id):
            raise JobNotFound(job_id)
        job = await self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        return job

    async def wait_final(self, job_id: str, owner: str | None, wait_s: float) -> Job:
        """The job once it is final, or as it is after ``wait_s`` seconds (a long poll).

        Final statuses written here wake the wait at once; it also re-reads the store every
        ``queue.recheck_s`` in case a final status went unannounced."""
        job = await until_final(
            lambda: self.get(job_id, owner), self.queue.watch, job_id, wait_s, self.queue.recheck_s
        )
        assert job is not None  # ``get`` raises JobNotFound rather than answer None
        return job

    async def list(
        self, owner: str | None, status: JobStatus | None, limit: int, cursor: int | None
    ) -> Sequence[Job]:
        return await self.store.list(owner=owner, status=status, limit=limit, before_seq=cursor)

    async def outputs(self, job: Job) -> Outputs:
        if job.result is None:
            return Outputs("", "")
        if self.outputs_in_store:
            stored = await self.store.get_outputs(job.id)
            if stored is None:
                return Outputs("", "")
            return Outputs(_decode(stored.stdout), _decode(stored.stderr))
        if job.result.stdout_bytes + job.result.stderr_bytes <= INLINE_READ_BYTES:
            return self._read_outputs(job.id)  # a page-cache read of a few KiB: no thread hop
        return await asyncio.to_thread(self._read_outputs, job.id)

    async def output_since(self, job: Job, stdout_from: int, stderr_from: int) -> CapturedOutput:
        """The bytes of the job's output from the given offsets on (in what its output holds:
        the head as it is written, then, once the job ended, the marker and the tail when it was
        truncated). Embedded: its output files, up to ``STREAM_READ_BYTES`` a stream. Scale-out:
        while it runs, the chunks its worker published (as far as they are contiguous); once it
        is final, ``job_outputs``."""
        if not self.outputs_in_store:
            return CapturedOutput(
                _read_from(self.paths.stdout(job.id), stdout_from),
                _read_from(self.paths.stderr(job.id), stderr_from),
            )
        if job.is_final:
            stored = await self.store.get_outputs(job.id)
            if stored is None:  # final before it ran, or its worker could not store them
                return CapturedOutput()
            return CapturedOutput(stored.stdout[stdout_from:], stored.stderr[stderr_from:])
        chunks = await self.store.get_chunks(job.id, stdout_from, stderr_from)
        return CapturedOutput(
            _contiguous(chunks, "stdout", stdout_from), _contiguous(chunks, "stderr", stderr_from)
        )

    def _read_outputs(self, job_id: str) -> Outputs:
        return Outputs(_read_text(self.paths.stdout(job_id)), _read_text(self.paths.stderr(job_id)))

    async def files(self, job_id: str, owner: str | None) -> FileSource:
        """A final job's files: from the store where workers capture them (scale-out), else
        from its directory here. ``JobNotFinished`` while it is pending or running (its files
        are still being written)."""
        job = await self.get(job_id, owner)
        if not job.is_final:
            raise JobNotFinished(
                f"Job {job.id} is {job.status.value}; its files can be read once it is final "
                "(completed, failed, timeout or cancelled)"
            )
        if job.result is None:
            return NoFiles()  # it never ran
        if job.request.session_id is not None:  # the session's directory, while it runs here
            live = None if self.sessions is None else self.sessions.files(job.request.session_id)
            return live or NoFiles()
        if self.outputs_in_store:
            return StoredFiles(self.store, job.id)
        return DiskFiles(
            self.paths,
            job,
            self.settings.file_scan_max_entries,
            self.settings.file_scan_max_seconds,
        )

    # -- cancel -----------------------------------------------------------------------------
    async def cancel(self, job_id: str, owner: str | None) -> Job:
        """Cancel a pending or running job; its final record (a running job's once whoever runs
        it has stopped it and written what ran). ``JobAlreadyFinished`` when it was final
        already, or ended by itself (its process had exited) before the cancel could stop it,
        or another cancel of it came first."""
        job = await self.get(job_id, owner)
        if job.is_final:
            raise _already_finished(job)
        final = await self.queue.cancel(job_id)
        if final is None or final.status is not JobStatus.CANCELLED:
            # final already, ended as it ran, or cancelled by another request first
            raise _already_finished(final or await self.get(job_id, owner))
        logger.info("job cancelled", extra={"job_id": job_id, "status": "cancelled"})
        return final

    # -- retention --------------------------------------------------------------------------
    async def cleanup_expired(self) -> int:
        """Delete finished jobs older than the TTL, with their outputs and fresh workspaces:
        files first, then the row, so that a failure leaves the row for the next sweep rather
        than files nothing points to any more. A page of ids at a time, never the jobs' code."""
        cutoff = utcnow() - timedelta(seconds=self.settings.job_ttl_s)
        deleted = 0
        after_seq = 0  # rows whose files stay are skipped, not read again
        while page := await self.store.expired(cutoff, after_seq=after_seq):
            after_seq = page[-1].seq
            removed = await asyncio.to_thread(self._remove_files, page)
            await self.store.delete(removed)
            deleted += len(removed)
        if deleted:
            logger.info("expired jobs deleted", extra={"count": deleted})
        return deleted

    def _remove_files(self, jobs: Sequence[ExpiredJob]) -> Sequence[str]:
        """Remove each job's files; the ids of those whose files are all gone."""
        removed: list[str] = []
        for job in jobs:
            try:
                self.paths.stdout(job.id).unlink(missing_ok=True)
                self.paths.stderr(job.id).unlink(missing_ok=True)
                if job.working_directory is None:  # only the directories we created
                    self.paths.remove_workspace(job.id)
            except OSError as exc:
                logger.warning("expired job's files not removed: %s", exc, extra={"job_id": job.id})
                continue
            removed.append(job.id)
        return removed

    async def retention_loop(self) -> None:
        while True:
            try:
                await self.cleanup_expired()
            except Exception:
                logger.exception("retention sweep failed")
            await asyncio.sleep(self.settings.cleanup_interval_s)


def _already_finished(job: Job) -> JobAlreadyFinished:
    return JobAlreadyFinished(
        f"Job {job.id} already finished with status '{job.status.value}'; "
        "only pending or running jobs can be cancelled"
    )


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _read_from(path: Path, offset: int) -> bytes:
    """Up to ``STREAM_READ_BYTES`` of the file from ``offset`` (nothing if it is missing); never
    following a symlink (the files are ours, in the data directory: this is belt and braces)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, STREAM_READ_BYTES, offset)
    finally:
        os.close(fd)


def _contiguous(chunks: Sequence[OutputChunk], stream: str, offset: int) -> bytes:
    """The bytes of ``stream`` from ``offset`` on, as far as ``chunks`` (sorted by start) hold
    them without a gap (a batch still being written is read next time)."""
    out = bytearray()
    position = offset
    for chunk in chunks:
        if chunk.stream != stream or chunk.end <= position:
            continue
        if chunk.start > position:
            break
        out += chunk.data[position - chunk.start :]
        position = chunk.end
    return bytes(out)


def _read_text(path: Path) -> str:
    try:
        return _decode(path.read_bytes())
    except FileNotFoundError:
        return ""
