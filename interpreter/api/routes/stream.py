"""The live output route: a job's output as Server-Sent Events (see ``api.sse``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from interpreter.api.deps import OwnerDep, ServiceDep
from interpreter.api.routes.jobs import NOT_FOUND, Responses, error
from interpreter.api.sse import EVENT_ID, EVENT_ID_RULE, Offsets, job_events

router = APIRouter(tags=["jobs"])

EVENT_ID_PATTERN = EVENT_ID.pattern
STREAM_RESPONSES: Responses = {
    200: {
        "description": "The job's events (status, stdout, stderr, end) as Server-Sent Events",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **NOT_FOUND,
    422: error(EVENT_ID_RULE),
}


@router.get(
    "/jobs/{job_id}/stream",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
)
async def stream_job(
    job_id: str,
    service: ServiceDep,
    owner: OwnerDep,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=EVENT_ID_PATTERN,
            description="Resume after this event (an event's id: <stdout offset>:<stderr offset>)",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            pattern=EVENT_ID_PATTERN,
            description="Resume after this event, for clients that cannot set the header "
            "(the header wins when both are given)",
        ),
    ] = None,
) -> StreamingResponse:
    """The job's output while it runs, as Server-Sent Events: `status` when its status changes,
    `stdout` and `stderr` as it writes them, `end` once it is final and everything was sent.
    A finished job replays its output and ends. Resume a dropped connection with the last
    event's id in `Last-Event-ID`: nothing is lost or repeated."""
    start = Offsets.parse(last_event_id_header or last_event_id)
    await service.get(job_id, owner)  # 404 (and 503) before the stream starts
    return StreamingResponse(
        job_events(service, job_id, owner, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
