"""Typed values that flow through the core.

Raw input becomes typed once, at the edge: a Kinesis record is a
`KinesisRecord` (bytes plus a `RecordRef`), and decoded spans live in a
`SpanBatch`, a set of parallel column lists. Columns rather than one object per
span keep the hot path cheap: appending to a list is the cheapest thing Python
does, and the archive hands the same lists to pyarrow without another pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


def sequence_key(sequence_number: str, sub_sequence_number: int = 0) -> tuple[int, int]:
    """Return a sortable key for a Kinesis (sub-)sequence number.

    Sequence numbers are decimal strings of varying length, so they compare
    correctly only as integers.
    """
    return int(sequence_number), sub_sequence_number


class RecordRef(NamedTuple):
    """Where a record came from: enough to find its bytes again."""

    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0
    partition_key: str = ""
    arrival_unix_millis: int = 0

    def describe(self) -> str:
        """Return ``stream/shard@sequence[.sub]`` for error messages and logs."""
        sub = f".{self.sub_sequence_number}" if self.sub_sequence_number else ""
        return f"{self.stream}/{self.shard_id}@{self.sequence_number}{sub}"


class KinesisRecord(NamedTuple):
    """One record as read from the stream, before any decoding."""

    data: bytes
    ref: RecordRef


@dataclass(frozen=True)
class DeadLetter:
    """A record (or user record inside a KPL record) that could not be used."""

    ref: RecordRef
    record_bytes: bytes
    reason: str
    stage: str  # "decode", "limit", "enrich"


# Column name -> arrow type name, in archive order. The archive schema in
# schemas/archive.json is generated from (and tested against) this table.
SPAN_COLUMNS: dict[str, str] = {
    "tenant": "string",
    "trace_id": "string",
    "span_id": "string",
    "parent_span_id": "string",
    "service": "string",
    "operation": "string",
    "span_name": "string",
    "span_kind": "string",
    "start_unix_nanos": "int64",
    "end_unix_nanos": "int64",
    "duration_nanos": "int64",
    "status_code": "string",
    "status_message": "string",
    "is_error": "bool",
    "http_method": "string",
    "http_route": "string",
    "http_status_code": "int32",
    "peer_service": "string",
    "db_system": "string",
    "messaging_system": "string",
    "cloud_region": "string",
    "cloud_account_id": "string",
    "faas_name": "string",
    "is_cold_start": "bool",
    "event_count": "int32",
    "resource_attributes": "map<string,string>",
    "span_attributes": "map<string,string>",
    "scope_name": "string",
    "source_shard_id": "string",
    "source_sequence_number": "string",
    "source_sub_sequence_number": "int64",
    "arrival_unix_millis": "int64",
}


@dataclass
class SpanBatch:
    """Enriched spans as parallel columns; row ``i`` is one span.

    Every list has the same length. Optional string columns hold ``None`` when
    the span has no such value; ``parent_span_id`` is ``None`` for a root.
    Attribute maps hold string values (non-string attribute values are
    rendered: ints and floats as decimal, bools as ``true``/``false``, arrays
    and maps as JSON).
    """

    tenant: list[str] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    parent_span_id: list[str | None] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    operation: list[str] = field(default_factory=list)
    span_name: list[str] = field(default_factory=list)
    span_kind: list[str] = field(default_factory=list)
    start_unix_nanos: list[int] = field(default_factory=list)
    end_unix_nanos: list[int] = field(default_factory=list)
    duration_nanos: list[int] = field(default_factory=list)
    status_code: list[str] = field(default_factory=list)
    status_message: list[str | None] = field(default_factory=list)
    is_error: list[bool] = field(default_factory=list)
    http_method: list[str | None] = field(default_factory=list)
    http_route: list[str | None] = field(default_factory=list)
    http_status_code: list[int | None] = field(default_factory=list)
    peer_service: list[str | None] = field(default_factory=list)
    db_system: list[str | None] = field(default_factory=list)
    messaging_system: list[str | None] = field(default_factory=list)
    cloud_region: list[str | None] = field(default_factory=list)
    cloud_account_id: list[str | None] = field(default_factory=list)
    faas_name: list[str | None] = field(default_factory=list)
    is_cold_start: list[bool] = field(default_factory=list)
    event_count: list[int] = field(default_factory=list)
    resource_attributes: list[dict[str, str]] = field(default_factory=list)
    span_attributes: list[dict[str, str]] = field(default_factory=list)
    scope_name: list[str | None] = field(default_factory=list)
    source_shard_id: list[str] = field(default_factory=list)
    source_sequence_number: list[str] = field(default_factory=list)
    source_sub_sequence_number: list[int] = field(default_factory=list)
    arrival_unix_millis: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.span_id)

    def columns(self) -> dict[str, list[Any]]:
        """Return the columns by name, in archive order (no copies)."""
        return {name: getattr(self, name) for name in SPAN_COLUMNS}

    def extend(self, other: SpanBatch) -> None:
        """Append every row of ``other`` to this batch."""
        for name in SPAN_COLUMNS:
            getattr(self, name).extend(getattr(other, name))

    def row(self, index: int) -> dict[str, Any]:
        """Return row ``index`` as a dict (for tests and debugging, not hot paths)."""
        return {name: getattr(self, name)[index] for name in SPAN_COLUMNS}

    def take(self, indices: list[int]) -> SpanBatch:
        """Return a new batch holding the rows at ``indices``, in that order."""
        taken = SpanBatch()
        for name in SPAN_COLUMNS:
            source = getattr(self, name)
            getattr(taken, name).extend([source[i] for i in indices])
        return taken
