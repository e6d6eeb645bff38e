"""The column-wise trace assembly gives what the span-by-span rules give."""

from __future__ import annotations

import random

import pytest

from spanstream.aggregate.edges import EdgeCalls, collect_edges
from spanstream.aggregate.traces import _summary_of
from spanstream.aggregate.tracestate import (
    CLIENT,
    HAS_PARENT,
    IS_COLD_START,
    IS_ERROR,
    ROW,
    SERVER,
    VIRTUAL_SHIFT,
    TraceState,
    span_key,
    span_keys,
)
from spanstream.aggregate.types import EdgeKey, LatencyStats

ODD_IDS = [
    "",
    "abc",
    "0123456789abcde",  # 15 digits
    "0123456789abcdef0",  # 17 digits
    "0x0123456789abcd",  # int(..., 16) would take it; fromhex does not
    "+123456789abcdef",
    "1234_5678_9abcde",
    " 123456789abcdef",
    "0123 4567 89ab c",  # fromhex skips spaces
    "0123456789ABCDEF",
    "zzzzzzzzzzzzzzzz",
    "é" * 16,
    "\u0660" * 16,  # Arabic-Indic zeros: int() reads them, fromhex does not
    "0123456789abcdef0123456789abcdef",  # a trace id where a span id goes
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_span_keys_equal_span_key_with_any_id_among_plain_ones(odd: str) -> None:
    plain = [f"{random.Random(i).getrandbits(64):016x}" for i in range(5)]
    for ids in ([odd], [*plain, odd], [odd, *plain], [*plain[:2], odd, *plain]):
        assert span_keys(ids) == [span_key(span_id) for span_id in ids]


def test_span_keys_of_plain_ids_are_their_values() -> None:
    ids = [
        "0000000000000000",
        "ffffffffffffffff",
        "00000000000000ff",
        "8000a0B0c0D0e0F0",
    ]
    assert span_keys(ids) == [0, 2**64 - 1, 255, 0x8000A0B0C0D0E0F0]
    assert span_keys([]) == []


def test_two_misaligned_ids_are_not_read_as_one_run() -> None:
    # 15 + 17 digits join to 32 hex digits; each alone is no OTLP id.
    ids = ["0123456789abcde", "f0123456789abcdef"]
    assert span_keys(ids) == [span_key(ids[0]), span_key(ids[1])]


def test_span_keys_raise_like_span_key_for_a_non_string() -> None:
    with pytest.raises(TypeError):
        span_key(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        span_keys(["0123456789abcdef", None])  # type: ignore[list-item]


def _trace(
    rows: list[tuple[int, int, int, int, int]], services: list[str]
) -> TraceState:
    trace = TraceState("acme", "t1")
    for row, service in zip(rows, services, strict=True):
        trace.rows += ROW.pack(*row)
        trace.services.append(service)
        trace.virtual_names.append("postgresql" if row[4] & 0b111 == CLIENT else None)
    return trace


def _call_rows(calls: int) -> tuple[list[tuple[int, int, int, int, int]], list[str]]:
    rows, services = [], []
    for index in range(calls):
        client_key, server_key = 2 * index + 1, 2 * index + 2
        error = IS_ERROR if index % 3 == 0 else 0
        # a client without a server half calls its database (type code 1)
        error |= 0 if index % 2 else 1 << VIRTUAL_SHIFT
        rows.append(
            (client_key, 0, 10**9 * (index % 4), 1_000 + 37 * index, CLIENT | error)
        )
        services.append("frontend")
        if index % 2:  # a server half: an rpc edge, else a database edge
            rows.append((server_key, client_key, 0, 5, SERVER | HAS_PARENT))
            services.append("cart")
    return rows, services


def test_buffered_edge_calls_fold_into_the_stats_of_adding_each() -> None:
    rows, services = _call_rows(40)
    buffered: dict[EdgeKey, LatencyStats] = {}
    calls = EdgeCalls()
    assert calls.collect(_trace(rows, services), list(map(tuple, rows)), 60) == 40
    calls.fold_into(buffered)

    expected: dict[EdgeKey, LatencyStats] = {}
    for index in range(40):
        client = rows[[r[0] for r in rows].index(2 * index + 1)]
        server = "cart" if index % 2 else "postgresql"
        kind = "rpc" if index % 2 else "database"
        key = EdgeKey("acme", "frontend", server, kind, client[2] // 10**9 // 60 * 60)
        expected.setdefault(key, LatencyStats()).add(
            client[3], bool(client[4] & IS_ERROR)
        )
    assert sorted(buffered) == sorted(expected)
    assert buffered == expected


def test_collect_edges_marks_edges_emitted_once() -> None:
    rows, services = _call_rows(6)
    trace = _trace(rows, services)
    first: dict[EdgeKey, LatencyStats] = {}
    assert collect_edges(trace, 60, first) == 6
    again: dict[EdgeKey, LatencyStats] = {}
    assert collect_edges(trace, 60, again) == 0
    assert again == {}


def test_summary_counts_errors_and_cold_starts_from_the_flags() -> None:
    rows = [
        (1, 0, 5, 5, SERVER | IS_ERROR),
        (2, 1, 5, 5, CLIENT | IS_COLD_START | (3 << 7)),  # virtual type in byte 2
        (3, 1, 5, 5, SERVER | IS_ERROR | IS_COLD_START | HAS_PARENT | (1 << 6)),
        (4, 1, 5, 5, 0),
    ]
    trace = _trace(rows, ["a", "b", "a", "c"])
    summary = _summary_of(trace)
    assert (summary.error_count, summary.cold_start_count) == (2, 2)
    assert summary.span_count == 4
    assert summary.services == ["a", "b", "c"]


def test_deduplicate_keeps_the_first_of_repeated_spans() -> None:
    rows = [(1, 0, 1, 1, SERVER), (2, 1, 2, 2, CLIENT), (1, 0, 9, 9, SERVER)]
    trace = _trace(rows, ["a", "b", "c"])
    assert trace.deduplicate() == 2
    assert [row[0] for row in trace.iter_rows()] == [1, 2]
    assert trace.services == ["a", "b"]
    unique = _trace(rows[:2], ["a", "b"])
    assert unique.deduplicate() == 2
    assert unique.row_count == 2
