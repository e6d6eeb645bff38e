"""The reference computation on a hand-built example, against hand-computed
numbers (written out below, not computed)."""

from __future__ import annotations

import random

import pytest

from spanstream.aggregate.types import EdgeKey, LatencyStats, RedKey
from spanstream.traffic.generator import generate_traces, truths
from spanstream.traffic.reference import (
    ExpectedStats,
    diff_stats,
    expected,
    expected_red,
)
from spanstream.traffic.truth import SpanTruth

B = 1_800_000_000  # unix seconds; a multiple of 60, so window B is [B, B+60)
MS = 1_000_000
SEC = 1_000_000_000


def span(
    tenant: str,
    trace: str,
    span_id: str,
    parent: str | None,
    service: str,
    operation: str,
    kind: str,
    start_secs: float,
    duration_millis: int,
    status_class: str = "UNSET",
    is_error: bool = False,
    **extra,
) -> SpanTruth:
    start = int(B * SEC + start_secs * SEC)
    values = {
        "http_status_code": None,
        "is_cold_start": False,
        "faas_name": None,
        "peer_service": None,
        "db_system": None,
        "messaging_system": None,
        **extra,
    }
    return SpanTruth(
        tenant=tenant,
        trace_id=trace * 32,
        span_id=span_id * 16,
        parent_span_id=parent * 16 if parent else None,
        service=service,
        operation=operation,
        span_name=operation,
        span_kind=kind,
        start_unix_nanos=start,
        end_unix_nanos=start + duration_millis * MS,
        duration_nanos=duration_millis * MS,
        is_error=is_error,
        status_code="ERROR" if is_error else "UNSET",
        status_class=status_class,
        **values,
    )


EXAMPLE = [
    # trace a: frontend -> cart (HTTP 500) -> redis; frontend -> kafka -> worker
    span("t", "a", "1", None, "frontend", "GET /x", "SERVER", 1.0, 500, "2xx"),
    span("t", "a", "2", "1", "frontend", "GET", "CLIENT", 1.1, 300, "5xx", True),
    span("t", "a", "3", "2", "cart", "GET /cart", "SERVER", 1.15, 200, "5xx", True),
    span("t", "a", "4", "3", "cart", "HGET", "CLIENT", 1.2, 50, db_system="redis"),
    span(
        "t", "a", "5", "1", "frontend", "orders publish", "PRODUCER", 1.45, 10,
        messaging_system="kafka", peer_service="kafka",
    ),
    span(
        "t", "a", "6", "5", "worker", "orders process", "CONSUMER", 61.0, 500,
        messaging_system="kafka",
    ),
    # trace b: a cold function invocation calling an external API (HTTP 402)
    span(
        "t", "b", "7", None, "fn", "fraud", "SERVER", 2.0, 1000,
        faas_name="fraud-fn", is_cold_start=True,
    ),
    span(
        "t", "b", "8", "7", "fn", "POST", "CLIENT", 2.1, 200, "4xx", True,
        peer_service="api.example.com",
    ),
    # trace c: a warm invocation; trace d: another page view
    span("t", "c", "9", None, "fn", "fraud", "SERVER", 10.0, 200, faas_name="fraud-fn"),
    span("t", "d", "a", None, "frontend", "GET /x", "SERVER", 20.0, 700, "2xx"),
    # trace e: another tenant
    span("u", "e", "b", None, "frontend", "GET /x", "SERVER", 5.0, 300, "2xx"),
]  # fmt: skip


def stats_tuple(stats: ExpectedStats) -> tuple:
    return (
        stats.count,
        stats.errors,
        stats.duration_sum_nanos // MS,
        stats.duration_min_nanos // MS,
        stats.duration_max_nanos // MS,
    )


def test_red_by_hand() -> None:
    red = expected(EXAMPLE).red
    assert {key: stats_tuple(stats) for key, stats in red.items()} == {
        ("t", "frontend", "GET /x", "SERVER", "2xx", B): (2, 0, 1200, 500, 700),
        ("t", "frontend", "GET", "CLIENT", "5xx", B): (1, 1, 300, 300, 300),
        ("t", "cart", "GET /cart", "SERVER", "5xx", B): (1, 1, 200, 200, 200),
        ("t", "cart", "HGET", "CLIENT", "UNSET", B): (1, 0, 50, 50, 50),
        ("t", "frontend", "orders publish", "PRODUCER", "UNSET", B): (1, 0, 10, 10, 10),
        ("t", "worker", "orders process", "CONSUMER", "UNSET", B + 60): (
            1, 0, 500, 500, 500,
        ),
        ("t", "fn", "fraud", "SERVER", "UNSET", B): (2, 0, 1200, 200, 1000),
        ("t", "fn", "POST", "CLIENT", "4xx", B): (1, 1, 200, 200, 200),
        ("u", "frontend", "GET /x", "SERVER", "2xx", B): (1, 0, 300, 300, 300),
    }  # fmt: skip


