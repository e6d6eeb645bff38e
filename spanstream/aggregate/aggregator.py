"""Per-shard aggregation of RED series, late spans and cold starts.

One `ShardAggregator` per shard sees that shard's batches in sequence order
and hands back, at each flush, an `AggregateDelta` of what it saw since the
last one. This is the hot path, so the loop works on the batch's columns with
``zip`` and does per span only a tuple key, a dict lookup and a list append:
durations are buffered per series and folded into `LatencyStats` in bulk
(``sum``/``min``/``max``/one comprehension), which is several times cheaper
than updating statistics span by span and gives the same result.

The compiled extension runs that loop over a whole batch
(``native/src/red.rs``): it hands back each series' durations, the late
spans and each function window's invocation counts, in the order the loop
would have met them, and `ShardAggregator.add` then works per key instead of
per span. The Python loop stays the reference, and runs where the extension
is missing or declines a batch (a value of another type than `SpanBatch`
declares).
"""

from __future__ import annotations

import logging

from spanstream import extension
from spanstream.aggregate.cardinality import SeriesGuard
from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartKey,
    ColdStartStats,
    FlushRange,
    LateKey,
    LatencyStats,
    RedKey,
)
from spanstream.aggregate.windows import (
    MILLIS_PER_SEC,
    NANOS_PER_SEC,
    arrival_window_start_secs,
    status_class,
    window_start_secs,
)
from spanstream.config import Settings
from spanstream.model import SpanBatch

try:
    from spanstream_native import red_groups as _red_groups
except ImportError:  # not installed (it is optional), or built before it
    _red_groups = None

logger = logging.getLogger(__name__)

#: The `SpanBatch` columns the per-span loop reads, in the order the compiled
#: loop takes them (native/src/red.rs).
RED_COLUMNS = (
    "tenant",
    "service",
    "operation",
    "span_kind",
    "status_code",
    "http_status_code",
    "end_unix_nanos",
    "duration_nanos",
    "is_error",
    "arrival_unix_millis",
    "faas_name",
    "is_cold_start",
)

#: Span kinds whose spans are function invocations when they carry faas.name.
INVOCATION_KINDS = frozenset(("SERVER", "CONSUMER"))

# Buffered durations are folded into statistics once this many are pending,
# which bounds the buffer's memory between flushes.
_FOLD_AFTER_SPANS = 262_144

# What a span is looked up by before its status class and cardinality are
# known: tenant, service, operation, kind, status code, HTTP status code,
# window start, is_error.
_SpanKey = tuple[str, str, str, str, str, "int | None", int, bool]


class _Series:
    """Durations buffered for one (RED series, is_error) pair until folded."""

    __slots__ = ("durations_nanos", "is_error", "is_overflow", "key")

    def __init__(self, key: RedKey, is_error: bool, is_overflow: bool) -> None:
        self.key = key
        self.is_error = is_error
        self.is_overflow = is_overflow
        self.durations_nanos: list[int] = []


