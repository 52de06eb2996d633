"""Prometheus metrics, one registry per application (so that tests and apps never share state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "WarmStats"]


@dataclass(frozen=True, slots=True)
class WarmStats:
    """What the warm pool did and holds (``interpreter/sandbox/warm.py``)."""

    hits: int  # Python jobs forked from a warm parent
    misses: int  # Python jobs that could have been, and ran cold
    parents: tuple[tuple[str, int, int], ...]  # (environment, pid, resident bytes)


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

    def watch_warm_pool(self, stats: Callable[[], WarmStats | None]) -> None:
        """Report the warm pool's starts and its parents' memory at each scrape."""
        self.registry.register(_WarmPool(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WarmPool(Collector):
    def __init__(self, stats: Callable[[], WarmStats | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        if stats is None:
            return
        starts = CounterMetricFamily(
            "interpreter_warm_pool_starts",
            "Python jobs that could be forked from a warm parent: hit (forked), miss (ran cold)",
            labels=["outcome"],
        )
        starts.add_metric(["hit"], stats.hits)
        starts.add_metric(["miss"], stats.misses)
        yield starts
        yield GaugeMetricFamily(
            "interpreter_warm_pool_parents", "Warm parents running", value=len(stats.parents)
        )
        memory = GaugeMetricFamily(
            "interpreter_warm_pool_parent_memory_bytes",
            "Resident memory of each warm parent",
            labels=["environment", "parent"],
        )
        for index, (environment, _pid, rss) in enumerate(stats.parents):
            memory.add_metric([environment, str(index)], rss)
        yield memory
