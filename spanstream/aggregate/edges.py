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

from spanstream.aggregate.tracestate import (
    CLIENT,
    CONSUMER,
    EDGE_EMITTED,
    HAS_PARENT,
    IS_ERROR,
    KIND_MASK,
    PRODUCER,
    SERVER,
    VIRTUAL_MASK,
    VIRTUAL_SHIFT,
    VIRTUAL_TYPES,
    TraceState,
)
from spanstream.aggregate.types import EdgeKey, LatencyStats
from spanstream.aggregate.windows import window_start_secs

# child kind -> (the parent kind that makes an edge, connection type)
_CALLS = {SERVER: (CLIENT, "rpc"), CONSUMER: (PRODUCER, "messaging")}


def collect_edges(
    trace: TraceState, window_secs: int, edges: dict[EdgeKey, LatencyStats]
) -> int:
    """Add the edges of ``trace`` not emitted before to ``edges``.

    Expects deduplicated rows. Marks each edge emitted on the trace, so a
    later call (after late spans) adds only edges that are new. Returns how
    many edges were added.
    """
    rows = list(trace.iter_rows())
    index_of = {row[0]: index for index, row in enumerate(rows)}
    services = trace.services
    called: set[int] = set()
    added = 0
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
        key = EdgeKey(
            trace.tenant,
            services[parent],
            services[index],
            call[1],
            window_start_secs(client_end, window_secs),
        )
        _add(edges, key, client_duration, bool((client_flags | flags) & IS_ERROR))
        trace.mark_edge_emitted(index, flags)
        added += 1
    for index, (_, _, end, duration, flags) in enumerate(rows):
        if index in called or flags & EDGE_EMITTED:
            continue
        connection_type = VIRTUAL_TYPES[(flags & VIRTUAL_MASK) >> VIRTUAL_SHIFT]
        server = trace.virtual_names[index]
        if connection_type is None or server is None:
            continue
        key = EdgeKey(
            trace.tenant,
            services[index],
            server,
            connection_type,
            window_start_secs(end, window_secs),
        )
        _add(edges, key, duration, bool(flags & IS_ERROR))
        trace.mark_edge_emitted(index, flags)
        added += 1
    return added


def _add(
    edges: dict[EdgeKey, LatencyStats], key: EdgeKey, duration_nanos: int, error: bool
) -> None:
    stats = edges.get(key)
    if stats is None:
        stats = edges[key] = LatencyStats()
    stats.add(duration_nanos, error)
