"""A finished job's files: list them, read one (byte ranges), or take them all as a .tar.gz.

The service says where they are (``JobService.files``: the job's directory here, or the copy a
worker captured into the store); these routes only speak HTTP. Another key's job is 404, a job
that is not final yet 409, a path that is absolute, holds '..', goes through a symlink or names
anything but a regular file 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from interpreter.api.deps import OwnerDep, ServiceDep
from interpreter.api.routes.jobs import NOT_FOUND, STORE_DOWN, Responses, error
from interpreter.api.schemas import JobFile, JobFilesResponse, SkippedEntry
from interpreter.errors import RangeNotSatisfiable
from interpreter.job import utcnow
from interpreter.jobfiles import archive, content_type, parse_range, within

router = APIRouter(tags=["files"])

NOT_FINAL: Responses = {409: error("The job is not final yet: its files are still being written")}
LIST_RESPONSES: Responses = {**NOT_FOUND, **NOT_FINAL}
BYTES = {"schema": {"type": "string", "format": "binary"}}
FILE_RESPONSES: Responses = {
    200: {
        "description": "The file's bytes, its type guessed from its name",
        "content": {"*/*": BYTES},
    },
    206: {
        "description": "One byte range of the file (Range: bytes=...; Content-Range says which)",
        "content": {"*/*": BYTES},
    },
    404: error("Job not found (or not yours), or no such regular file in its directory"),
    **STORE_DOWN,
    **NOT_FINAL,
    416: error("The range is outside the file (Content-Range: bytes */size)"),
}
ARCHIVE_RESPONSES: Responses = {
    200: {
        "description": "The directory as a gzipped tar: its directories and regular files",
        "content": {"application/gzip": BYTES},
    },
    **LIST_RESPONSES,
}


@router.get("/jobs/{job_id}/files", response_model=JobFilesResponse, responses=LIST_RESPONSES)
async def list_job_files(job_id: str, service: ServiceDep, owner: OwnerDep) -> JobFilesResponse:
    """What the finished job's working directory holds: each regular file (path, size, times,
    sha256), and what was not listed or captured (symlinks, special files, files over the
    capture caps), with the reason."""
    source = await service.files(job_id, owner)
    listing = await source.listing()
    return JobFilesResponse(
        job_id=job_id,
        source=source.source,
        files=[
            JobFile(
                path=f.path,
                size=f.size,
                created_at=f.created_at,
                modified_at=f.modified_at,
                sha256=f.sha256,
            )
            for f in listing.files
        ],
        skipped=[SkippedEntry(path=s.path, type=s.kind, reason=s.reason) for s in listing.skipped],
        complete=listing.complete,
        note=listing.note,
    )


@router.get(
    "/jobs/{job_id}/files/{path:path}",
    response_class=StreamingResponse,
    responses=FILE_RESPONSES,
)
async def get_job_file(
    job_id: str, path: str, request: Request, service: ServiceDep, owner: OwnerDep
) -> StreamingResponse:
    """One file of the finished job's working directory. Accepts one byte range
    (`Range: bytes=start-end`, `bytes=start-`, `bytes=-suffix`): 206 with that part."""
    source = await service.files(job_id, owner)
    opened = await source.open(path)
    try:
        span = parse_range(request.headers.get("range"), opened.size)
    except RangeNotSatisfiable:
        await opened.close()
        raise
    start, end = span if span is not None else (0, opened.size)
    headers: dict[str, Any] = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Type": content_type(path),
        # A job's file is no page of this API's origin: downloaded, never run as one
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{opened.size}"
    return StreamingResponse(
        opened.chunks(start, end), status_code=206 if span else 200, headers=headers
    )


@router.get("/jobs/{job_id}/archive", response_class=StreamingResponse, responses=ARCHIVE_RESPONSES)
async def get_job_archive(job_id: str, service: ServiceDep, owner: OwnerDep) -> StreamingResponse:
    """The finished job's working directory as a .tar.gz: its directories and regular files
    (never a symlink, nor what one points to; nothing the listing skipped), in path order while
    their sizes add up to at most INTERPRETER_MAX_CAPTURED_BYTES; `X-Archive-Omitted` counts the
    files left out past it (fetch them one by one)."""
    source = await service.files(job_id, owner)
    listing, omitted = within(
        await source.listing(hashed=False), service.settings.max_captured_bytes
    )
    return StreamingResponse(
        archive(source, listing, utcnow()),
        media_type="application/gzip",
        headers={
            "Content-Disposition": f'attachment; filename="{job_id}.tar.gz"',
            "X-Archive-Omitted": str(omitted),
        },
    )
