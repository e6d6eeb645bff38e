"""ShardAggregator: one test per rule (windows, status class, lateness,
cardinality guard, cold starts) and the drain contract."""

from __future__ import annotations

from typing import Any

import pytest
from spanfactory import BASE_END_UNIX_NANOS, make_batch

from spanstream.aggregate import aggregator as aggregator_module
from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.cardinality import OVERFLOW
from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartKey,
    ColdStartStats,
    FlushRange,
    LateKey,
    LatencyStats,
    RedKey,
)
from spanstream.aggregate.windows import is_late, status_class, window_start_secs
from spanstream.config import Settings

RANGE = FlushRange("spans", "shardId-000000000001", "100", "200")
WINDOW = BASE_END_UNIX_NANOS // 1_000_000_000
NANOS = 1_000_000_000


def aggregate(
    rows: list[dict[str, Any]], settings: Settings | None = None
) -> AggregateDelta:
    aggregator = ShardAggregator(settings or Settings())
    aggregator.add(make_batch(rows))
    return aggregator.drain(RANGE)


def red_key(**values: Any) -> RedKey:
    defaults: dict[str, Any] = {
        "tenant": "t1",
        "service": "svc",
        "operation": "op",
        "span_kind": "SERVER",
        "status_class": "UNSET",
        "window_start_secs": WINDOW,
    }
    return RedKey(**{**defaults, **values})


def test_window_start_is_end_floored_to_the_window() -> None:
    assert window_start_secs(WINDOW * NANOS, 60) == WINDOW
    assert window_start_secs((WINDOW + 60) * NANOS - 1, 60) == WINDOW
    assert window_start_secs((WINDOW + 60) * NANOS, 60) == WINDOW + 60


def test_spans_go_to_the_window_of_their_end() -> None:
    delta = aggregate(
        [
            {"end_unix_nanos": WINDOW * NANOS},
            {"end_unix_nanos": (WINDOW + 60) * NANOS - 1},
            {"end_unix_nanos": (WINDOW + 60) * NANOS, "start_unix_nanos": 0},
        ]
    )
    assert {key.window_start_secs: s.count for key, s in delta.metrics.items()} == {
        WINDOW: 2,
        WINDOW + 60: 1,
    }


@pytest.mark.parametrize(
    ("http_status_code", "status_code", "expected"),
    [
        (200, "UNSET", "2xx"),
        (201, "ERROR", "2xx"),
        (404, "OK", "4xx"),
        (503, "ERROR", "5xx"),
        (None, "UNSET", "UNSET"),
        (None, "OK", "OK"),
        (None, "ERROR", "ERROR"),
    ],
)
def test_status_class(
    http_status_code: int | None, status_code: str, expected: str
) -> None:
    assert status_class(http_status_code, status_code) == expected
    delta = aggregate(
        [{"http_status_code": http_status_code, "status_code": status_code}]
    )
    assert list(delta.metrics) == [red_key(status_class=expected)]


def test_stats_of_a_series() -> None:
    delta = aggregate(
        [
            {"duration_nanos": 3_000, "is_error": True},
            {"duration_nanos": 1_000},
            {"duration_nanos": 2_000},
        ]
    )
    stats = delta.metrics[red_key()]
    expected = LatencyStats()
    for duration, error in ((3_000, True), (1_000, False), (2_000, False)):
        expected.add(duration, error)
    assert stats == expected
    assert (stats.count, stats.errors, stats.duration_sum_nanos) == (3, 1, 6_000)
    assert (stats.duration_min_nanos, stats.duration_max_nanos) == (1_000, 3_000)


def deadline_millis(settings: Settings) -> int:
    return (WINDOW + settings.window_secs + settings.allowed_lateness_secs) * 1000


def test_span_arriving_after_window_plus_lateness_is_late() -> None:
    settings = Settings()
    deadline = deadline_millis(settings)
    delta = aggregate(
        [
            {"arrival_unix_millis": deadline},  # on time, just
            {"arrival_unix_millis": deadline + 1, "service": "slow"},
            {"arrival_unix_millis": 0, "service": "unknown-arrival"},
        ],
        settings,
    )
    assert is_late(deadline + 1, WINDOW, 60, 300)
    assert not is_late(deadline, WINDOW, 60, 300)
    assert set(delta.metrics) == {red_key(), red_key(service="unknown-arrival")}
    arrival_window = (deadline + 1) // 1000 // 60 * 60
    assert delta.late == {LateKey("t1", "slow", arrival_window): 1}


def test_lateness_follows_the_setting() -> None:
    settings = Settings(allowed_lateness_secs=0)
    delta = aggregate([{"arrival_unix_millis": (WINDOW + 61) * 1000}], settings)
    assert delta.metrics == {}
    assert sum(delta.late.values()) == 1


