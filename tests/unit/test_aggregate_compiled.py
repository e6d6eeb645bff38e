"""The compiled per-span loop of `ShardAggregator.add` adds what the Python
loop adds: the same series in the same order, the same late and cold-start
counters, and the same admission by the series guard.

GIVEN the same batches, WHEN one aggregator runs the compiled loop and one
the reference loop, THEN every drain gives equal deltas, key order included.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanstream.aggregate import aggregator as aggregator_module
from spanstream.aggregate.aggregator import RED_COLUMNS, ShardAggregator
from spanstream.aggregate.types import AggregateDelta, FlushRange
from spanstream.config import Settings
from spanstream.extension import IMPLEMENTATION_VARIABLE
from spanstream.model import SpanBatch
from tests.unit.spanfactory import BASE_END_UNIX_NANOS, make_batch

WINDOW_NANOS = 60 * 1_000_000_000
RANGE = FlushRange("spans", "shardId-000000000000", "1", "2")


def _drains(
    batches: list[SpanBatch], config: Settings, compiled: bool
) -> list[AggregateDelta]:
    aggregator = ShardAggregator(config, compiled=compiled)
    deltas = []
    for batch in batches:
        aggregator.add(batch)
        deltas.append(aggregator.drain(RANGE))
    return deltas


def _as_comparable(delta: AggregateDelta) -> tuple[Any, ...]:
    return (
        list(delta.metrics.items()),
        list(delta.cold_starts.items()),
        list(delta.late.items()),
        delta.overflowed_spans,
    )


def _assert_same(batches: list[SpanBatch], config: Settings) -> None:
    compiled = _drains(batches, config, compiled=True)
    reference = _drains(batches, config, compiled=False)
    assert list(map(_as_comparable, compiled)) == list(map(_as_comparable, reference))


def test_the_extension_has_the_compiled_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `make install` builds it: a missing or stale one must fail, not skip.
    assert aggregator_module._red_groups is not None
    monkeypatch.delenv(IMPLEMENTATION_VARIABLE, raising=False)
    assert ShardAggregator(Settings()).compiled
    monkeypatch.setenv(IMPLEMENTATION_VARIABLE, "python")
    assert not ShardAggregator(Settings()).compiled


_NAMES = st.sampled_from(["a", "b", "é", "日本", "", "GET /cart"])
_ROW = st.fixed_dictionaries(
    {
        "tenant": st.sampled_from(["t1", "t2", "ünï"]),
        "service": _NAMES,
        "operation": _NAMES,
        "span_kind": st.sampled_from(["SERVER", "CLIENT", "CONSUMER", "INTERNAL"]),
        "status_code": st.sampled_from(["UNSET", "OK", "ERROR"]),
        "http_status_code": st.none() | st.sampled_from([200, 404, 500, 503, 0]),
        "end_unix_nanos": st.integers(0, 5).map(
            lambda windows: BASE_END_UNIX_NANOS + windows * WINDOW_NANOS // 2
        ),
        "duration_nanos": st.integers(0, 2**40),
        "is_error": st.booleans(),
        "arrival_unix_millis": st.sampled_from([0, -5])
        | st.integers(0, 20).map(
            lambda minutes: BASE_END_UNIX_NANOS // 1_000_000 + minutes * 60_000
        ),
        "faas_name": st.none() | st.sampled_from(["fn-a", "fn-b"]),
        "is_cold_start": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(_ROW, max_size=40), min_size=1, max_size=4),
    st.sampled_from([2, 5, 10_000]),
)
def test_compiled_and_reference_loops_give_equal_deltas(
    batch_rows: list[list[dict[str, Any]]], max_series: int
) -> None:
    # start follows from end and duration; a small series cap sends some
    # keys to the tenant's overflow series, in first-seen order.
    batches = [make_batch(rows) for rows in batch_rows]
    _assert_same(batches, Settings(max_series_per_tenant=max_series))


def test_one_batch_of_many_keys_keeps_first_seen_order() -> None:
    rows = [
        {"service": f"s{i % 7}", "operation": f"o{i % 5}", "duration_nanos": i}
        for i in range(200)
    ]
    _assert_same([make_batch(rows)], Settings())


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("duration_nanos", 1.5),
        ("duration_nanos", True),
        ("end_unix_nanos", 2**63),
        ("http_status_code", "200"),
        ("service", "lone \udc80 surrogate"),
        ("tenant", None),
        ("is_error", 1),
        ("faas_name", b"fn"),
    ],
)
def test_a_batch_the_compiled_loop_declines_is_counted_by_the_reference(
    column: str, value: Any
) -> None:
    batch = make_batch([{"service": "a"}, {"service": "b", "faas_name": "fn"}])
    getattr(batch, column)[1] = value
    native = ShardAggregator(Settings(), compiled=True)
    reference = ShardAggregator(Settings(), compiled=False)

    outcomes = [_outcome(native, batch), _outcome(reference, batch)]
    assert outcomes[0] == outcomes[1]
    assert aggregator_module._red_groups is not None
    columns = [getattr(batch, name) for name in RED_COLUMNS]
    assert aggregator_module._red_groups(columns, 60, 360) is None
    assert _as_comparable(native.drain(RANGE)) == _as_comparable(reference.drain(RANGE))


def _outcome(aggregator: ShardAggregator, batch: SpanBatch) -> str | None:
    try:
        aggregator.add(batch)
    except Exception as exc:  # the outcome is what is compared
        return f"{type(exc).__name__}: {exc}"
    return None


def test_columns_of_unequal_length_raise_as_the_reference_does() -> None:
    batch = make_batch([{"service": "a"}, {"service": "b"}])
    batch.duration_nanos.pop()
    for compiled in (True, False):
        with pytest.raises(ValueError, match="zip"):
            ShardAggregator(Settings(), compiled=compiled).add(batch)


def test_a_tuple_column_is_declined() -> None:
    batch = make_batch([{"service": "a"}])
    columns: list[Any] = [getattr(batch, name) for name in RED_COLUMNS]
    columns[0] = tuple(columns[0])
    assert aggregator_module._red_groups is not None
    assert aggregator_module._red_groups(columns, 60, 360) is None
