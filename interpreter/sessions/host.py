"""A worker's sessions in the scale-out (``remote.py`` is the replicas' side).

The worker listens on a queue of its own (``queue``) besides the shared one: a session's
executions and operations come there. ``handle`` runs an operation (the ``SESSION_TASK`` of
procrastinate); ``keep_rows`` writes every local session's row each second (what GET shows, and
that the worker is alive) and removes the rows of the sessions that ended here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.errors import InterpreterError, InvalidRequest, SessionNotFound
from interpreter.job import utcnow
from interpreter.limits import ResourceLimits
from interpreter.queues.procrastinate.app import QUEUE
from interpreter.sessions.manager import Session, SessionRequest, Sessions, snapshot
from interpreter.store.tables import sessions as table

logger = logging.getLogger(__name__)

KEEP_EVERY_S = 1.0


def parse_request(data: dict[str, Any]) -> SessionRequest:
    return SessionRequest(
        language=str(data["language"]),
        packages=tuple(data.get("packages") or ()),
        limits=ResourceLimits(**data["limits"]),
        environment=dict(data.get("environment") or {}),
        idle_timeout_s=float(data["idle_timeout_s"]),
        max_lifetime_s=float(data["max_lifetime_s"]),
    )


class SessionHost:
    def __init__(self, sessions: Sessions, engine: AsyncEngine) -> None:
        self.sessions = sessions
        self.engine = engine
        self.queue = f"{QUEUE}.{secrets.token_hex(8)}"
        self._written: dict[str, dict[str, Any]] = {}  # each row's view as last written
        self._keeper: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.sessions.start()
        self.sessions.on_change = self._soon
        self._keeper = asyncio.create_task(self._keep_rows(), name="session-rows")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self.sessions.close()
        with contextlib.suppress(Exception):  # the database may be down: the rows go stale
            async with self.engine.begin() as conn:
                await conn.execute(sa.delete(table).where(table.c.id.in_(list(self._written))))

    def _soon(self, session: Session) -> None:
        """Write the session's row now (an execution ended), not at the next keeping."""
        if session.id in self._written:
            task = asyncio.create_task(self._write_quietly(session))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write_quietly(self, session: Session) -> None:
        with contextlib.suppress(Exception):  # the next keeping writes it again
            await self._write(session)

    # -- operations -------------------------------------------------------------------------
    async def handle(
        self,
        operation: str,
        session_id: str,
        owner: str | None,
        request: dict[str, Any] | None = None,
    ) -> None:
        try:
            if operation == "start":
                await self._start(session_id, owner, request or {})
            elif operation == "delete":
                with contextlib.suppress(SessionNotFound):
                    await self.sessions.delete(session_id, owner)
                await self._remove(session_id)
            elif operation == "interrupt":
                await self.sessions.interrupt(session_id, owner)
            elif operation == "restart":
                await self._write(await self.sessions.restart(session_id, owner))
        except SessionNotFound:
            await self._remove(session_id)

    async def _start(self, session_id: str, owner: str | None, request: dict[str, Any]) -> None:
        try:
            session = await self.sessions.create(owner, parse_request(request), session_id)
        except InterpreterError as exc:  # "refused": the request's fault, as a 4xx says
            status = "refused" if isinstance(exc, InvalidRequest) else "failed"
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.update(table)
                    .where(table.c.id == session_id)
                    .values(status=status, error=exc.message, seen_at=utcnow())
                )
            return
        if not await self._write(session):  # the replica gave up waiting: nobody knows it
            await self.sessions.delete(session_id, owner)

    async def _write(self, session: Session) -> bool:
        view = snapshot(session)
        async with self.engine.begin() as conn:
            written = await conn.execute(
                sa.update(table)
                .where(table.c.id == session.id)
                .values(
                    status=session.status,
                    queue=self.queue,
                    view=view,
                    error=session.error,
                    seen_at=utcnow(),
                )
            )
        if written.rowcount:
            self._written[session.id] = view
        return bool(written.rowcount)

    async def _remove(self, session_id: str) -> None:
        self._written.pop(session_id, None)
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(table).where(table.c.id == session_id))

    async def _touch(self, session_ids: list[str]) -> set[str]:
        """Mark the rows of unchanged sessions seen, in one statement; the ids whose row is
        still there."""
        if not session_ids:
            return set()
        async with self.engine.begin() as conn:
            touched = await conn.execute(
                sa.update(table)
                .where(table.c.id.in_(session_ids))
                .values(seen_at=utcnow())
                .returning(table.c.id)
            )
            return {row[0] for row in touched}

    async def _keep_rows(self) -> None:
        while True:
            await asyncio.sleep(KEEP_EVERY_S)
            try:
                await self._keep_once()
            except Exception as exc:  # an outage: the rows go stale, the sessions live on
                logger.debug("session rows not written: %s", type(exc).__name__)

    async def _keep_once(self) -> None:
        held = {s.id: s for s in self.sessions.all() if s.id in self._written}
        unchanged = [i for i, s in held.items() if snapshot(s) == self._written[i]]
        kept = await self._touch(unchanged)
        for session in held.values():
            there = session.id in kept if session.id in unchanged else await self._write(session)
            if not there:  # its row was removed (a replica found it stale): it is no one's
                self._written.pop(session.id, None)
                await self.sessions.delete(session.id, session.owner)
        for gone in self._written.keys() - {s.id for s in self.sessions.all()}:
            await self._remove(gone)  # ended here: reaped, or died
