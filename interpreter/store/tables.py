"""The job table, defined once with SQLAlchemy Core so that every SQL backend reuses it."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()


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
    sa.Index("ix_jobs_status_seq", "status", "seq"),
    sa.Index("ix_jobs_owner_seq", "owner", "seq"),
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
