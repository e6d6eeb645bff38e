"""The compact state of one trace while it is assembled and retained.

The assembler may hold tens of thousands of traces, so a span is kept as one
packed row of 34 bytes (span id, parent id, end, duration, flags) plus two
references to interned strings (its service and, for client and producer
spans, the virtual node it calls), about 50 bytes in all instead of several
hundred for a tuple of Python objects. Only what summaries and edges need is
kept.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Iterator, Sequence

# span_key, parent_key, end_unix_nanos, duration_nanos, flags
ROW = struct.Struct("<QQqqH")
#: Where a row's flags start; the low byte holds every bit but the virtual
#: node's type.
FLAGS_OFFSET = 32

KIND_INDEX = {
    "UNSPECIFIED": 0,
    "INTERNAL": 1,
    "SERVER": 2,
    "CLIENT": 3,
    "PRODUCER": 4,
    "CONSUMER": 5,
}
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
KIND_MASK = 0b111
IS_ERROR = 1 << 3
IS_COLD_START = 1 << 4
HAS_PARENT = 1 << 5
#: The edge this span stands for (as server half, or as client of a virtual
#: node) has been emitted; a re-summary must not emit it again.
EDGE_EMITTED = 1 << 6
VIRTUAL_SHIFT = 7
VIRTUAL_MASK = 0b11 << VIRTUAL_SHIFT
#: Connection types of virtual nodes, by the 2-bit code kept in the flags.
VIRTUAL_TYPES = (None, "database", "queue", "peer")

_MASK64 = (1 << 64) - 1


def span_key(span_id: str) -> int:
    """Return a 64-bit key for a span id.

    A 16-hex-digit id (every OTLP id) is its own value. Any other string
    gets its process-local hash: a collision with another id of the same
    trace has a chance near 2**-64 per pair, and keys never leave the process.
    """
    try:
        id_bytes = bytes.fromhex(span_id)
    except ValueError:
        return hash(span_id) & _MASK64
    if len(id_bytes) == 8:
        return int.from_bytes(id_bytes, "big")
    return hash(span_id) & _MASK64


def span_keys(span_ids: Sequence[str]) -> list[int]:
    """Return `span_key` of every id, in one pass when all are OTLP ids.

    When every id is 16 characters and their concatenation is 16 hex digits
    an id (``bytes.fromhex`` skips whitespace, so a result of 8 bytes an id
    proves there was none), each id is exactly 16 hex digits and its key its
    big-endian value; otherwise each id goes through `span_key`.
    """
    count = len(span_ids)
    try:
        if count and set(map(len, span_ids)) == {16}:
            id_bytes = bytes.fromhex("".join(span_ids))
            if len(id_bytes) == 8 * count:
                return list(struct.unpack(f">{count}Q", id_bytes))
    except (TypeError, ValueError):
        pass  # not all plain hex ids (or not all strings): one by one below
    return list(map(span_key, span_ids))


@functools.lru_cache(maxsize=512)
def _span_keys_of(row_count: int) -> struct.Struct:
    """Return a struct that unpacks only the span keys of ``row_count`` rows."""
    return struct.Struct(f"<{'Q26x' * row_count}")


def virtual_node(
    db_system: str | None, messaging_system: str | None, peer_service: str | None
) -> tuple[str | None, int]:
    """Return ``(name, type code)`` of the node a client span with no server
    half calls: its database, else its messaging system, else its peer
    service; ``(None, 0)`` if it names none."""
    if db_system:
        return sys.intern(db_system), 1
    if messaging_system:
        return sys.intern(messaging_system), 2
    if peer_service:
        return sys.intern(peer_service), 3
    return None, 0


class TraceState:
    """Rows of one trace plus the summary fields that need no deduplication.

    Rows before ``summarised_rows`` are unique by span key and have been
    summarised; rows after it arrived since and may repeat earlier ones.
    """

    __slots__ = (
        "end_max_unix_nanos",
        "last_seen",
        "root_key",
        "root_operation",
        "root_service",
        "root_start_unix_nanos",
        "rows",
        "services",
        "start_min_unix_nanos",
        "summarised_rows",
        "tenant",
        "trace_id",
        "virtual_names",
    )

    def __init__(self, tenant: str, trace_id: str) -> None:
        self.tenant = tenant
        self.trace_id = trace_id
        self.last_seen = 0.0
        self.rows = bytearray()
        self.services: list[str] = []
        self.virtual_names: list[str | None] = []
        self.summarised_rows = 0
        self.start_min_unix_nanos: int | None = None
        self.end_max_unix_nanos: int | None = None
        self.root_key: int | None = None
        self.root_start_unix_nanos = 0
        self.root_service: str | None = None
        self.root_operation: str | None = None

    @property
    def row_count(self) -> int:
        return len(self.services)

    @property
    def was_summarised(self) -> bool:
        return self.summarised_rows > 0

    def note_span(
        self,
        key: int,
        is_root: bool,
        service: str,
        operation: str,
        start_unix_nanos: int,
        end_unix_nanos: int,
    ) -> None:
        """Fold one span into the order-free summary fields (times, root).

        Of several roots the earliest (then the lowest key) wins, so the
        choice does not depend on arrival order.
        """
        self.note_times(start_unix_nanos, end_unix_nanos)
        if is_root:
            self.note_root(key, service, operation, start_unix_nanos)

    def note_times(self, start_min_unix_nanos: int, end_max_unix_nanos: int) -> None:
        """Fold the earliest start and latest end of some new spans in."""
        if self.start_min_unix_nanos is None or (
            start_min_unix_nanos < self.start_min_unix_nanos
        ):
            self.start_min_unix_nanos = start_min_unix_nanos
        if self.end_max_unix_nanos is None or (
            end_max_unix_nanos > self.end_max_unix_nanos
        ):
            self.end_max_unix_nanos = end_max_unix_nanos

    def note_root(
        self, key: int, service: str, operation: str, start_unix_nanos: int
    ) -> None:
        """Fold one root span in: the earliest (then lowest key) root wins."""
        if self.root_key is None or (start_unix_nanos, key) < (
            self.root_start_unix_nanos,
            self.root_key,
        ):
            self.root_key = key
            self.root_start_unix_nanos = start_unix_nanos
            self.root_service = service
            self.root_operation = sys.intern(operation)

    def iter_rows(self) -> Iterator[tuple[int, int, int, int, int]]:
        """Yield ``(span_key, parent_key, end, duration, flags)`` of every row."""
        return ROW.iter_unpack(self.rows)

    def deduplicate(self) -> int:
        """Drop new rows whose span was seen before; return how many new,
        distinct rows remain (0 if everything new was a repeat)."""
        count = self.row_count
        if len(set(_span_keys_of(count).unpack(self.rows))) == count:
            return count - self.summarised_rows
        seen: set[int] = set()
        keep: list[int] = []
        for index, row in enumerate(self.iter_rows()):
            if row[0] not in seen:
                seen.add(row[0])
                keep.append(index)
        fresh = len(keep) - self.summarised_rows
        if len(keep) < self.row_count:
            size = ROW.size
            rows = self.rows
            self.rows = bytearray().join(
                rows[index * size : (index + 1) * size] for index in keep
            )
            self.services = [self.services[index] for index in keep]
            self.virtual_names = [self.virtual_names[index] for index in keep]
        return fresh

    def mark_edge_emitted(self, index: int, flags: int) -> None:
        """Set `EDGE_EMITTED` on row ``index`` whose flags are ``flags``."""
        struct.pack_into(
            "<H", self.rows, index * ROW.size + FLAGS_OFFSET, flags | EDGE_EMITTED
        )

    def compact(self) -> None:
        """Trim spare capacity and mark every row summarised (before retaining)."""
        self.rows = bytearray(self.rows)
        self.services = self.services[:]
        self.virtual_names = self.virtual_names[:]
        self.summarised_rows = self.row_count
