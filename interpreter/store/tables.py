"""The job table, defined once with SQLAlchemy Core so that every SQL backend reuses it."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()
IDEMPOTENCY_INDEX = "uq_jobs_idempotency_key"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, stored as naive UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the job store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("language", sa.String(64), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.Column("execution_time_ms", sa.Float, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("worker_id", sa.String(64), nullable=True),
    sa.Column("worker_host", sa.String(255), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("queue_id", sa.BigInteger, nullable=True),  # procrastinate's job id (PostgreSQL)
    # "<owner>:<Idempotency-Key>" (job.idempotency_scope): unique, so that of two submissions
    # with one key, on any replica, one creates the job and the other finds it
    sa.Column("idempotency_key", sa.String(330), nullable=True),
    sa.Column("request_digest", sa.String(64), nullable=True),
    sa.Index("ix_jobs_status_seq", "status", "seq"),
    sa.Index("ix_jobs_owner_seq", "owner", "seq"),
    sa.Index(IDEMPOTENCY_INDEX, "idempotency_key", unique=True),
)


# Outputs kept in the database (scale-out: every replica serves them). The embedded mode keeps
# them in files beside the database instead.
job_outputs = sa.Table(
    "job_outputs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("stdout", sa.LargeBinary, nullable=False),
    sa.Column("stderr", sa.LargeBinary, nullable=False),
)


# A finished job's files, captured by the worker that ran it (scale-out: API replicas do not
# share its disk). One row per entry: a file with its bytes, a directory, a skipped entry (with
# its reason), or the note of an incomplete listing (path ""). Deleted with the job.
job_files = sa.Table(
    "job_files",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("modified_at", UTCDateTime, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("content", sa.LargeBinary, nullable=True),
)


# Files sent with a job, kept until it runs (the runner reads them wherever it runs: workers
# share no disk with the API replicas). Written with the job's row, deleted with it, and once
# the job is final. ``seq``: their order in the request.
job_inputs = sa.Table(
    "job_inputs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


# A running job's output as its worker publishes it (scale-out: any replica streams it live). Only
# each stream's head (the first max_output_bytes // 2 bytes) is published, so a job keeps at most
# max_output_bytes here; the rows are deleted once the job is final (its outputs are then in
# job_outputs) and with the job. ``seq`` orders the rows; a job re-run after its worker was lost
# publishes from offset 0 again.
job_chunks = sa.Table(
    "job_chunks",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("stream", sa.String(6), nullable=False),
    sa.Column("start", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Index("ix_job_chunks_job_stream_start", "job_id", "stream", "start"),
)


# Sessions in the scale-out (interpreter/sessions/remote.py): each lives on one worker, which
# keeps its row up to date (``view``: what GET /sessions/{id} shows) and touches ``seen_at``
# every second; ``queue`` is that worker's own queue, where the session's executions and
# operations go. A row no worker touched for the lost-worker window is a session that ended
# with its worker.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("queue", sa.String(128), nullable=True),
    sa.Column("view", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    sa.Index("ix_sessions_owner", "owner"),
)
