"""The DynamoDB aggregate sink: idempotent, merging, race-safe; and its readers."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartKey,
    ColdStartStats,
    EdgeKey,
    FlushRange,
    LateKey,
    LatencyStats,
    RedKey,
    TraceSummary,
)
from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.sinks import items, readers
from spanstream.sinks.dynamodb import AggregateWriter
from spanstream.sinks.retry import RetryPolicy

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "dynamodb"
WINDOW = 1_714_557_600  # 2024-05-01T10:00:00Z
NOW = WINDOW + 90.0


def stats(*durations: int, errors: int = 0) -> LatencyStats:
    result = LatencyStats()
    for index, duration in enumerate(durations):
        result.add(duration, index < errors)
    return result


def merged(*parts: LatencyStats) -> LatencyStats:
    result = LatencyStats()
    for part in parts:
        result.merge(copy.deepcopy(part))
    return result


def red(tenant: str = "acme", service: str = "checkout", **kw: Any) -> RedKey:
    fields: dict[str, Any] = {
        "operation": "GET /cart",
        "span_kind": "SERVER",
        "status_class": "2xx",
        "window_start_secs": WINDOW,
    }
    fields.update(kw)
    return RedKey(tenant, service, **fields)


def flush(shard: int, first: int, last: int) -> FlushRange:
    return FlushRange("spans", f"shardId-{shard:012d}", str(first), str(last))


def delta(flush_range: FlushRange, **kw: Any) -> AggregateDelta:
    return AggregateDelta(flush_range, **copy.deepcopy(kw))


@pytest.fixture
def settings() -> Settings:
    return Settings(table_prefix="test-", dynamodb_write_concurrency=4)


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for path in sorted(SCHEMAS.glob("*.json")):
            table = json.loads(path.read_text())
            table["TableName"] = settings.table_name(table["TableName"])
            client.create_table(**table)
        yield client


def no_sleep_retry() -> RetryPolicy:
    return RetryPolicy(deadline_secs=5.0, sleep=lambda _: None)


@pytest.fixture
def writer(dynamodb: Any, settings: Settings) -> AggregateWriter:
    return AggregateWriter(
        dynamodb, settings, clock=lambda: NOW, retry=no_sleep_retry()
    )


class Proxy:
    """Forwards to a real client; tests override single operations."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def all_items(dynamodb: Any, settings: Settings, table: str) -> list[dict[str, Any]]:
    return dynamodb.scan(TableName=settings.table_name(table))["Items"]


# Idempotency -------------------------------------------------------------------