class ShardAggregator:
    """Aggregates the spans of one shard between flushes.

    Not thread-safe: one aggregator belongs to one shard's consumer.
    """

    def __init__(self, settings: Settings, compiled: bool | None = None) -> None:
        """``compiled``: run the per-span loop in the extension; False runs
        the reference loop. The default follows `spanstream.extension`
        (``SPANSTREAM_DECODER``), which raises `ConfigError` for ``native``
        when the extension is missing."""
        if compiled is None:
            compiled = extension.use_native(available=_red_groups is not None)
        self.compiled = compiled
        self._window_secs = settings.window_secs
        self._allowed_lateness_secs = settings.allowed_lateness_secs
        self._guard = SeriesGuard(settings.max_series_per_tenant)
        self._max_arrival_unix_millis = 0
        self._newest_window_start_secs: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._metrics: dict[RedKey, LatencyStats] = {}
        self._cold_starts: dict[ColdStartKey, ColdStartStats] = {}
        self._late: dict[LateKey, int] = {}
        self._overflowed_spans = 0
        self._buffers: dict[_SpanKey, list[int]] = {}
        self._series: list[_Series] = []
        self._buffered_spans = 0

    def add(self, batch: SpanBatch) -> None:
        """Count every span of ``batch`` in its RED series, late or cold-start
        counters. Writes nothing outside the aggregator; never raises for span
        values of the types `SpanBatch` declares."""
        open_secs = self._window_secs + self._allowed_lateness_secs
        groups = None
        if _red_groups is not None and self.compiled:
            groups = _red_groups(
                [getattr(batch, name) for name in RED_COLUMNS],
                self._window_secs,
                open_secs,
            )
        if groups is None:
            self._add_spans(batch, open_secs)
        else:
            self._add_groups(batch, *groups)
        if batch.end_unix_nanos:
            newest_window = window_start_secs(
                max(batch.end_unix_nanos), self._window_secs
            )
            if self._newest_window_start_secs is None or (
                newest_window > self._newest_window_start_secs
            ):
                self._newest_window_start_secs = newest_window
        latest_arrival_millis = max(batch.arrival_unix_millis, default=0)
        self._max_arrival_unix_millis = max(
            self._max_arrival_unix_millis, latest_arrival_millis
        )
        self._buffered_spans += len(batch)
        if self._buffered_spans >= _FOLD_AFTER_SPANS:
            self._fold()

    def _add_spans(self, batch: SpanBatch, open_secs: int) -> None:
        """The reference loop: one span at a time."""
        window_secs = self._window_secs
        buffers = self._buffers
        for (
            tenant,
            service,
            operation,
            kind,
            status,
            http_status,
            end_nanos,
            duration_nanos,
            is_error,
            arrival_millis,
            faas_name,
            is_cold,
        ) in zip(*(getattr(batch, name) for name in RED_COLUMNS), strict=True):
            window = end_nanos // NANOS_PER_SEC // window_secs * window_secs
            if arrival_millis > 0 and arrival_millis > (window + open_secs) * 1000:
                self._count_late(tenant, service, arrival_millis)
            else:
                span_key = (
                    tenant,
                    service,
                    operation,
                    kind,
                    status,
                    http_status,
                    window,
                    is_error,
                )
                buffer = buffers.get(span_key)
                if buffer is None:
                    buffer = self._bind(span_key)
                buffer.append(duration_nanos)
            if faas_name is not None and kind in INVOCATION_KINDS:
                stats = self._invocation_stats(tenant, faas_name, window)
                if is_cold:
                    stats.cold_count += 1
                    stats.cold_duration_sum_nanos += duration_nanos
                else:
                    stats.warm_count += 1
                    stats.warm_duration_sum_nanos += duration_nanos

    def _add_groups(
        self,
        batch: SpanBatch,
        series: list[tuple[int, list[int]]],
        late: list[int],
        invocations: list[tuple[int, int, int, int, int]],
    ) -> None:
        """Add what the compiled loop found, key by key, in the order the
        reference loop would have met each key."""
        window_secs = self._window_secs
        buffers = self._buffers
        tenants = batch.tenant
        services = batch.service
        ends = batch.end_unix_nanos
        for first, durations in series:
            span_key = (
                tenants[first],
                services[first],
                batch.operation[first],
                batch.span_kind[first],
                batch.status_code[first],
                batch.http_status_code[first],
                window_start_secs(ends[first], window_secs),
                batch.is_error[first],
            )
            buffer = buffers.get(span_key)
            if buffer is None:
                buffer = self._bind(span_key)
            buffer.extend(durations)
        for index in late:
            self._count_late(
                tenants[index], services[index], batch.arrival_unix_millis[index]
            )
        for first, cold, cold_sum, warm, warm_sum in invocations:
            stats = self._invocation_stats(
                tenants[first],
                batch.faas_name[first],  # type: ignore[arg-type]
                window_start_secs(ends[first], window_secs),
            )
            stats.cold_count += cold
            stats.cold_duration_sum_nanos += cold_sum
            stats.warm_count += warm
            stats.warm_duration_sum_nanos += warm_sum

    def _invocation_stats(
        self, tenant: str, function: str, window: int
    ) -> ColdStartStats:
        stats = self._cold_starts.get((tenant, function, window))  # type: ignore[call-overload]
        if stats is None:
            stats = ColdStartStats()
            self._cold_starts[ColdStartKey(tenant, function, window)] = stats
        return stats

    def _bind(self, span_key: _SpanKey) -> list[int]:
        tenant, service, operation, kind, status, http_status, window, is_error = (
            span_key
        )
        red_key = RedKey(
            tenant,
            service,
            operation,
            kind,
            status_class(http_status, status),
            window,
        )
        admitted_key = self._guard.admit(red_key)
        series = _Series(admitted_key, is_error, admitted_key is not red_key)
        self._series.append(series)
        self._buffers[span_key] = series.durations_nanos
        return series.durations_nanos

    def _count_late(self, tenant: str, service: str, arrival_unix_millis: int) -> None:
        window = arrival_window_start_secs(arrival_unix_millis, self._window_secs)
        key = LateKey(tenant, service, window)
        self._late[key] = self._late.get(key, 0) + 1

    def _fold(self) -> None:
        metrics = self._metrics
        for series in self._series:
            durations = series.durations_nanos
            if not durations:
                continue
            stats = metrics.get(series.key)
            if stats is None:
                stats = metrics[series.key] = LatencyStats()
            stats.add_many(durations, len(durations) if series.is_error else 0)
            if series.is_overflow:
                self._overflowed_spans += len(durations)
            durations.clear()
        self._buffered_spans = 0

    def drain(self, flush_range: FlushRange) -> AggregateDelta:
        """Return everything added since the last drain, tied to ``flush_range``,
        and start afresh. ``edges`` of the delta stay empty: edges need whole
        traces (see `TraceAssembler`)."""
        self._fold()
        delta = AggregateDelta(
            flush_range=flush_range,
            metrics=self._metrics,
            cold_starts=self._cold_starts,
            late=self._late,
            overflowed_spans=self._overflowed_spans,
        )
        self._reset()
        self._forget_closed_windows()
        logger.debug(
            "drained %s: %d series, %d cold-start keys, %d late keys, %d overflowed",
            flush_range.object_stem(),
            len(delta.metrics),
            len(delta.cold_starts),
            len(delta.late),
            delta.overflowed_spans,
        )
        return delta

    def _forget_closed_windows(self) -> None:
        # A window closes for good once records arrive after its end plus the
        # allowed lateness. Without arrival times nothing is ever late, so the
        # newest window seen stands in for the clock.
        if self._max_arrival_unix_millis > 0:
            now_secs = self._max_arrival_unix_millis // MILLIS_PER_SEC
        elif self._newest_window_start_secs is not None:
            now_secs = self._newest_window_start_secs + self._window_secs
        else:
            return
        self._guard.forget_windows_before(
            now_secs - self._window_secs - self._allowed_lateness_secs
        )