def test_series_beyond_the_cap_go_to_the_overflow_series() -> None:
    settings = Settings(max_series_per_tenant=2)
    rows = [
        {"operation": "a"},
        {"operation": "b"},
        {"operation": "c", "http_status_code": 500},
        {"operation": "d", "http_status_code": 503, "duration_nanos": 7},
        {"operation": "a"},  # admitted before the cap: stays its own series
        {"operation": "x", "tenant": "t2"},  # another tenant has its own cap
        {"operation": "e", "end_unix_nanos": (WINDOW + 60) * NANOS},  # next window
    ]
    delta = aggregate(rows, settings)
    overflow = red_key(service=OVERFLOW, operation=OVERFLOW, status_class="5xx")
    assert delta.metrics[overflow].count == 2
    assert delta.metrics[red_key(operation="a")].count == 2
    assert red_key(tenant="t2", operation="x") in delta.metrics
    assert red_key(operation="e", window_start_secs=WINDOW + 60) in delta.metrics
    assert delta.overflowed_spans == 2
    assert sum(stats.count for stats in delta.metrics.values()) == len(rows)


def test_the_cap_holds_across_drains_within_a_window() -> None:
    aggregator = ShardAggregator(Settings(max_series_per_tenant=1))
    aggregator.add(make_batch([{"operation": "a"}]))
    aggregator.drain(RANGE)
    aggregator.add(make_batch([{"operation": "b"}, {"operation": "a"}]))
    delta = aggregator.drain(RANGE)
    assert set(delta.metrics) == {
        red_key(operation="a"),
        red_key(service=OVERFLOW, operation=OVERFLOW),
    }
    assert delta.overflowed_spans == 1


def test_the_cap_of_a_closed_window_is_forgotten() -> None:
    settings = Settings(max_series_per_tenant=1)
    aggregator = ShardAggregator(settings)
    aggregator.add(make_batch([{"operation": "a", "arrival_unix_millis": 1}]))
    aggregator.drain(RANGE)
    # a record arriving after the window closed for good ends its cap
    closed_millis = deadline_millis(settings) + 60_000
    later_window = {"end_unix_nanos": closed_millis * 1_000_000}
    aggregator.add(make_batch([{**later_window, "arrival_unix_millis": closed_millis}]))
    aggregator.drain(RANGE)
    assert aggregator._guard.scope_count == 1


def test_cold_and_warm_invocations() -> None:
    rows = [
        {"faas_name": "fn", "is_cold_start": True, "duration_nanos": 900},
        {"faas_name": "fn", "duration_nanos": 100},
        {"faas_name": "fn", "duration_nanos": 120, "span_kind": "CONSUMER"},
        {"faas_name": "fn", "duration_nanos": 5, "span_kind": "CLIENT"},  # not one
        {"faas_name": "fn", "duration_nanos": 5, "span_kind": "INTERNAL"},  # not one
        {"duration_nanos": 5},  # no faas.name: not an invocation
    ]
    delta = aggregate(rows)
    assert delta.cold_starts == {
        ColdStartKey("t1", "fn", WINDOW): ColdStartStats(
            cold_count=1,
            cold_duration_sum_nanos=900,
            warm_count=2,
            warm_duration_sum_nanos=220,
        )
    }


def test_a_late_invocation_still_counts_as_a_cold_start() -> None:
    # The late rule takes a span out of its RED series only.
    late = {"arrival_unix_millis": deadline_millis(Settings()) + 1}
    delta = aggregate([{"faas_name": "fn", "is_cold_start": True, **late}])
    assert delta.metrics == {}
    assert delta.cold_starts[ColdStartKey("t1", "fn", WINDOW)].cold_count == 1


def test_drain_returns_what_was_added_since_the_last_drain() -> None:
    aggregator = ShardAggregator(Settings())
    aggregator.add(make_batch([{}, {}]))
    first = aggregator.drain(RANGE)
    assert first.flush_range == RANGE
    assert first.metrics[red_key()].count == 2
    assert first.edges == {}
    assert aggregator.drain(RANGE).is_empty()
    aggregator.add(make_batch([{}]))
    assert aggregator.drain(RANGE).metrics[red_key()].count == 1


def test_buffered_durations_fold_early_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [{"duration_nanos": 1000 + i, "is_error": i % 3 == 0} for i in range(50)]
    expected = aggregate(rows)
    monkeypatch.setattr(aggregator_module, "_FOLD_AFTER_SPANS", 4)
    aggregator = ShardAggregator(Settings())
    for start in range(0, 50, 5):
        aggregator.add(make_batch(rows[start : start + 5]))
    assert aggregator.drain(RANGE).metrics == expected.metrics


def test_empty_batch_changes_nothing() -> None:
    assert aggregate([]).is_empty()