def test_writing_the_same_delta_twice_counts_it_once(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    the_delta = delta(
        flush(1, 100, 200),
        metrics={red(): stats(1_000, 2_000, errors=1)},
        edges={EdgeKey("acme", "web", "checkout", "rpc", WINDOW): stats(5_000)},
        cold_starts={
            ColdStartKey("acme", "fn", WINDOW): ColdStartStats(1, 900, 2, 200)
        },
        late={LateKey("acme", "checkout", WINDOW): 3},
    )
    first = writer.write([the_delta])
    before = {t: all_items(dynamodb, settings, t) for t in ("metrics", "edges")}
    second = writer.write([the_delta])
    # A restarted process replays it with nothing cached: it reads once.
    restarted = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    third = restarted.write([the_delta])

    assert (first.items_written, first.items_unchanged) == (4, 0)
    for again in (second, third):
        assert (again.items_written, again.items_unchanged) == (0, 4)
        assert again.deltas_skipped == 4
    # The writer knows the items as it put them: no request at all.
    assert (second.requests, second.items_from_cache) == ({}, 4)
    assert (third.requests, third.items_from_cache) == ({"BatchGetItem": 1}, 0)
    assert {t: all_items(dynamodb, settings, t) for t in before} == before
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == stats(1_000, 2_000, errors=1)
    assert row.hwm == {"shardId-000000000001": "200"}


def test_deltas_of_two_shards_merge_into_one_put(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    one = stats(1_000, 3_000, errors=1)
    two = stats(500, 9_000_000)
    result = writer.write(
        [
            delta(flush(1, 100, 200), metrics={red(): one}),
            delta(flush(2, 7, 9), metrics={red(): two}),
        ]
    )

    assert result.requests == {"BatchGetItem": 1, "PutItem": 1}
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == merged(one, two)
    assert (row.stats.duration_min_nanos, row.stats.duration_max_nanos) == (
        500,
        9_000_000,
    )
    assert row.hwm == {"shardId-000000000001": "200", "shardId-000000000002": "9"}


def test_successive_ranges_of_one_shard_apply_in_order_and_stale_ones_skip(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    early, late = stats(1_000), stats(2_000)
    # Sequence numbers compare as integers: "99" < "1000".
    writer.write([delta(flush(1, 90, 99), metrics={red(): early})])
    writer.write([delta(flush(1, 100, 1000), metrics={red(): late})])
    stale = writer.write([delta(flush(1, 90, 99), metrics={red(): stats(7)})])

    assert (stale.items_written, stale.deltas_skipped) == (0, 1)
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == merged(early, late)
    assert row.hwm == {"shardId-000000000001": "1000"}


def test_one_call_with_a_replayed_range_and_its_successor(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    first = delta(flush(1, 1, 10), metrics={red(): stats(10)})
    second = delta(flush(1, 11, 20), metrics={red(): stats(20)})
    result = writer.write([second, first, first])

    assert (result.items_written, result.deltas_skipped) == (1, 1)
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == stats(10, 20)
    assert row.hwm == {"shardId-000000000001": "20"}


@pytest.mark.parametrize("item_existed", [False, True])
def test_a_concurrent_writer_between_read_and_put_is_merged_not_lost(
    dynamodb: Any, settings: Settings, item_existed: bool
) -> None:
    other = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    if item_existed:
        other.write([delta(flush(3, 1, 1), metrics={red(): stats(1)})])
    racing: Any = Proxy(dynamodb)
    raced: list[bool] = []

    def put_item(**kwargs: Any) -> Any:
        if not raced:  # the other worker commits after our read
            raced.append(True)
            other.write([delta(flush(2, 5, 6), metrics={red(): stats(50)})])
        return dynamodb.put_item(**kwargs)

    racing.put_item = put_item
    writer = AggregateWriter(racing, settings, retry=no_sleep_retry())
    result = writer.write([delta(flush(1, 1, 2), metrics={red(): stats(10)})])

    assert result.conflicts == 1
    assert result.items_written == 1
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == (stats(1, 10, 50) if item_existed else stats(10, 50))
    assert {"shardId-000000000001", "shardId-000000000002"} <= set(row.hwm)
    item = all_items(dynamodb, settings, "metrics")[0]
    assert item["version"] == {"N": "3" if item_existed else "2"}


def test_a_conflict_that_already_applied_our_range_puts_nothing(
    dynamodb: Any, settings: Settings
) -> None:
    the_delta = delta(flush(1, 1, 2), metrics={red(): stats(10)})
    twin = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    racing: Any = Proxy(dynamodb)
    raced: list[bool] = []

    def put_item(**kwargs: Any) -> Any:
        if not raced:  # a replay of the same range wins the race
            raced.append(True)
            twin.write([the_delta])
        return dynamodb.put_item(**kwargs)

    racing.put_item = put_item
    result = AggregateWriter(racing, settings, retry=no_sleep_retry()).write(
        [the_delta]
    )

    assert (result.conflicts, result.items_written, result.items_unchanged) == (1, 0, 1)
    [row] = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert row.stats == stats(10)


# Readers -----------------------------------------------------------------------


def test_readers_return_exactly_what_was_written(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    metrics = {
        red(window_start_secs=WINDOW + 60 * i, status_class=c): stats(i + 1, 7 * i + 9)
        for i in range(3)
        for c in ("2xx", "5xx")
    }
    edges = {
        EdgeKey("acme", "web", "checkout", "rpc", WINDOW): stats(100),
        EdgeKey("acme", "checkout", "postgresql", "database", WINDOW + 60): stats(7),
    }
    cold = {ColdStartKey("acme", "resize", WINDOW): ColdStartStats(2, 4_000, 10, 900)}
    late = {LateKey("acme", "checkout", WINDOW + 120): 4}
    writer.write(
        [
            delta(
                flush(1, 1, 9),
                metrics=metrics,
                edges=edges,
                cold_starts=cold,
                late=late,
            )
        ]
    )

    got = readers.read_metrics(dynamodb, settings, "acme", "checkout")
    assert {row.key: row.stats for row in got} == metrics
    window_two = readers.read_metrics(
        dynamodb, settings, "acme", "checkout", WINDOW + 60, WINDOW + 120
    )
    assert {row.key.window_start_secs for row in window_two} == {WINDOW + 60}
    from_two = readers.read_metrics(dynamodb, settings, "acme", "checkout", WINDOW + 60)
    assert {row.key.window_start_secs for row in from_two} == {
        WINDOW + 60,
        WINDOW + 120,
    }
    before_two = readers.read_metrics(
        dynamodb, settings, "acme", "checkout", end_secs=WINDOW + 60
    )
    assert {row.key.window_start_secs for row in before_two} == {WINDOW}
    assert {r.key: r.stats for r in readers.scan_metrics(dynamodb, settings)} == metrics
    assert {r.key: r.stats for r in readers.read_edges(dynamodb, settings, "acme")} == (
        edges
    )
    assert {r.key: r.stats for r in readers.scan_edges(dynamodb, settings)} == edges
    assert {
        r.key: r.stats for r in readers.scan_cold_starts(dynamodb, settings)
    } == cold
    assert {
        r.key: r.stats
        for r in readers.read_cold_starts(dynamodb, settings, "acme", "resize")
    } == cold
    assert {r.key: r.late_count for r in readers.scan_late(dynamodb, settings)} == late
    assert [
        r.late_count for r in readers.read_late(dynamodb, settings, "acme", "checkout")
    ] == [4]


def test_items_carry_derived_quantiles_and_a_ttl(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    writer.write([delta(flush(1, 1, 2), metrics={red(): stats(*range(1, 101))})])
    [item] = all_items(dynamodb, settings, "metrics")

    assert item["pk"]["S"] == "acme#checkout"
    assert item["sk"]["S"] == "2024-05-01T10:00:00Z#__series__"
    [(name, entry)] = item["series"]["M"].items()
    assert name == "GET%20%2Fcart#SERVER#2xx"
    series = entry["M"]
    assert series["operation"]["S"] == "GET /cart"
    assert abs(int(series["p50_nanos"]["N"]) - 50) <= 1
    assert abs(int(series["p99_nanos"]["N"]) - 99) <= 1
    assert int(item["expires_at"]["N"]) == WINDOW + 30 * 86_400
    assert int(item["updated_unix_millis"]["N"]) == int(NOW * 1000)


def test_trace_summaries_by_id_and_by_service_and_time(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    start = WINDOW * 1_000_000_000
    summaries = [
        TraceSummary(
            "acme",
            f"{i:032x}",
            "web" if i % 2 else None,
            "GET /" if i % 2 else None,
            start + i * 1_000_000_000 + 7,
            start + i * 1_000_000_000 + 9_000,
            3,
            i % 2,
            ["web", "checkout"],
            0,
        )
        for i in range(30)
    ]
    updated = copy.deepcopy(summaries[1])
    updated.span_count = 4
    result = writer.write_summaries([*summaries, updated])

    assert result.requests == {"BatchWriteItem": 2}
    assert readers.read_trace(dynamodb, settings, "acme", f"{1:032x}") == updated
    assert readers.read_trace(dynamodb, settings, "acme", f"{0:032x}") == summaries[0]
    assert readers.read_trace(dynamodb, settings, "other", f"{0:032x}") is None
    in_range = readers.query_traces_by_service(
        dynamodb, settings, "acme", "web", start + 3_000_000_000, start + 9_000_000_007
    )
    assert [t.trace_id for t in in_range] == [f"{i:032x}" for i in (3, 5, 7)]
    unknown = readers.query_traces_by_service(dynamodb, settings, "acme", "unknown")
    assert len(unknown) == 15


# Tenancy -----------------------------------------------------------------------


def test_hostile_names_stay_isolated_per_tenant(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    # Joined naively with "#", both series would be "a#b#c".
    first = red(tenant="a#b", service="c")
    second = red(tenant="a", service="b#c")
    third = red(tenant="a", service="b", operation="c#GET /x")
    writer.write(
        [
            delta(
                flush(1, 1, 2),
                metrics={first: stats(1), second: stats(2), third: stats(3)},
                edges={
                    EdgeKey("x#y", "z", "w", "rpc", WINDOW): stats(4),
                    EdgeKey("x", "y#z", "w", "rpc", WINDOW): stats(5),
                },
            )
        ]
    )

    assert [r.key for r in readers.read_metrics(dynamodb, settings, "a#b", "c")] == [
        first
    ]
    assert [r.key for r in readers.read_metrics(dynamodb, settings, "a", "b#c")] == [
        second
    ]
    assert [r.key for r in readers.read_metrics(dynamodb, settings, "a", "b")] == [
        third
    ]
    assert [r.stats.count for r in readers.read_edges(dynamodb, settings, "x")] == [1]
    assert readers.read_edges(dynamodb, settings, "x#y")[0].key.client == "z"


# The writer's copies of the items it put ---------------------------------------


def counts(dynamodb: Any, settings: Settings, service: str = "checkout") -> int:
    """Spans counted for ``service``, over all windows."""
    rows = readers.read_metrics(dynamodb, settings, "acme", service)
    return sum(row.stats.count for row in rows)


def test_a_cached_copy_that_lost_a_race_is_merged_and_then_read_first(
    dynamodb: Any, settings: Settings
) -> None:
    ours = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    theirs = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    ours.write([delta(flush(1, 1, 2), metrics={red(): stats(1)})])
    theirs.write([delta(flush(2, 1, 2), metrics={red(): stats(2, 3)})])

    # Our copy is stale: its put fails and the item as it is gets merged.
    stale = ours.write([delta(flush(1, 3, 4), metrics={red(): stats(4)})])
    assert (stale.items_from_cache, stale.conflicts, stale.items_written) == (1, 1, 1)
    assert "BatchGetItem" not in stale.requests
    assert counts(dynamodb, settings) == 4

    # The series is shared: from now on it is read before the put, even in
    # another window (the same partition key), and no put is lost.
    later = red(window_start_secs=WINDOW + 60)
    after = ours.write(
        [delta(flush(1, 5, 6), metrics={red(): stats(5), later: stats(6)})]
    )
    assert (after.items_from_cache, after.conflicts) == (0, 0)
    assert after.requests == {"BatchGetItem": 1, "PutItem": 2}
    assert counts(dynamodb, settings) == 6


def test_the_cache_keeps_the_items_put_last_up_to_its_size(
    dynamodb: Any, settings: Settings
) -> None:
    writer = AggregateWriter(dynamodb, settings, retry=no_sleep_retry(), cached_items=2)
    three = ("a", "b", "c")
    writer.write(
        [delta(flush(1, 1, 2), metrics={red(service=x): stats(1) for x in three})]
    )
    assert len(writer.cache) == 2

    result = writer.write(
        [delta(flush(1, 3, 4), metrics={red(service=x): stats(2) for x in three})]
    )
    assert (result.items_from_cache, result.requests["BatchGetItem"]) == (2, 1)
    assert [counts(dynamodb, settings, x) for x in three] == [2, 2, 2]


def test_no_copy_is_kept_of_an_item_whose_put_failed(
    dynamodb: Any, settings: Settings
) -> None:
    # GIVEN an item this writer put (and keeps a copy of)
    flaky: Any = Proxy(dynamodb)
    writer = AggregateWriter(flaky, settings, retry=no_sleep_retry())
    writer.write([delta(flush(1, 1, 2), metrics={red(): stats(1)})])

    # WHEN its next put fails after reaching DynamoDB (the answer was lost)
    def put_item(**kwargs: Any) -> Any:
        dynamodb.put_item(**kwargs)
        raise ClientError({"Error": {"Code": "ValidationException"}}, "PutItem")

    flaky.put_item = put_item
    with pytest.raises(SinkError):
        writer.write([delta(flush(1, 3, 4), metrics={red(): stats(2)})])
    del flaky.put_item

    # THEN the retry reads the item as it is, and counts the range once
    retried = writer.write([delta(flush(1, 3, 4), metrics={red(): stats(2)})])
    assert (retried.items_from_cache, retried.items_unchanged) == (0, 1)
    assert retried.requests == {"BatchGetItem": 1}
    assert counts(dynamodb, settings) == 2


def test_without_a_cache_every_write_reads_first(
    dynamodb: Any, settings: Settings
) -> None:
    writer = AggregateWriter(dynamodb, settings, retry=no_sleep_retry(), cached_items=0)
    for first in (1, 3):
        result = writer.write(
            [delta(flush(1, first, first + 1), metrics={red(): stats(first)})]
        )
        assert result.requests == {"BatchGetItem": 1, "PutItem": 1}
    assert counts(dynamodb, settings) == 2


# Batching, capacity and retries ------------------------------------------------


def test_large_writes_batch_reads_by_100_and_count_capacity(
    writer: AggregateWriter,
) -> None:
    # one item per service and window: 250 services, 250 items
    series = {red(service=f"svc{i}"): stats(i + 1) for i in range(250)}
    result = writer.write([delta(flush(1, 1, 2), metrics=series)])

    assert result.requests == {"BatchGetItem": 3, "PutItem": 250}
    assert result.items_written == 250
    assert result.write_units >= 250
    assert result.read_units > 0
    assert writer.totals.requests == result.requests


def test_unprocessed_keys_are_read_again(dynamodb: Any, settings: Settings) -> None:
    flaky: Any = Proxy(dynamodb)
    calls: list[int] = []

    def batch_get_item(**kwargs: Any) -> Any:
        calls.append(1)
        request = kwargs["RequestItems"]
        if len(calls) > 1:
            return dynamodb.batch_get_item(**kwargs)
        [(table, spec)] = request.items()
        kept = {table: {**spec, "Keys": spec["Keys"][:1]}}
        response = dynamodb.batch_get_item(**{**kwargs, "RequestItems": kept})
        response["UnprocessedKeys"] = {table: {**spec, "Keys": spec["Keys"][1:]}}
        return response

    flaky.batch_get_item = batch_get_item
    writer = AggregateWriter(dynamodb, settings, retry=no_sleep_retry())
    writer.write([delta(flush(1, 1, 2), metrics={red(): stats(1)})])
    series = {red(): stats(2), red(service="other"): stats(3)}
    result = AggregateWriter(flaky, settings, retry=no_sleep_retry()).write(
        [delta(flush(1, 3, 4), metrics=series)]
    )

    assert result.requests["BatchGetItem"] == 2
    counts = {
        service: [
            row.stats.count
            for row in readers.read_metrics(dynamodb, settings, "acme", service)
        ]
        for service in ("checkout", "other")
    }
    assert counts == {"checkout": [2], "other": [1]}


def throttled(operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException"}}, operation
    )


def test_throttled_puts_are_retried_with_a_warning(
    dynamodb: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    flaky: Any = Proxy(dynamodb)
    failures = [throttled("PutItem"), throttled("PutItem")]

    def put_item(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return dynamodb.put_item(**kwargs)

    flaky.put_item = put_item
    writer = AggregateWriter(flaky, settings, retry=no_sleep_retry())
    with caplog.at_level(logging.WARNING):
        result = writer.write([delta(flush(1, 1, 2), metrics={red(): stats(1)})])

    assert result.items_written == 1
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert all(r.levelno == logging.WARNING for r in retries)


def test_giving_up_names_table_and_key_but_no_values(
    dynamodb: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    flaky: Any = Proxy(dynamodb)

    def put_item(**kwargs: Any) -> Any:
        raise throttled("PutItem")

    flaky.put_item = put_item
    clock = iter(range(0, 1_000, 1))
    retry = RetryPolicy(
        deadline_secs=10.0, sleep=lambda _: None, clock=lambda: float(next(clock))
    )
    writer = AggregateWriter(flaky, settings, retry=retry)
    with pytest.raises(SinkError) as raised:
        writer.write([delta(flush(1, 1, 2), metrics={red(): stats(123_456_789)})])

    message = str(raised.value)
    assert "test-metrics" in message
    assert "acme#checkout" in message
    assert "ProvisionedThroughputExceededException" in message
    assert "123456789" not in message and "123456789" not in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_errors_that_waiting_cannot_fix_are_not_retried(
    dynamodb: Any, settings: Settings
) -> None:
    broken: Any = Proxy(dynamodb)
    calls: list[int] = []

    def put_item(**kwargs: Any) -> Any:
        calls.append(1)
        raise ClientError({"Error": {"Code": "ValidationException"}}, "PutItem")

    broken.put_item = put_item
    writer = AggregateWriter(broken, settings, retry=no_sleep_retry())
    with pytest.raises(SinkError, match="ValidationException"):
        writer.write([delta(flush(1, 1, 2), metrics={red(): stats(1)})])
    assert calls == [1]


def test_empty_deltas_make_no_requests(writer: AggregateWriter) -> None:
    result = writer.write([AggregateDelta(flush(1, 1, 2))])
    assert result.request_count == 0
    assert writer.write_summaries([]).request_count == 0


def test_a_services_series_of_one_window_share_one_item(
    writer: AggregateWriter, dynamodb: Any, settings: Settings
) -> None:
    series = {
        red(operation=f"op{i}", status_class=status): stats(i + 1)
        for i in range(40)
        for status in ("2xx", "5xx")
    }
    later = {red(operation="op0", window_start_secs=WINDOW + 60): stats(7)}
    result = writer.write([delta(flush(1, 1, 2), metrics={**series, **later})])

    assert result.requests["PutItem"] == 2
    [first, second] = sorted(
        all_items(dynamodb, settings, "metrics"), key=lambda item: item["sk"]["S"]
    )
    assert len(first["series"]["M"]) == 80
    assert len(second["series"]["M"]) == 1
    rows = readers.read_metrics(dynamodb, settings, "acme", "checkout", WINDOW)
    assert {row.key: row.stats.count for row in rows} == {
        key: value.count for key, value in {**series, **later}.items()
    }
    in_first_window = readers.read_metrics(
        dynamodb, settings, "acme", "checkout", WINDOW, WINDOW + 60
    )
    assert len(in_first_window) == 80


def test_series_past_the_item_budget_fold_into_overflow_and_stay_counted() -> None:
    long_name = "\U0001f642" * 16_384
    series = {
        red(operation=f"{index:02d}{long_name}"): stats(index + 1, index + 2)
        for index in range(6)
    }
    counted = sum(value.count for value in series.values())

    folded = items.bound_series(series)

    assert folded == 3
    assert sorted(key.operation[:2] for key in series) == ["00", "01", "02", "__"]
    overflow = series[red(operation=items.ITEM_OVERFLOW)]
    assert overflow.count == 6  # the three folded series, two spans each
    assert sum(value.count for value in series.values()) == counted
    item = items.series_attribute(series)
    assert items.attribute_size(item["series"]) <= items.MAX_SERIES_MAP_BYTES


def test_ordinary_services_are_never_folded() -> None:
    series = {
        red(operation=f"GET /api/v1/resource-{i}", status_class=status): stats(
            *range(1, 2_000, 7)
        )
        for i in range(150)
        for status in ("2xx", "4xx", "5xx")
    }
    assert items.bound_series(series) == 0
    assert len(series) == 450
