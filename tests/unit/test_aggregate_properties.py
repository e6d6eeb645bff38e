"""Any grouping of the same spans gives the same aggregates.

Shard aggregation: split the spans into batches, spread the batches over any
number of aggregators, drain at any points, merge the deltas, and the totals
equal one aggregator over all spans, sketches included. Trace assembly: any
arrival order and batching of a trace's spans, duplicates included, gives the
same summaries and edges.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spanfactory import BASE_END_UNIX_NANOS, make_batch

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import make_trace_assembler
from spanstream.aggregate.traces import TraceOutput
from spanstream.aggregate.types import AggregateDelta, FlushRange
from spanstream.config import Settings
from spanstream.model import SpanBatch

RANGE = FlushRange("spans", "shardId-000000000000", "1", "2")
KINDS = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
SETTINGS = Settings(window_secs=60, allowed_lateness_secs=120)


@st.composite
def span_rows(draw: st.DrawFn) -> dict[str, Any]:
    end = BASE_END_UNIX_NANOS + draw(st.integers(-200, 200)) * 1_000_000_000
    arrival_lag_millis = draw(st.one_of(st.none(), st.integers(0, 400_000)))
    return {
        "tenant": draw(st.sampled_from(["a", "b"])),
        "service": draw(st.sampled_from(["web", "cart", "db"])),
        "operation": draw(st.sampled_from(["get", "put", "list"])),
        "span_kind": draw(st.sampled_from(KINDS)),
        "status_code": draw(st.sampled_from(["UNSET", "OK", "ERROR"])),
        "http_status_code": draw(st.sampled_from([None, 200, 302, 404, 500])),
        "is_error": draw(st.booleans()),
        "end_unix_nanos": end,
        "duration_nanos": draw(st.integers(-10, 10**11)),
        "arrival_unix_millis": 0
        if arrival_lag_millis is None
        else end // 1_000_000 + arrival_lag_millis,
        "faas_name": draw(st.sampled_from([None, "fn"])),
        "is_cold_start": draw(st.booleans()),
    }


def slices(batch: SpanBatch, cuts: list[int]) -> list[SpanBatch]:
    bounds = [0, *sorted({cut % (len(batch) + 1) for cut in cuts}), len(batch)]
    return [batch.take(list(range(start, end))) for start, end in pairwise(bounds)]


def merge(deltas: list[AggregateDelta]) -> AggregateDelta:
    total = AggregateDelta(flush_range=RANGE)
    for delta in deltas:
        for key, stats in delta.metrics.items():
            total.metrics.setdefault(key, type(stats)()).merge(stats)
        for key, cold in delta.cold_starts.items():
            total.cold_starts.setdefault(key, type(cold)()).merge(cold)
        for key, count in delta.late.items():
            total.late[key] = total.late.get(key, 0) + count
        total.overflowed_spans += delta.overflowed_spans
    return total


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(span_rows(), max_size=80),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    placement=st.lists(st.integers(0, 3), min_size=9, max_size=9),
    drain_after=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_any_grouping_of_spans_gives_the_same_red_totals(
    rows: list[dict[str, Any]],
    cuts: list[int],
    placement: list[int],
    drain_after: list[bool],
) -> None:
    batch = make_batch(rows)
    single = ShardAggregator(SETTINGS)
    single.add(batch)
    expected = single.drain(RANGE)

    aggregators = [ShardAggregator(SETTINGS) for _ in range(4)]
    deltas = []
    for index, part in enumerate(slices(batch, cuts)):
        aggregator = aggregators[placement[index]]
        aggregator.add(part)
        if drain_after[index]:
            deltas.append(aggregator.drain(RANGE))
    deltas.extend(aggregator.drain(RANGE) for aggregator in aggregators)
    merged = merge(deltas)

    assert merged.metrics == expected.metrics  # counts, sums, min, max, sketches
    assert merged.cold_starts == expected.cold_starts
    assert merged.late == expected.late
    assert sum(s.count for s in merged.metrics.values()) + sum(
        merged.late.values()
    ) == len(rows)


@st.composite
def traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Spans of one to three traces, each a random tree (maybe rootless)."""
    rows: list[dict[str, Any]] = []
    for trace_number in range(draw(st.integers(1, 3))):
        trace_id = f"{trace_number:032x}"
        span_count = draw(st.integers(1, 10))
        has_root = draw(st.booleans()) or span_count == 1
        for index in range(span_count):
            span_id = f"{trace_number:08x}{index:08x}"
            if index == 0:
                parent = None if has_root else "ffffffffffffffff"
            else:
                parent = f"{trace_number:08x}{draw(st.integers(0, index - 1)):08x}"
            end = BASE_END_UNIX_NANOS + draw(st.integers(0, 120)) * 1_000_000_000
            rows.append(
                {
                    "tenant": draw(st.sampled_from(["a", "b"])),
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_span_id": parent,
                    "service": draw(st.sampled_from(["web", "cart", "mail"])),
                    "operation": draw(st.sampled_from(["get", "put"])),
                    "span_kind": draw(st.sampled_from(KINDS)),
                    "end_unix_nanos": end,
                    "duration_nanos": draw(st.integers(0, 10**10)),
                    "is_error": draw(st.booleans()),
                    "is_cold_start": draw(st.booleans()),
                    "db_system": draw(st.sampled_from([None, "redis"])),
                    "messaging_system": draw(st.sampled_from([None, "sqs"])),
                    "peer_service": draw(st.sampled_from([None, "pay"])),
                }
            )
    return rows


class FakeClock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def assemble(batches: list[SpanBatch], implementation: str) -> TraceOutput:
    clock = FakeClock()
    assembler = make_trace_assembler(SETTINGS, clock, implementation)
    for batch in batches:
        assembler.add(batch)
    clock.now += SETTINGS.trace_idle_secs
    output = assembler.poll()
    assert assembler.pending_trace_count == 0
    output.summaries.sort(key=lambda summary: (summary.tenant, summary.trace_id))
    return output


@pytest.mark.parametrize("implementation", ["python", "native"])
@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    rows=traces(),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_any_arrival_order_of_a_trace_gives_the_same_summary_and_edges(
    implementation: str,
    data: st.DataObject,
    rows: list[dict[str, Any]],
    cuts: list[int],
) -> None:
    expected = assemble([make_batch(rows)], implementation)
    duplicates = data.draw(st.lists(st.sampled_from(rows), max_size=len(rows)))
    arrival = data.draw(st.permutations(rows + duplicates))
    actual = assemble(slices(make_batch(arrival), cuts), implementation)
    assert actual.summaries == expected.summaries
    assert actual.edges == expected.edges
    assert sum(summary.span_count for summary in actual.summaries) == len(rows)
