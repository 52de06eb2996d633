"""Scale-out on PostgreSQL: the job rows in the same SQLAlchemy tables as the embedded mode, the
queue in procrastinate, workers in any number of processes and machines."""

from interpreter.queues.procrastinate.queue import PostgresQueue
from interpreter.queues.procrastinate.schema import ensure_schema, schema_ready
from interpreter.queues.procrastinate.worker import WorkerNode

__all__ = ["PostgresQueue", "WorkerNode", "ensure_schema", "schema_ready"]