def test_red_keys_match_the_pipeline_key_type() -> None:
    red = expected(EXAMPLE).red
    assert RedKey("u", "frontend", "GET /x", "SERVER", "2xx", B) in red


def test_edges_by_hand() -> None:
    edges = expected(EXAMPLE).edges
    assert {key: stats_tuple(stats) for key, stats in edges.items()} == {
        # the client half measures the call; the 500 makes it an error
        ("t", "frontend", "cart", "rpc", B): (1, 1, 300, 300, 300),
        ("t", "cart", "redis", "database", B): (1, 0, 50, 50, 50),
        # in the producer's window, although the consumer ran a minute later
        ("t", "frontend", "worker", "messaging", B): (1, 0, 10, 10, 10),
        ("t", "fn", "api.example.com", "peer", B): (1, 1, 200, 200, 200),
    }
    assert EdgeKey("t", "cart", "redis", "database", B) in edges


def test_edge_error_when_only_the_server_half_failed() -> None:
    client = span("t", "f", "1", None, "a", "GET", "CLIENT", 0, 10, "2xx")
    server = span("t", "f", "2", "1", "b", "GET /", "SERVER", 0, 5, "ERROR", True)
    (stats,) = expected([client, server]).edges.values()
    assert (stats.count, stats.errors) == (1, 1)


def test_a_caller_with_nothing_to_name_makes_no_edge() -> None:
    lonely = span("t", "f", "1", None, "a", "work", "CLIENT", 0, 10)
    assert expected([lonely]).edges == {}


def test_trace_summaries_by_hand() -> None:
    traces = expected(EXAMPLE).traces
    a = traces["t", "a" * 32]
    assert (a.root_service, a.root_operation) == ("frontend", "GET /x")
    assert a.start_unix_nanos == B * SEC + 1 * SEC
    assert a.end_unix_nanos == B * SEC + 61_500 * MS
    assert (a.span_count, a.error_count, a.cold_start_count) == (6, 2, 0)
    assert a.services == ["cart", "frontend", "worker"]
    b = traces["t", "b" * 32]
    assert (b.span_count, b.error_count, b.cold_start_count) == (2, 1, 1)
    assert b.end_unix_nanos - b.start_unix_nanos == 1000 * MS
    assert set(traces) == {
        ("t", "a" * 32),
        ("t", "b" * 32),
        ("t", "c" * 32),
        ("t", "d" * 32),
        ("u", "e" * 32),
    }


def test_a_trace_without_its_root_has_no_root() -> None:
    orphan = span("t", "f", "2", "1", "a", "x", "INTERNAL", 0, 10)
    summary = expected([orphan]).traces["t", "f" * 32]
    assert (summary.root_service, summary.root_operation) == (None, None)


def test_cold_starts_by_hand() -> None:
    cold_starts = expected(EXAMPLE).cold_starts
    assert list(cold_starts) == [("t", "fraud-fn", B)]
    stats = cold_starts["t", "fraud-fn", B]
    assert (stats.cold_count, stats.cold_duration_sum_nanos) == (1, 1000 * MS)
    assert (stats.warm_count, stats.warm_duration_sum_nanos) == (1, 200 * MS)


def test_quantiles_use_the_sketch_rank() -> None:
    stats = expected(EXAMPLE).red["t", "frontend", "GET /x", "SERVER", "2xx", B]
    assert stats.quantile(0) == 500 * MS
    assert stats.quantile(0.5) == 500 * MS  # rank 0.5 -> index 0
    assert stats.quantile(0.99) == 500 * MS
    assert stats.quantile(1) == 700 * MS
    ten = ExpectedStats()
    for millis in (9, 1, 8, 2, 7, 3, 6, 4, 5, 10):
        ten.add(millis * MS, False)
    assert ten.quantile(0.5) == 5 * MS  # rank 4.5 -> index 4
    assert ten.quantile(0.9) == 9 * MS  # rank 8.1 -> index 8
    with pytest.raises(ValueError):
        ten.quantile(1.5)


def test_diff_stats_agrees_with_latency_stats_fed_the_same_spans() -> None:
    traces = generate_traces(300, seed=2, now_unix_nanos=B * SEC)
    spans = truths(traces)
    red = expected_red(spans)
    actual: dict[tuple, LatencyStats] = {}
    shuffled = list(spans)
    random.Random(1).shuffle(shuffled)
    for s in shuffled:
        key = RedKey(
            s.tenant, s.service, s.operation, s.span_kind, s.status_class,
            s.window_start_secs,
        )  # fmt: skip
        actual.setdefault(key, LatencyStats()).add(s.duration_nanos, s.is_error)
    assert diff_stats(red, actual) == []
    some_key = next(iter(actual))
    actual[some_key].count += 1
    del actual[next(key for key in actual if key != some_key)]
    problems = diff_stats(red, actual)
    assert len(problems) == 2
    assert any(p.startswith("missing") for p in problems)
    assert any("count expected" in p for p in problems)
