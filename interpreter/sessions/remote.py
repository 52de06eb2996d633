"""Sessions in the scale-out: kernels run on workers, any API replica answers for them.

A session lives on the worker that started it. Its row in ``sessions`` (store/tables.py) is how
replicas see it: the worker writes what GET shows and touches it every second (``host.py``).
A replica asks for an operation (start, delete, interrupt, restart) with a procrastinate task:
a start on the shared queue (any worker takes it), the others on the session's worker's own
queue, where its executions (jobs) go too. It then waits until the row shows the effect. A row
nobody touched for the lost-worker window is a session whose worker is gone: it answers 404,
its row is removed, and the executions still queued for that worker go to the shared queue,
where any worker fails them as the session having ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from datetime import timedelta
from typing import Any

import procrastinate
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.config import Settings
from interpreter.errors import (
    ServiceUnavailable,
    SessionNotFound,
    SessionsFull,
    SessionStartRefused,
    SessionUnavailable,
    TooManySessions,
)
from interpreter.job import utcnow
from interpreter.queues.procrastinate.app import QUEUE, session_operation
from interpreter.sessions.manager import MAX_WAITING, SessionRequest
from interpreter.store.tables import sessions as table

POLL_S = 0.05
START_TIMEOUT_S = 900.0  # a start installs the session's packages first
OPERATION_TIMEOUT_S = 60.0


def request_json(request: SessionRequest) -> dict[str, Any]:
    data = dataclasses.asdict(request)
    data["limits"] = request.limits.to_dict()
    data["packages"] = list(request.packages)
    return data


class RemoteSessions:
    def __init__(self, settings: Settings, engine: AsyncEngine, app: procrastinate.App) -> None:
        self.settings = settings
        self.engine = engine
        self.app = app

    # -- rows -------------------------------------------------------------------------------
    async def _rows(self, where: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.select(table).where(where))).all())

    def _stale(self, row: Any) -> bool:
        window = timedelta(seconds=self.settings.worker_lost_after_s)
        return bool(row.status != "starting" and utcnow() - row.seen_at > window)

    async def _forget(self, row: Any) -> None:
        """A session whose worker is gone: its row goes, its queued executions go where any
        worker fails them."""
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(table).where(table.c.id == row.id))
            if row.queue:
                await conn.execute(
                    sa.text(
                        "UPDATE procrastinate_jobs SET queue_name = :shared "
                        "WHERE queue_name = :queue AND status = 'todo'"
                    ),
                    {"shared": QUEUE, "queue": row.queue},
                )

    async def _row(self, session_id: str, owner: str | None) -> Any:
        rows = await self._rows(table.c.id == session_id)
        if not rows or rows[0].owner != owner or rows[0].view is None:
            raise SessionNotFound(session_id)
        row = rows[0]
        if self._stale(row):
            await self._forget(row)
            raise SessionNotFound(session_id)
        return row

    async def queue_of(self, session_id: str) -> str | None:
        """The queue of the worker that holds the session (its executions go there)."""
        rows = await self._rows(table.c.id == session_id)
        return rows[0].queue if rows else None

    # -- what the routes ask ----------------------------------------------------------------
    async def mine(self, owner: str | None) -> list[dict[str, Any]]:
        views = []
        for row in await self._rows(table.c.owner == owner):
            if row.view is None:
                continue
            if self._stale(row):
                await self._forget(row)
                continue
            views.append(row.view)
        return views

    async def show(self, session_id: str, owner: str | None) -> dict[str, Any]:
        view: dict[str, Any] = (await self._row(session_id, owner)).view
        return view

    async def admit(self, session_id: str, owner: str | None) -> str:
        row = await self._row(session_id, owner)
        if row.status == "dead":
            raise SessionUnavailable(
                f"the session's kernel is dead ({row.view.get('error')}); restart or delete it"
            )
        async with self.engine.connect() as conn:
            waiting = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running') "
                        "AND request->>'session_id' = :id"
                    ),
                    {"id": session_id},
                )
            ).scalar_one()
        if waiting > MAX_WAITING:
            raise SessionUnavailable(
                f"{waiting - 1} executions already wait in this session; retry later"
            )
        language: str = row.view["language"]
        return language

    async def create(self, owner: str | None, request: SessionRequest) -> dict[str, Any]:
        session_id = secrets.token_hex(16)
        async with self.engine.begin() as conn:  # the caps, under a lock every replica takes
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": 0x5E55})
            counts = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.count().filter(table.c.owner == owner),
                    ).select_from(table)
                )
            ).one()
            total, mine = int(counts[0]), int(counts[1])
            if mine >= self.settings.max_sessions_per_key:
                raise TooManySessions(
                    f"this API key holds {mine} sessions, the most it may "
                    "(INTERPRETER_MAX_SESSIONS_PER_KEY); delete one first",
                    retry_after_s=5.0,
                )
            if total >= self.settings.max_sessions:
                raise SessionsFull(
                    f"the server holds {total} sessions, the most it may "
                    "(INTERPRETER_MAX_SESSIONS); retry later",
                    retry_after_s=5.0,
                )
            await conn.execute(
                sa.insert(table).values(
                    id=session_id, owner=owner, status="starting", seen_at=utcnow()
                )
            )
        try:
            await self._ask(QUEUE, "start", session_id, owner, request_json(request))
            row = await self._until(session_id, lambda r: r is None or r.status != "starting")
        except BaseException:
            async with self.engine.begin() as conn:
                await conn.execute(sa.delete(table).where(table.c.id == session_id))
            raise
        if row is None or row.view is None:  # its start failed: the worker said why
            async with self.engine.begin() as conn:
                await conn.execute(sa.delete(table).where(table.c.id == session_id))
            if row is not None and row.status == "refused":  # as the worker's error said
                raise SessionStartRefused(row.error)
            error = row.error if row is not None else "it ended"
            raise ServiceUnavailable(f"the session could not start: {error}")
        view: dict[str, Any] = row.view
        return view

    async def delete(self, session_id: str, owner: str | None) -> None:
        row = await self._row(session_id, owner)
        await self._ask(row.queue, "delete", session_id, owner)
        await self._until(session_id, lambda r: r is None, OPERATION_TIMEOUT_S)

    async def interrupt(self, session_id: str, owner: str | None) -> dict[str, Any]:
        row = await self._row(session_id, owner)
        await self._ask(row.queue, "interrupt", session_id, owner)
        view: dict[str, Any] = row.view
        return view

    async def restart(self, session_id: str, owner: str | None) -> dict[str, Any]:
        row = await self._row(session_id, owner)
        starts = row.view.get("starts", 0)
        await self._ask(row.queue, "restart", session_id, owner)
        again = await self._until(
            session_id,
            lambda r: r is None or (r.view or {}).get("starts", 0) > starts,
            OPERATION_TIMEOUT_S,
        )
        if again is None:
            raise SessionNotFound(session_id)
        view: dict[str, Any] = again.view
        return view

    def files(self, session_id: str) -> None:
        return None  # on the worker that holds it

    # -- operations -------------------------------------------------------------------------
    async def _ask(
        self,
        queue: str,
        operation: str,
        session_id: str,
        owner: str | None,
        request: dict[str, Any] | None = None,
    ) -> None:
        entry = session_operation(queue, operation, session_id, owner, request)
        await self.app.job_manager.defer_job_async(entry)

    async def _until(self, session_id: str, done: Any, timeout_s: float = START_TIMEOUT_S) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            rows = await self._rows(table.c.id == session_id)
            row = rows[0] if rows else None
            if done(row):
                return row
            if loop.time() > deadline:
                raise ServiceUnavailable("no worker answered for the session in time; retry")
            await asyncio.sleep(POLL_S)
