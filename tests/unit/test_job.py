from __future__ import annotations

import dataclasses

import pytest

from interpreter.job import FINAL_STATUSES, TRANSITIONS, Job, JobRequest, JobStatus, sources_of


def test_final_statuses_have_no_way_out() -> None:
    assert FINAL_STATUSES == {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.TIMEOUT,
        JobStatus.CANCELLED,
    }
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()


def test_the_six_statuses_of_the_spec() -> None:
    assert [s.value for s in JobStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "timeout",
        "cancelled",
    ]


def test_cancel_is_reachable_from_pending_and_running_only() -> None:
    assert sources_of(JobStatus.CANCELLED) == {JobStatus.PENDING, JobStatus.RUNNING}
    assert sources_of(JobStatus.COMPLETED) == {JobStatus.RUNNING}


def test_job_is_frozen_and_evolves() -> None:
    job = Job(id="x", request=JobRequest(code="", language="python", timeout_s=1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.RUNNING  # type: ignore[misc]
    evolved = job.evolve(status=JobStatus.RUNNING)
    assert evolved.status == JobStatus.RUNNING and job.status == JobStatus.PENDING
    assert job.created_at.tzinfo is not None
