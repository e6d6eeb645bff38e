"""Keys and values of the aggregates, shared by the aggregators and the sinks.

An aggregator turns `SpanBatch` rows into an `AggregateDelta`: what changed
since its last drain, keyed by series. A delta is always tied to the
`FlushRange` of records it was computed from, which is what makes writing it
idempotent: the DynamoDB sink keeps, per item, the highest sequence number
applied per shard, and skips a delta whose range it has already applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from spanstream.aggregate.sketch import LatencySketch


class FlushRange(NamedTuple):
    """The records of one shard that a delta or an archive object covers.

    ``first_sequence_number`` and ``last_sequence_number`` are the first and
    last Kinesis records (inclusive) of the range; sub-sequence numbers of KPL
    user records never split a range. Ranges of one shard never overlap and
    are applied in sequence order.
    """

    stream: str
    shard_id: str
    first_sequence_number: str
    last_sequence_number: str

    def object_stem(self) -> str:
        """Return ``<shard>-<first>-<last>``, the stem of archive object names."""
        return (
            f"{self.shard_id}-{self.first_sequence_number}-{self.last_sequence_number}"
        )


class RedKey(NamedTuple):
    """A RED series in one window. ``window_start_secs`` is unix seconds."""

    tenant: str
    service: str
    operation: str
    span_kind: str
    status_class: str  # "2xx".."5xx" for HTTP spans, else "OK" / "ERROR" / "UNSET"
    window_start_secs: int


class EdgeKey(NamedTuple):
    """A service graph edge in one window.

    ``connection_type`` is ``"rpc"`` (client -> server), ``"messaging"``
    (producer -> consumer), ``"database"`` or ``"queue"`` or ``"peer"`` (a
    client span with no server half: the server is a virtual node named after
    ``db.system``, ``messaging.system`` or the peer service).
    """

    tenant: str
    client: str
    server: str
    connection_type: str
    window_start_secs: int


class ColdStartKey(NamedTuple):
    """A function (FaaS name, else service) in one window."""

    tenant: str
    function: str
    window_start_secs: int


class LateKey(NamedTuple):
    """Late spans of a service, by the window of their *arrival*."""

    tenant: str
    service: str
    window_start_secs: int


@dataclass
class LatencyStats:
    """count, errors and duration statistics of a set of spans (or calls)."""

    count: int = 0
    errors: int = 0
    duration_sum_nanos: int = 0
    duration_min_nanos: int | None = None
    duration_max_nanos: int | None = None
    sketch: LatencySketch = field(default_factory=LatencySketch)

    def add(self, duration_nanos: int, is_error: bool) -> None:
        """Count one span of ``duration_nanos``."""
        self.count += 1
        self.errors += is_error
        self.duration_sum_nanos += duration_nanos
        if self.duration_min_nanos is None or duration_nanos < self.duration_min_nanos:
            self.duration_min_nanos = duration_nanos
        if self.duration_max_nanos is None or duration_nanos > self.duration_max_nanos:
            self.duration_max_nanos = duration_nanos
        self.sketch.add(duration_nanos)

    def add_many(self, durations_nanos: list[int], error_count: int) -> None:
        """Count spans of ``durations_nanos``, ``error_count`` of them errors.

        Same result as `add` on each duration, in a few C-level passes.
        """
        if not durations_nanos:
            return
        smallest = min(durations_nanos)
        largest = max(durations_nanos)
        self.count += len(durations_nanos)
        self.errors += error_count
        self.duration_sum_nanos += sum(durations_nanos)
        if self.duration_min_nanos is None or smallest < self.duration_min_nanos:
            self.duration_min_nanos = smallest
        if self.duration_max_nanos is None or largest > self.duration_max_nanos:
            self.duration_max_nanos = largest
        self.sketch.add_many(durations_nanos, smallest)

    def merge(self, other: LatencyStats) -> None:
        """Fold ``other`` into this one; the result is as if both saw all spans."""
        self.count += other.count
        self.errors += other.errors
        self.duration_sum_nanos += other.duration_sum_nanos
        low, high = other.duration_min_nanos, other.duration_max_nanos
        if low is not None and (
            self.duration_min_nanos is None or low < self.duration_min_nanos
        ):
            self.duration_min_nanos = low
        if high is not None and (
            self.duration_max_nanos is None or high > self.duration_max_nanos
        ):
            self.duration_max_nanos = high
        self.sketch.merge(other.sketch)


@dataclass
class ColdStartStats:
    """Cold and warm invocations of a function; added latency is derived.

    The latency cold starts added is estimated at read time as
    ``cold_count * (cold mean - warm mean)``; storing sums keeps it additive.
    """

    cold_count: int = 0
    cold_duration_sum_nanos: int = 0
    warm_count: int = 0
    warm_duration_sum_nanos: int = 0

    def merge(self, other: ColdStartStats) -> None:
        self.cold_count += other.cold_count
        self.cold_duration_sum_nanos += other.cold_duration_sum_nanos
        self.warm_count += other.warm_count
        self.warm_duration_sum_nanos += other.warm_duration_sum_nanos


@dataclass
class TraceSummary:
    """What a trace looked like when it went idle (full state, not a delta).

    ``services`` holds the trace's distinct services in name order, as many
    as fit `spanstream.aggregate.traces.MAX_SUMMARY_SERVICES_BYTES`;
    ``services_omitted`` counts the ones left out after them.
    """

    tenant: str
    trace_id: str
    root_service: str | None  # None until the root span has been seen
    root_operation: str | None
    start_unix_nanos: int
    end_unix_nanos: int
    span_count: int
    error_count: int
    services: list[str]
    cold_start_count: int
    services_omitted: int = 0

    @property
    def duration_nanos(self) -> int:
        return self.end_unix_nanos - self.start_unix_nanos


@dataclass
class AggregateDelta:
    """What one aggregator added since its last drain, for one `FlushRange`."""

    flush_range: FlushRange
    metrics: dict[RedKey, LatencyStats] = field(default_factory=dict)
    edges: dict[EdgeKey, LatencyStats] = field(default_factory=dict)
    cold_starts: dict[ColdStartKey, ColdStartStats] = field(default_factory=dict)
    late: dict[LateKey, int] = field(default_factory=dict)
    #: spans that went to an overflow series because of the cardinality guard
    overflowed_spans: int = 0

    def is_empty(self) -> bool:
        return not (self.metrics or self.edges or self.cold_starts or self.late)
