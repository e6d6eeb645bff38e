"""Trace assembly: whole traces from spans that arrive scattered over shards.

Records are keyed randomly, so the spans of one trace reach many shards in
any order. The assembler receives the spans of all shards routed by trace id,
keeps each trace compactly (`TraceState`) until no span of it has arrived for
``trace_idle_secs``, then emits its `TraceSummary` and its service graph
edges. A summarised trace is remembered until ``trace_retention_secs`` after
its last span, so a late span updates the summary (re-emitted in full) and
adds only the edges it brings; after that the trace is forgotten and a span
of it would start a new, partial trace.

Idleness and retention are measured by the injected clock, which should be
monotonic (``time.monotonic``); tests pass a fake one.

This module is the reference. `spanstream.aggregate.nativetraces` has a
compiled twin with the same interface that must return exactly what this one
returns; `make_trace_assembler` there picks one (``SPANSTREAM_DECODER``), and
any change of behaviour here must be made there too (native/src/traces.rs).
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

from spanstream.aggregate.edges import EdgeCalls
from spanstream.aggregate.tracestate import (
    CLIENT,
    FLAGS_OFFSET,
    HAS_PARENT,
    IS_COLD_START,
    IS_ERROR,
    KIND_INDEX,
    PRODUCER,
    ROW,
    VIRTUAL_SHIFT,
    TraceState,
    span_keys,
    virtual_node,
)
from spanstream.aggregate.types import EdgeKey, LatencyStats, TraceSummary
from spanstream.config import Settings
from spanstream.model import SpanBatch

logger = logging.getLogger(__name__)

_TraceId = tuple[str, str]  # (tenant, trace_id)
_CALLER_KINDS = frozenset((CLIENT, PRODUCER))
_ERROR_BITS = bytes(int(bool(byte & IS_ERROR)) for byte in range(256))
_COLD_START_BITS = bytes(int(bool(byte & IS_COLD_START)) for byte in range(256))
#: Stands in for a root's missing parent id: its key is 0, as a root's is.
_ROOT_PARENT_ID = "0" * 16
#: What the service names of one summary may take, in DynamoDB's measure
#: (UTF-8 bytes plus one a list element). Its other names (tenant, root
#: service and operation) are at most
#: `spanstream.config.MAX_ATTRIBUTE_VALUE_CHARS_LIMIT` characters each, so the
#: summary's item stays below DynamoDB's 400 KB however many services a trace
#: names (tests/unit/test_name_limits.py).
MAX_SUMMARY_SERVICES_BYTES = 128 * 1024
_MAX_UTF8_BYTES_PER_CHAR = 4


#: The `SpanBatch` columns trace assembly reads, in the order the compiled
#: assembler takes them (native/src/traces.rs) and the re-keyed stream
#: carries them (`spanstream.rekey`).
TRACE_COLUMNS = (
    "tenant",
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "operation",
    "span_kind",
    "start_unix_nanos",
    "end_unix_nanos",
    "duration_nanos",
    "is_error",
    "is_cold_start",
    "db_system",
    "messaging_system",
    "peer_service",
)


@dataclass
class TraceOutput:
    """What one `TraceAssembler.poll` found: summaries and their new edges."""

    summaries: list[TraceSummary] = field(default_factory=list)
    edges: dict[EdgeKey, LatencyStats] = field(default_factory=dict)


class TraceAssembler:
    """Assembles traces from spans of every shard and summarises idle ones.

    Not thread-safe. Memory grows with the number of pending and retained
    traces (about 50 bytes a span plus 0.6 KB a trace); the counts are
    exposed for metrics.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self._window_secs = settings.window_secs
        self._idle_secs = settings.trace_idle_secs
        self._retention_secs = settings.trace_retention_secs
        self._clock = clock
        # Both ordered by last span arrival, oldest first.
        self._pending: OrderedDict[_TraceId, TraceState] = OrderedDict()
        self._retained: OrderedDict[_TraceId, TraceState] = OrderedDict()

    @property
    def pending_trace_count(self) -> int:
        """Traces with spans not yet summarised."""
        return len(self._pending)

    @property
    def retained_trace_count(self) -> int:
        """Summarised traces remembered for late spans."""
        return len(self._retained)

    def add(self, batch: SpanBatch) -> None:
        """Keep the spans of ``batch`` with their traces; emits nothing.

        Unknown span kinds count as UNSPECIFIED; never raises for values of
        the types `SpanBatch` declares.
        """
        now = self._clock()
        _check_lengths(batch)
        # Column by column, then trace by trace: every per-span step is one
        # C-level pass over a column (keys, flags, packed rows), and each
        # trace takes its rows, in batch order, with one itemgetter.
        parent_ids = batch.parent_span_id
        keys = span_keys(batch.span_id)
        parent_keys = span_keys([parent or _ROOT_PARENT_ID for parent in parent_ids])
        kinds = list(map(KIND_INDEX.get, batch.span_kind, repeat(0)))
        flags = [
            kind
            | (IS_ERROR if is_error else 0)
            | (IS_COLD_START if is_cold else 0)
            | (HAS_PARENT if parent else 0)
            for kind, is_error, is_cold, parent in zip(
                kinds, batch.is_error, batch.is_cold_start, parent_ids, strict=True
            )
        ]
        virtual_names: list[str | None] = [None] * len(kinds)
        for index, kind in enumerate(kinds):
            if kind in _CALLER_KINDS:
                virtual_name, virtual_type = virtual_node(
                    batch.db_system[index],
                    batch.messaging_system[index],
                    batch.peer_service[index],
                )
                virtual_names[index] = virtual_name
                flags[index] |= virtual_type << VIRTUAL_SHIFT
        services = list(map(sys.intern, batch.service))
        rows = list(
            map(
                ROW.pack,
                keys,
                parent_keys,
                batch.end_unix_nanos,
                batch.duration_nanos,
                flags,
            )
        )
        starts = batch.start_unix_nanos
        ends = batch.end_unix_nanos
        indices_by_trace: defaultdict[_TraceId, list[int]] = defaultdict(list)
        for index, trace_key in enumerate(
            zip(batch.tenant, batch.trace_id, strict=True)
        ):
            indices_by_trace[trace_key].append(index)
        touched: dict[_TraceId, TraceState] = {}
        for trace_key, indices in indices_by_trace.items():
            trace = touched[trace_key] = self._open(trace_key)
            if len(indices) == 1:
                (index,) = indices
                trace.rows += rows[index]
                trace.services.append(services[index])
                trace.virtual_names.append(virtual_names[index])
                trace.note_times(starts[index], ends[index])
                continue
            take = itemgetter(*indices)
            trace.rows += b"".join(take(rows))
            trace.services.extend(take(services))
            trace.virtual_names.extend(take(virtual_names))
            trace.note_times(min(take(starts)), max(take(ends)))
        operations = batch.operation
        for index, parent in enumerate(parent_ids):
            if not parent:
                touched[batch.tenant[index], batch.trace_id[index]].note_root(
                    keys[index], services[index], operations[index], starts[index]
                )
        for trace_key, trace in touched.items():
            trace.last_seen = now
            self._pending.move_to_end(trace_key)

    def _open(self, trace_key: _TraceId) -> TraceState:
        trace = self._pending.get(trace_key)
        if trace is None:
            trace = self._retained.pop(trace_key, None)
            if trace is None:
                trace = TraceState(sys.intern(trace_key[0]), trace_key[1])
            self._pending[trace_key] = trace
        return trace

    def poll(self) -> TraceOutput:
        """Summarise every trace idle for ``trace_idle_secs``; forget retained
        traces whose last span is ``trace_retention_secs`` old.

        Returns their summaries (full state; a trace re-summarised after
        late spans appears again) and the edges they add. A trace whose only
        late spans were repeats is not summarised again.
        """
        now = self._clock()
        while self._retained:
            trace_key, trace = next(iter(self._retained.items()))
            if now - trace.last_seen < self._retention_secs:
                break
            del self._retained[trace_key]
        output = TraceOutput()
        calls = EdgeCalls()
        while self._pending:
            trace_key, trace = next(iter(self._pending.items()))
            if now - trace.last_seen < self._idle_secs:
                break
            del self._pending[trace_key]
            self._summarise(trace, output, calls)
            if now - trace.last_seen < self._retention_secs:
                self._retained[trace_key] = trace
        calls.fold_into(output.edges)
        self._log_poll(output)
        return output

    def flush_all(self) -> TraceOutput:
        """Summarise every pending trace now, idle or not (at shutdown).

        Returns summaries and edges as `poll` does; the traces are retained.
        """
        output = TraceOutput()
        calls = EdgeCalls()
        for trace_key, trace in self._pending.items():
            self._summarise(trace, output, calls)
            self._retained[trace_key] = trace
        self._pending.clear()
        calls.fold_into(output.edges)
        self._log_poll(output)
        return output

    def _summarise(
        self, trace: TraceState, output: TraceOutput, calls: EdgeCalls
    ) -> None:
        was_summarised = trace.was_summarised
        if trace.deduplicate() == 0 and was_summarised:
            trace.compact()
            return
        calls.collect(trace, list(trace.iter_rows()), self._window_secs)
        output.summaries.append(_summary_of(trace))
        trace.compact()

    def _log_poll(self, output: TraceOutput) -> None:
        logger.debug(
            "summarised %d traces, %d edge keys; %d pending, %d retained",
            len(output.summaries),
            len(output.edges),
            len(self._pending),
            len(self._retained),
        )


