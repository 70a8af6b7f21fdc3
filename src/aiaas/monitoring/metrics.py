"""Prometheus metrics of the HTTP layer, in a registry per app (tests build many apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "aiaas_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aiaas_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        #: (route, method, status) → its counter and histogram children: ``labels()``
        #: validates and hashes its arguments on every call, a tenth of a prediction's cost
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series_of(route, method, status)
        series[0].inc()
        series[1].observe(seconds)

    def _series_of(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        label = method if method in _METHODS else "OTHER"  # bounded label cardinality
        series = (
            self.requests.labels(route, label, str(status)),
            self.latency.labels(route, label),
        )
        if method in _METHODS:  # routes are templates and statuses few: the keys are bounded
            self._series[(route, method, status)] = series
        return series

    def render(self) -> bytes:
        return generate_latest(self.registry)
