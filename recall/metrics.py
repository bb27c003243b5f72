"""Prometheus metrics of one recall service (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets around the 10 ms target, fine below it.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    1.0,
    5.0,
)


class RecallMetrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recall_requests_total",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "recall_request_seconds",
            "Request latency by route, handler entry to response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "recall_search_seconds",
            "Faiss search time per call (all interests of all users in the call).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "recall_redis_seconds",
            "Time to read interest records from Redis per call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "recall_redis_errors_total", "Redis calls that failed or timed out.", registry=r
        )
        self.users = Counter(
            "recall_users_total",
            "Users looked up, by outcome (ok, not_found, model_unavailable, diversity_unavailable, "
            "bad_record).",
            ["outcome"],
            registry=r,
        )
        self.served_by_version = Counter(
            "recall_served_model_total",
            "Users served, by the bundle version of their vectors (current or older).",
            ["model", "current"],
            registry=r,
        )
        self.index_swaps = Counter(
            "recall_index_swaps_total", "Indexes installed (start-up and hot swaps).", registry=r
        )
        self.index_load_failures = Counter(
            "recall_index_load_failures_total",
            "New bundles whose index failed to load.",
            registry=r,
        )
        self.loaded_versions = Gauge(
            "recall_loaded_versions", "Bundle versions whose index is loaded.", registry=r
        )
        self.index_items = Gauge("recall_index_items", "Items in the current index.", registry=r)
