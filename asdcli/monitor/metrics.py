"""Prometheus metrics of `asd serve`, named by the client library's conventions.

Base units (seconds), ``_total`` counters, labels of bounded cardinality: the route template
(``/v1/score``, not the URL), the status code, the detector, the machine (one of the run's).
Each app has its own registry, so two apps in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Scoring takes milliseconds; requests up to seconds for a batch.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters and histograms of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "asd_requests",
            "HTTP requests and WebSocket streams by route template and status code.",
            ("route", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "asd_request_seconds",
            "Time to answer a request, by route template.",
            ("route",),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.score_seconds = Histogram(
            "asd_score_seconds",
            "Time to score one clip or stream window (decode, log-mel, model), by detector.",
            ("detector",),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "asd_decisions",
            "Scored clips and windows by machine and decision (1 = anomalous).",
            ("machine", "decision"),
            registry=self.registry,
        )
        self.rejected = Counter(
            "asd_rejected_clips",
            "Clips refused, by reason (empty, not_audio, too_long, ...).",
            ("reason",),
            registry=self.registry,
        )

    def scored(self, detector: str, machine: str, decision: int, seconds: float) -> None:
        self.score_seconds.labels(detector).observe(seconds)
        self.decisions.labels(machine, str(decision)).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
