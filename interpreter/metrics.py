"""Prometheus metrics, one registry per application (so that tests and apps never share state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_JOB_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "interpreter_http_request_duration_seconds",
            "HTTP request duration by route",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "interpreter_jobs_finished_total",
            "Jobs that reached a final status",
            ["status"],
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "interpreter_jobs_submitted_total",
            "Jobs accepted by POST /execute",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "interpreter_queue_depth", "Jobs waiting to run", registry=self.registry
        )
        self.running_jobs = Gauge(
            "interpreter_running_jobs", "Jobs running now", registry=self.registry
        )
        self.job_duration = Histogram(
            "interpreter_job_duration_seconds",
            "Wall time of a job's process",
            ["language"],
            buckets=_JOB_BUCKETS_S,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
