"""ShardAggregator against a slow, obvious implementation of its rules.

`reference_delta` follows the rules as written, one span at a time, with no
caching or buffering; the tests hold the fast aggregator to it on the
robot-shop capture and on random spans that hit every rule.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from spanfactory import BASE_END_UNIX_NANOS, make_batch, robot_shop_rows

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartKey,
    ColdStartStats,
    FlushRange,
    LateKey,
    LatencyStats,
    RedKey,
)
from spanstream.config import Settings
from spanstream.model import SpanBatch

REFERENCE_RANGE = FlushRange("stream", "shardId-000000000000", "1", "2")


def reference_delta(settings: Settings, batch: SpanBatch) -> AggregateDelta:
    """Return the delta the rules give for ``batch`` (no series cap applied
    unless a tenant exceeds it, then the first series in row order win)."""
    delta = AggregateDelta(flush_range=REFERENCE_RANGE)
    admitted: dict[tuple[str, int], set[RedKey]] = {}
    ws = settings.window_secs
    for index in range(len(batch)):
        span = batch.row(index)
        window = span["end_unix_nanos"] // 1_000_000_000 // ws * ws
        arrival = span["arrival_unix_millis"]
        deadline = (window + ws + settings.allowed_lateness_secs) * 1000
        if arrival > 0 and arrival > deadline:
            late_key = LateKey(
                span["tenant"], span["service"], arrival // 1000 // ws * ws
            )
            delta.late[late_key] = delta.late.get(late_key, 0) + 1
        else:
            code = span["http_status_code"]
            status = f"{code // 100}xx" if code is not None else span["status_code"]
            key = RedKey(
                span["tenant"],
                span["service"],
                span["operation"],
                span["span_kind"],
                status,
                window,
            )
            series = admitted.setdefault((span["tenant"], window), set())
            if key not in series and len(series) >= settings.max_series_per_tenant:
                key = key._replace(service="__overflow__", operation="__overflow__")
                delta.overflowed_spans += 1
            else:
                series.add(key)
            stats = delta.metrics.setdefault(key, LatencyStats())
            stats.add(span["duration_nanos"], span["is_error"])
        if span["faas_name"] is not None and span["span_kind"] in (
            "SERVER",
            "CONSUMER",
        ):
            cold_key = ColdStartKey(span["tenant"], span["faas_name"], window)
            cold = delta.cold_starts.setdefault(cold_key, ColdStartStats())
            if span["is_cold_start"]:
                cold.cold_count += 1
                cold.cold_duration_sum_nanos += span["duration_nanos"]
            else:
                cold.warm_count += 1
                cold.warm_duration_sum_nanos += span["duration_nanos"]
    return delta


def assert_same_delta(actual: AggregateDelta, expected: AggregateDelta) -> None:
    assert actual.metrics == expected.metrics
    assert actual.cold_starts == expected.cold_starts
    assert actual.late == expected.late
    assert actual.overflowed_spans == expected.overflowed_spans
    assert actual.edges == {}


def random_rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(count):
        end = BASE_END_UNIX_NANOS + rng.randrange(-200, 200) * 1_000_000_000
        rows.append(
            {
                "tenant": rng.choice(["a", "b"]),
                "service": f"svc{rng.randrange(4)}",
                "operation": f"op{rng.randrange(6)}",
                "span_kind": rng.choice(["SERVER", "CLIENT", "CONSUMER", "INTERNAL"]),
                "status_code": rng.choice(["UNSET", "OK", "ERROR"]),
                "http_status_code": rng.choice([None, 200, 204, 404, 503]),
                "is_error": rng.random() < 0.2,
                "end_unix_nanos": end,
                "duration_nanos": rng.choice([0, 1, int(rng.lognormvariate(13, 2))]),
                "arrival_unix_millis": rng.choice(
                    [0, end // 1_000_000 + rng.randrange(0, 600_000)]
                ),
                "faas_name": rng.choice([None, None, "fn-a", "fn-b"]),
                "is_cold_start": rng.random() < 0.3,
            }
        )
    return rows


def test_matches_reference_on_the_robot_shop_capture(robot_shop_csv: Path) -> None:
    batch = make_batch(robot_shop_rows(str(robot_shop_csv)))
    settings = Settings()
    aggregator = ShardAggregator(settings)
    aggregator.add(batch)
    delta = aggregator.drain(REFERENCE_RANGE)
    assert sum(stats.count for stats in delta.metrics.values()) == len(batch)
    assert_same_delta(delta, reference_delta(settings, batch))


@pytest.mark.parametrize("max_series", [10_000, 7])
def test_matches_reference_on_random_spans(max_series: int) -> None:
    batch = make_batch(random_rows(random.Random(max_series), 3000))
    settings = Settings(max_series_per_tenant=max_series)
    aggregator = ShardAggregator(settings)
    for start in range(0, len(batch), 97):
        aggregator.add(batch.take(list(range(start, min(start + 97, len(batch))))))
    delta = aggregator.drain(REFERENCE_RANGE)
    expected = reference_delta(settings, batch)
    assert expected.late, "the random spans should include late ones"
    assert (expected.overflowed_spans > 0) == (max_series == 7)
    assert_same_delta(delta, expected)
