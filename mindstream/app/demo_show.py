"""What ``mindstream demo`` shows once the clicks have gone through: per user, planted (or
watched) categories next to what each recovered interest captures and the recalled candidates;
and the measured freshness, throughput and recall latency. Reads Redis, the worker's
``/metrics`` and the recall service's HTTP API; prints plain text.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mindstream.app.report_interests import MIN_PLANTED_BEHAVIOURS, NO_CATEGORY, TOP_ITEMS, UserView
from mindstream.app.report_results import histogram_quantile, percentiles

logger = logging.getLogger(__name__)

FRESHNESS_METRIC = "mindstream_stream_freshness_seconds"
CANDIDATES_SHOWN = 8


class RecallClient:
    """A keep-alive HTTP connection to the recall service (stdlib only)."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=payload, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else None
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.connection.close()
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def candidates(self, user_id: str, n: int) -> tuple[int, Any]:
        quoted = urllib.parse.quote(user_id, safe="")
        return self.request("GET", f"/v1/users/{quoted}/candidates?n={n}")

    def candidates_batch(self, user_ids: Sequence[str], n: int) -> list[dict[str, Any]]:
        status, body = self.request("POST", "/v1/candidates", {"user_ids": list(user_ids), "n": n})
        if status != 200:
            raise RuntimeError(f"POST /v1/candidates answered {status}: {body}")
        return list(body["results"])

    def close(self) -> None:
        self.connection.close()


def timed_requests(
    client: RecallClient, user_ids: Sequence[str], n: int, count: int
) -> tuple[dict[str, Any], int]:
    """Latency of ``count`` sequential single-user candidate requests (keep-alive), and how
    many answered something other than 200."""
    samples, failures = [], 0
    for i in range(count):
        started = time.perf_counter()
        status, _ = client.candidates(user_ids[i % len(user_ids)], n)
        samples.append((time.perf_counter() - started) * 1000)
        failures += status != 200
    return percentiles(samples), failures


def worker_freshness(metrics_text: str) -> dict[str, Any] | None:
    """The worker's freshness histogram as a results entry (non-cumulative bucket counts)."""
    from prometheus_client.parser import text_string_to_metric_families

    bounds: list[float] = []
    cumulative: list[float] = []
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"{FRESHNESS_METRIC}_bucket":
                bounds.append(float(sample.labels["le"]))
                cumulative.append(sample.value)
    if not bounds:
        return None
    order = np.argsort(bounds)
    sorted_bounds = [bounds[i] for i in order]
    running = [cumulative[i] for i in order]
    counts = [running[0], *(b - a for a, b in itertools.pairwise(running))]
    return {
        "name": "worker: Redis write - Kafka record time, per event",
        "buckets_s": sorted_bounds,
        "counts": [int(c) for c in counts],
    }


def quantiles_text(entry: Mapping[str, Any]) -> str:
    """``p50 .. · p95 .. · p99 ..`` of a freshness results entry, in milliseconds."""
    if "samples_ms" in entry:
        stats = percentiles(entry["samples_ms"])
        if not stats.get("count"):
            return "no samples"
        return (
            f"p50 {stats['p50_ms']:.0f} ms · p95 {stats['p95_ms']:.0f} ms · "
            f"max {stats['max_ms']:.0f} ms over {stats['count']:,}"
        )
    b, c = entry["buckets_s"], entry["counts"]
    p = [histogram_quantile(b, c, q) * 1000 for q in (0.5, 0.95, 0.99)]
    if math.isnan(p[0]):
        return "no events"
    return f"p50 ~{p[0]:.0f} ms · p95 ~{p[1]:.0f} ms · p99 ~{p[2]:.0f} ms over {sum(c):,} events"


@dataclass(frozen=True)
class ItemText:
    """How items are named in the output: a label (title, "c3 #2") and a category."""

    labels: Mapping[str, str]
    categories: Mapping[str, str | None]

    def describe(self, item_id: str) -> str:
        label = self.labels.get(item_id)
        category = self.categories.get(item_id)
        if label and category and category not in label:
            return f"{item_id} {label} [{category}]"
        if label:
            return f"{item_id} ({label})"
        return f"{item_id} [{category}]" if category else item_id


def format_user(user: UserView, items: ItemText, say: Callable[[str], None]) -> None:
    """Print one user's planted/window categories, interests and candidates."""
    window = ", ".join(f"{c} ×{n}" for c, n in user.window[:6])
    more = "" if len(user.window) <= 6 else f", +{len(user.window) - 6} more"
    total = sum(n for _, n in user.window)
    named = any(c != NO_CATEGORY for c, _ in user.window)
    say(
        f"\n  user {user.user_id}: {total} clicks in the window"
        + (f": {window}{more}" if named else "")
    )
    if user.planted is not None:
        counts = user.planted_counts()
        planted = ", ".join(f"{c} ({counts[c]} clicks)" for c in user.planted)
        say(f"    planted interests: {planted}")
    expected = set(user.planted) if user.planted is not None else {c for c, _ in user.window}
    for j, interest in enumerate(user.interests, start=1):
        if interest.majority in (None, NO_CATEGORY):
            # No categories in this log: name the interest by its top items instead.
            top = "; ".join(items.describe(i) for i in interest.items[:3])
            say(f"    interest {j}: top items {top}")
            continue
        top = ", ".join(f"{c} ×{n}" for c, n in interest.categories[:3])
        if user.planted is not None:
            verdict = f"= planted {interest.majority}" if interest.majority in expected else "-"
        else:
            verdict = "in window" if interest.majority in expected else "not in window"
        nearest = ""
        # On real data categories overlap (first genre, ...): the nearest mean says little.
        if (
            user.planted is not None
            and interest.closest is not None
            and interest.cosine is not None
        ):
            nearest = f"nearest mean {interest.closest} (cos {interest.cosine:.2f})"
        say(f"    interest {j}: top-{TOP_ITEMS} items {top:<28} {nearest:<30} {verdict}")
    if user.candidates:
        shown = ", ".join(
            f"{items.describe(c['item_id'])} (interest {c['interest'] + 1})"
            for c in user.candidates[:CANDIDATES_SHOWN]
        )
        say(f"    recalled: {shown}")


def match_text(match: Mapping[str, Any]) -> str:
    return (
        f"recovered interests match the planted ones: {match['recovered']}/{match['planted']} "
        f"({match['share']:.0%}) of planted interests with >= {MIN_PLANTED_BEHAVIOURS} clicks in "
        f"the window are the majority category of one of the user's interests "
        f"({match['users']} multi-interest users; counting every planted interest "
        f"{match['share_all']:.0%}; a random other category: {match['chance']:.0%})"
    )
