"""TraceAssembler: summaries, edges, idleness, retention and late spans.

Every test that checks outputs runs against both implementations (the
`trace_implementation` fixture): the Python reference and the compiled one.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from spanfactory import BASE_END_UNIX_NANOS, make_batch, robot_shop_rows

from spanstream.aggregate.nativetraces import AnyTraceAssembler, make_trace_assembler
from spanstream.aggregate.traces import TraceAssembler, TraceOutput
from spanstream.aggregate.types import EdgeKey, LatencyStats
from spanstream.config import Settings
from spanstream.model import SpanBatch

SETTINGS = Settings(trace_idle_secs=30, trace_retention_secs=600)
WINDOW = BASE_END_UNIX_NANOS // 1_000_000_000  # the window the factory ends in
MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


def span(span_id: str, parent: str | None = None, **values: Any) -> dict[str, Any]:
    return {"span_id": span_id, "parent_span_id": parent, **values}


def shop_trace() -> list[dict[str, Any]]:
    """A trace with one edge of every connection type (and one non-edge)."""
    return [
        span("a1", None, service="web", operation="GET /buy", duration_nanos=90 * MS),
        span("a2", "a1", service="web", span_kind="CLIENT", duration_nanos=40 * MS),
        span("a3", "a2", service="cart", duration_nanos=30 * MS, is_error=True),
        span("a4", "a3", service="cart", span_kind="CLIENT", db_system="redis"),
        span("a5", "a3", service="cart", span_kind="PRODUCER", duration_nanos=2 * MS),
        span("a6", "a5", service="mail", span_kind="CONSUMER", is_cold_start=True),
        span("a7", "a3", service="cart", span_kind="PRODUCER", messaging_system="sqs"),
        span("a8", "a1", service="web", span_kind="CLIENT", peer_service="payments"),
        span("a9", "a1", service="web", span_kind="CLIENT"),  # calls nothing known
        span("aa", "a1", service="web", span_kind="INTERNAL", db_system="ignored"),
    ]


def stats_of(*calls: tuple[int, bool]) -> LatencyStats:
    stats = LatencyStats()
    for duration, error in calls:
        stats.add(duration, error)
    return stats


def assemble(
    rows: list[dict[str, Any]], implementation: str
) -> tuple[AnyTraceAssembler, FakeClock]:
    clock = FakeClock()
    assembler = make_trace_assembler(SETTINGS, clock, implementation)
    assembler.add(make_batch(rows))
    return assembler, clock


def idle_poll(assembler: AnyTraceAssembler, clock: FakeClock) -> TraceOutput:
    clock.advance(SETTINGS.trace_idle_secs)
    return assembler.poll()


def test_summary_of_an_idle_trace(trace_implementation: str) -> None:
    assembler, clock = assemble(shop_trace(), trace_implementation)
    output = idle_poll(assembler, clock)
    (summary,) = output.summaries
    assert summary.root_service == "web"
    assert summary.root_operation == "GET /buy"
    assert summary.span_count == 10
    assert summary.error_count == 1
    assert summary.cold_start_count == 1
    assert summary.services == ["cart", "mail", "web"]
    assert summary.start_unix_nanos == BASE_END_UNIX_NANOS - 90 * MS
    assert summary.end_unix_nanos == BASE_END_UNIX_NANOS
    assert summary.duration_nanos == 90 * MS


def test_edges_of_every_connection_type(trace_implementation: str) -> None:
    assembler, clock = assemble(shop_trace(), trace_implementation)
    edges = idle_poll(assembler, clock).edges
    one_ms = 1 * MS
    assert edges == {
        # client web -> server cart: client's duration, server's error
        EdgeKey("t1", "web", "cart", "rpc", WINDOW): stats_of((40 * MS, True)),
        EdgeKey("t1", "cart", "redis", "database", WINDOW): stats_of((one_ms, False)),
        EdgeKey("t1", "cart", "mail", "messaging", WINDOW): stats_of((2 * MS, False)),
        EdgeKey("t1", "cart", "sqs", "queue", WINDOW): stats_of((one_ms, False)),
        EdgeKey("t1", "web", "payments", "peer", WINDOW): stats_of((one_ms, False)),
    }


def test_virtual_node_prefers_database_then_queue_then_peer(
    trace_implementation: str,
) -> None:
    rows = [
        span("b1", None, span_kind="CLIENT", db_system="pg", messaging_system="q"),
        span("b2", None, span_kind="PRODUCER", messaging_system="q", peer_service="p"),
        span("b3", None, span_kind="CLIENT", peer_service="p"),
    ]
    assembler, clock = assemble(rows, trace_implementation)
    assert {
        (key.server, key.connection_type) for key in idle_poll(assembler, clock).edges
    } == {
        ("pg", "database"),
        ("q", "queue"),
        ("p", "peer"),
    }


def test_client_with_a_server_child_gets_no_virtual_edge(
    trace_implementation: str,
) -> None:
    rows = [
        span("c1", None, service="web", span_kind="CLIENT", peer_service="cart"),
        span("c2", "c1", service="cart", span_kind="SERVER"),
    ]
    assembler, clock = assemble(rows, trace_implementation)
    edges = idle_poll(assembler, clock).edges
    assert list(edges) == [EdgeKey("t1", "web", "cart", "rpc", WINDOW)]


def test_mismatched_kinds_make_no_call_edge(trace_implementation: str) -> None:
    rows = [
        span("d1", None, service="web", span_kind="PRODUCER"),
        span("d2", "d1", service="cart", span_kind="SERVER"),  # not a CLIENT parent
        span("d3", None, service="web", span_kind="CLIENT"),
        span("d4", "d3", service="cart", span_kind="CONSUMER"),  # not a PRODUCER
    ]
    assembler, clock = assemble(rows, trace_implementation)
    assert idle_poll(assembler, clock).edges == {}


def test_edge_window_is_the_client_span_end(trace_implementation: str) -> None:
    client_end = BASE_END_UNIX_NANOS + 59 * 1_000_000_000
    rows = [
        span("e1", None, service="web", span_kind="CLIENT", end_unix_nanos=client_end),
        span("e2", "e1", service="cart", end_unix_nanos=client_end + 2_000_000_000),
    ]
    assembler, clock = assemble(rows, trace_implementation)
    (key,) = idle_poll(assembler, clock).edges
    assert key.window_start_secs == WINDOW


def test_trace_is_summarised_only_once_idle(trace_implementation: str) -> None:
    assembler, clock = assemble(shop_trace(), trace_implementation)
    clock.advance(SETTINGS.trace_idle_secs - 1)
    assert assembler.poll().summaries == []
    assembler.add(make_batch([span("ab", "a1")]))  # a new span restarts the wait
    clock.advance(SETTINGS.trace_idle_secs - 1)
    assert assembler.poll().summaries == []
    assert assembler.pending_trace_count == 1
    clock.advance(1)
    (summary,) = assembler.poll().summaries
    assert summary.span_count == 11
    assert (assembler.pending_trace_count, assembler.retained_trace_count) == (0, 1)


def test_duplicated_spans_count_once(trace_implementation: str) -> None:
    rows = shop_trace()
    assembler, clock = assemble(rows + rows[3:6], trace_implementation)
    assembler.add(make_batch(rows))
    output = idle_poll(assembler, clock)
    (summary,) = output.summaries
    assert (summary.span_count, summary.error_count) == (10, 1)
    assert sum(stats.count for stats in output.edges.values()) == 5


def test_trace_without_its_root_has_no_root_fields(trace_implementation: str) -> None:
    assembler, clock = assemble(shop_trace()[1:], trace_implementation)
    (summary,) = idle_poll(assembler, clock).summaries
    assert (summary.root_service, summary.root_operation) == (None, None)


def test_late_span_re_emits_the_summary_and_only_its_own_edges(
    trace_implementation: str,
) -> None:
    rows = shop_trace()
    late_server = span("b1", "a9", service="audit", span_kind="SERVER")
    assembler, clock = assemble(rows, trace_implementation)
    idle_poll(assembler, clock)
    clock.advance(100)
    assembler.add(make_batch([late_server]))
    assert (assembler.pending_trace_count, assembler.retained_trace_count) == (1, 0)
    output = idle_poll(assembler, clock)
    (summary,) = output.summaries
    assert summary.span_count == 11
    assert summary.services == ["audit", "cart", "mail", "web"]
    assert output.edges == {
        EdgeKey("t1", "web", "audit", "rpc", WINDOW): stats_of((1 * MS, False))
    }


def test_repeated_spans_after_the_summary_change_nothing(
    trace_implementation: str,
) -> None:
    rows = shop_trace()
    assembler, clock = assemble(rows, trace_implementation)
    idle_poll(assembler, clock)
    assembler.add(make_batch(rows[:4]))
    output = idle_poll(assembler, clock)
    assert output == TraceOutput()
    assert assembler.retained_trace_count == 1


def test_retained_trace_is_forgotten_after_retention(trace_implementation: str) -> None:
    assembler, clock = assemble(shop_trace(), trace_implementation)
    idle_poll(assembler, clock)
    clock.advance(SETTINGS.trace_retention_secs - SETTINGS.trace_idle_secs - 1)
    assembler.poll()
    assert assembler.retained_trace_count == 1
    clock.advance(1)
    assembler.poll()
    assert assembler.retained_trace_count == 0
    # a span now starts a new trace of its own
    assembler.add(make_batch([span("a2", "a1", service="web", span_kind="CLIENT")]))
    (summary,) = idle_poll(assembler, clock).summaries
    assert summary.span_count == 1


def test_flush_all_summarises_everything_pending(trace_implementation: str) -> None:
    clock = FakeClock()
    assembler = make_trace_assembler(SETTINGS, clock, trace_implementation)
    assembler.add(make_batch([span("f1", trace_id="t-a"), span("f2", trace_id="t-b")]))
    output = assembler.flush_all()
    assert sorted(summary.trace_id for summary in output.summaries) == ["t-a", "t-b"]
    assert (assembler.pending_trace_count, assembler.retained_trace_count) == (0, 2)
    assert assembler.flush_all() == TraceOutput()


def test_tenants_with_the_same_trace_id_are_separate_traces(
    trace_implementation: str,
) -> None:
    assembler, clock = assemble(
        [span("g1", tenant="a"), span("g2", tenant="b")], trace_implementation
    )
    summaries = idle_poll(assembler, clock).summaries
    assert sorted((s.tenant, s.span_count) for s in summaries) == [("a", 1), ("b", 1)]


def test_span_ids_that_are_not_hex_still_link_parent_and_child(
    trace_implementation: str,
) -> None:
    rows = [
        span("client/1", None, service="web", span_kind="CLIENT"),
        span("server-half-of-client/1", "client/1", service="cart"),
    ]
    assembler, clock = assemble(rows, trace_implementation)
    assert list(idle_poll(assembler, clock).edges) == [
        EdgeKey("t1", "web", "cart", "rpc", WINDOW)
    ]


def compact_batch(trace_count: int, spans_per_trace: int) -> SpanBatch:
    """Spans built column by column (the factory is too slow for millions)."""
    batch = SpanBatch()
    n = trace_count * spans_per_trace
    batch.tenant = ["tenant-1"] * n
    batch.trace_id = [f"{i // spans_per_trace:032x}" for i in range(n)]
    batch.span_id = [f"{i + 1:016x}" for i in range(n)]
    batch.parent_span_id = [
        None if i % spans_per_trace == 0 else f"{i:016x}" for i in range(n)
    ]
    kinds = ["SERVER", "CLIENT"]
    batch.span_kind = [kinds[i % 2] for i in range(n)]
    batch.service = [f"service-{i % 7}" for i in range(n)]
    batch.operation = [f"operation-{i % 11}" for i in range(n)]
    batch.start_unix_nanos = [BASE_END_UNIX_NANOS + i for i in range(n)]
    batch.end_unix_nanos = [BASE_END_UNIX_NANOS + 5_000_000 + i for i in range(n)]
    batch.duration_nanos = [5_000_000] * n
    batch.is_error = [i % 50 == 0 for i in range(n)]
    batch.is_cold_start = [False] * n
    batch.db_system = [None] * n
    batch.messaging_system = [None] * n
    batch.peer_service = ["peer" if i % 4 == 1 else None for i in range(n)]
    return batch


def test_fifty_thousand_pending_traces_fit_in_little_memory() -> None:
    # The Python implementation only: the compiled one's state is allocated
    # by Rust, out of tracemalloc's sight.
    batch = compact_batch(trace_count=50_000, spans_per_trace=10)
    gc.collect()
    tracemalloc.start()
    try:
        assembler = TraceAssembler(SETTINGS, FakeClock())
        assembler.add(batch)
        held_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert assembler.pending_trace_count == 50_000
    # about 50 bytes a span and 0.7 KB a trace: ~60 MB; far below 300 MB
    assert held_bytes < 80 * 1024 * 1024, held_bytes


def naive_edge_counts(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """Count (client, server, type) calls straight from the rule, per span."""
    by_id = {(row["trace_id"], row["span_id"]): row for row in rows}
    counts: Counter[tuple[str, str, str]] = Counter()
    called = set()
    for row in rows:
        parent = by_id.get((row["trace_id"], row["parent_span_id"]))
        expected = {"SERVER": ("CLIENT", "rpc"), "CONSUMER": ("PRODUCER", "messaging")}
        call = expected.get(row["span_kind"])
        if parent is not None and call and parent["span_kind"] == call[0]:
            counts[(parent["service"], row["service"], call[1])] += 1
            called.add(id(parent))
    for row in rows:
        if row["span_kind"] in ("CLIENT", "PRODUCER") and id(row) not in called:
            for attribute, kind in (
                ("db_system", "database"),
                ("messaging_system", "queue"),
                ("peer_service", "peer"),
            ):
                if row.get(attribute):
                    counts[(row["service"], row[attribute], kind)] += 1
                    break
    return counts


def test_robot_shop_capture_in_shuffled_batches(
    robot_shop_csv: Path, trace_implementation: str
) -> None:
    rows = robot_shop_rows(str(robot_shop_csv))
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    clock = FakeClock()
    assembler = make_trace_assembler(SETTINGS, clock, trace_implementation)
    for start in range(0, len(shuffled), 500):
        assembler.add(make_batch(shuffled[start : start + 500]))
    output = idle_poll(assembler, clock)
    assert len(output.summaries) == len({row["trace_id"] for row in rows})
    assert sum(summary.span_count for summary in output.summaries) == len(rows)
    assert sum(summary.error_count for summary in output.summaries) == sum(
        row["is_error"] for row in rows
    )
    edge_counts: Counter[tuple[str, str, str]] = Counter()
    for key, stats in output.edges.items():
        edge_counts[(key.client, key.server, key.connection_type)] += stats.count
    assert edge_counts == naive_edge_counts(rows)
    assert edge_counts[("cart", "catalogue", "rpc")] > 0
    assert edge_counts[("catalogue", "mongodb", "database")] > 0