def _check_lengths(batch: SpanBatch) -> None:
    """Raise ValueError unless the columns `TraceAssembler.add` reads are as
    long as each other, before any trace is touched."""
    columns = [getattr(batch, name) for name in TRACE_COLUMNS]
    lengths = [len(column) for column in columns]
    if len(set(lengths)) > 1:
        raise ValueError(f"SpanBatch columns differ in length: {lengths}")


def bounded_services(services: Iterable[str]) -> tuple[list[str], int]:
    """Return the distinct ``services`` in name order, as many as fit
    `MAX_SUMMARY_SERVICES_BYTES`, and how many were left out after them."""
    distinct = sorted(set(services))
    budget = MAX_SUMMARY_SERVICES_BYTES
    if sum(map(len, distinct)) * _MAX_UTF8_BYTES_PER_CHAR + len(distinct) <= budget:
        return distinct, 0
    for index, service in enumerate(distinct):
        budget -= len(service.encode("utf-8", "surrogatepass")) + 1
        if budget < 0:
            return distinct[:index], len(distinct) - index
    return distinct, 0


def _summary_of(trace: TraceState) -> TraceSummary:
    # Both bits are in the low byte of each row's flags: count them with two
    # C-level passes over those bytes.
    low_flags = bytes(trace.rows[FLAGS_OFFSET :: ROW.size])
    errors = low_flags.translate(_ERROR_BITS).count(1)
    cold_starts = low_flags.translate(_COLD_START_BITS).count(1)
    services, services_omitted = bounded_services(trace.services)
    if services_omitted:
        logger.debug(
            "summary of trace %s lists %d services and omits %d (names too long)",
            trace.trace_id,
            len(services),
            services_omitted,
        )
    return TraceSummary(
        tenant=trace.tenant,
        trace_id=trace.trace_id,
        root_service=trace.root_service,
        root_operation=trace.root_operation,
        start_unix_nanos=trace.start_min_unix_nanos or 0,
        end_unix_nanos=trace.end_max_unix_nanos or 0,
        span_count=trace.row_count,
        error_count=errors,
        services=services,
        cold_start_count=cold_starts,
        services_omitted=services_omitted,
    )
