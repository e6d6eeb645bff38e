"""Service graph edges of one assembled trace.

A call shows up as a client span whose child is the server span of the
callee (``rpc``), or a producer span whose child is a consumer span
(``messaging``). A client or producer span with no such child called
something uninstrumented; it becomes an edge to a virtual node named after
its database, messaging system or peer service. An edge is measured by the
client span: its duration, its end's window, and an error if either half
failed.
"""

from __future__ import annotations

import struct

from spanstream.aggregate.tracestate import (
    CLIENT,
    CONSUMER,
    EDGE_EMITTED,
    FLAGS_OFFSET,
    HAS_PARENT,
    IS_ERROR,
    KIND_MASK,
    PRODUCER,
    ROW,
    SERVER,
    VIRTUAL_MASK,
    VIRTUAL_SHIFT,
    VIRTUAL_TYPES,
    TraceState,
)
from spanstream.aggregate.types import EdgeKey, LatencyStats
from spanstream.aggregate.windows import NANOS_PER_SEC

# child kind -> (the parent kind that makes an edge, connection type)
_CALLS = {SERVER: (CLIENT, "rpc"), CONSUMER: (PRODUCER, "messaging")}
_FLAGS = struct.Struct("<H")


def collect_edges(
    trace: TraceState, window_secs: int, edges: dict[EdgeKey, LatencyStats]
) -> int:
    """Add the edges of ``trace`` not emitted before to ``edges``.

    Expects deduplicated rows. Marks each edge emitted on the trace, so a
    later call (after late spans) adds only edges that are new. Returns how
    many edges were added.
    """
    calls = EdgeCalls()
    added = calls.collect(trace, list(trace.iter_rows()), window_secs)
    calls.fold_into(edges)
    return added


class EdgeCalls:
    """Calls of many traces' edges, buffered per edge until `fold_into`.

    Folding a key's durations with `LatencyStats.add_many` gives the stats
    that adding them one by one gives, for a fraction of the cost; keys are
    plain tuples of an `EdgeKey`'s fields until then.
    """

    def __init__(self) -> None:
        self._durations: dict[tuple[str, str, str, str, int], list[int]] = {}
        self._errors: dict[tuple[str, str, str, str, int], int] = {}

    def collect(
        self,
        trace: TraceState,
        rows: list[tuple[int, int, int, int, int]],
        window_secs: int,
    ) -> int:
        """Buffer the edges of ``trace`` not emitted before; see `collect_edges`.

        ``rows`` are the trace's deduplicated rows (`TraceState.iter_rows`).
        """
        index_of = {row[0]: index for index, row in enumerate(rows)}
        services = trace.services
        tenant = trace.tenant
        trace_rows = trace.rows
        row_size = ROW.size
        called: set[int] = set()
        added = 0
        add = self._add
        for index, (_, parent_key, _, _, flags) in enumerate(rows):
            call = _CALLS.get(flags & KIND_MASK)
            if call is None or not flags & HAS_PARENT:
                continue
            parent = index_of.get(parent_key)
            if parent is None:
                continue
            _, _, client_end, client_duration, client_flags = rows[parent]
            if client_flags & KIND_MASK != call[0]:
                continue
            called.add(parent)
            if flags & EDGE_EMITTED:
                continue
            add(
                (
                    tenant,
                    services[parent],
                    services[index],
                    call[1],
                    client_end // NANOS_PER_SEC // window_secs * window_secs,
                ),
                client_duration,
                (client_flags | flags) & IS_ERROR,
            )
            _FLAGS.pack_into(
                trace_rows, index * row_size + FLAGS_OFFSET, flags | EDGE_EMITTED
            )
            added += 1
        virtual_names = trace.virtual_names
        for index, (_, _, end, duration, flags) in enumerate(rows):
            if index in called or flags & EDGE_EMITTED:
                continue
            connection_type = VIRTUAL_TYPES[(flags & VIRTUAL_MASK) >> VIRTUAL_SHIFT]
            server = virtual_names[index]
            if connection_type is None or server is None:
                continue
            add(
                (
                    tenant,
                    services[index],
                    server,
                    connection_type,
                    end // NANOS_PER_SEC // window_secs * window_secs,
                ),
                duration,
                flags & IS_ERROR,
            )
            _FLAGS.pack_into(
                trace_rows, index * row_size + FLAGS_OFFSET, flags | EDGE_EMITTED
            )
            added += 1
        return added

    def _add(
        self, key: tuple[str, str, str, str, int], duration_nanos: int, error: int
    ) -> None:
        durations = self._durations.get(key)
        if durations is None:
            durations = self._durations[key] = []
            self._errors[key] = 0
        durations.append(duration_nanos)
        if error:
            self._errors[key] += 1

    def fold_into(self, edges: dict[EdgeKey, LatencyStats]) -> None:
        """Add the buffered calls to ``edges`` (new keys in first-seen order)."""
        errors = self._errors
        for key, durations in self._durations.items():
            edge_key = EdgeKey._make(key)
            stats = edges.get(edge_key)
            if stats is None:
                stats = edges[edge_key] = LatencyStats()
            stats.add_many(durations, errors[key])
        self._durations = {}
        self._errors = {}
