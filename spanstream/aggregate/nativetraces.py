"""Trace assembly with its state in the compiled extension.

`NativeTraceAssembler` is `TraceAssembler` with the per-span work (keys,
flags, grouping by trace, deduplication, edge pairing) and the pending and
retained traces held by ``spanstream_native.TraceAssemblerCore``
(native/src/traces.rs). It must return exactly what `TraceAssembler` returns
for the same batches and clock: the Python class stays the reference and the
fallback, and the tests feed both the same input and compare.

The extension hands back plain tuples holding the very name objects the
batches held: each summary's fields in `TraceSummary`'s order, its services
already distinct and sorted (the few whose names might overflow the item
budget go through `bounded_services` here), and each edge's durations in the
order the reference buffers them, which this module folds into
`LatencyStats` with ``add_many`` as the reference does.

`make_trace_assembler` picks the implementation by the switch that picks the
decoder (`spanstream.extension`, ``SPANSTREAM_DECODER``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import starmap
from typing import Any

from spanstream import extension
from spanstream.aggregate.traces import (
    MAX_SUMMARY_SERVICES_BYTES,
    TRACE_COLUMNS,
    TraceAssembler,
    TraceOutput,
    bounded_services,
)
from spanstream.aggregate.types import EdgeKey, LatencyStats, TraceSummary
from spanstream.config import Settings
from spanstream.errors import ConfigError
from spanstream.model import SpanBatch

logger = logging.getLogger(__name__)


class NativeTraceAssembler:
    """`TraceAssembler`, compiled: same interface, same outputs.

    Not thread-safe. Its memory (about 56 bytes a span plus the trace's
    index entry) is allocated by Rust, out of `tracemalloc`'s sight.
    Raises `ConfigError` if the extension is not installed.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        native = extension.spanstream_native
        if native is None:
            raise ConfigError(
                "NativeTraceAssembler needs the spanstream_native extension, "
                "which is not installed (pip install ./native)"
            )
        self._core = native.TraceAssemblerCore(
            settings.window_secs,
            settings.trace_idle_secs,
            settings.trace_retention_secs,
            MAX_SUMMARY_SERVICES_BYTES,
        )
        self._clock = clock

    @property
    def pending_trace_count(self) -> int:
        """Traces with spans not yet summarised."""
        return int(self._core.pending_trace_count)

    @property
    def retained_trace_count(self) -> int:
        """Summarised traces remembered for late spans."""
        return int(self._core.retained_trace_count)

    def add(self, batch: SpanBatch) -> None:
        """Keep the spans of ``batch`` with their traces; emits nothing.

        Raises ValueError if its columns differ in length and `struct.error`
        for an end or duration outside int64, as `TraceAssembler.add` does,
        before any trace is touched.
        """
        now = self._clock()
        self._core.add(now, tuple(getattr(batch, name) for name in TRACE_COLUMNS))

    def poll(self) -> TraceOutput:
        """Summarise idle traces and forget old retained ones; see
        `TraceAssembler.poll`, whose result this returns."""
        return self._output(*self._core.poll(self._clock()))

    def flush_all(self) -> TraceOutput:
        """Summarise every pending trace now and retain it; see
        `TraceAssembler.flush_all`, whose result this returns."""
        return self._output(*self._core.flush_all())

    def _output(
        self, summary_rows: list[Any], over_budget: list[int], edge_rows: list[Any]
    ) -> TraceOutput:
        for index in over_budget:
            summary_rows[index] = _bounded(summary_rows[index])
        output = TraceOutput(summaries=list(starmap(TraceSummary, summary_rows)))
        edges = output.edges
        for (
            tenant,
            client,
            server,
            connection_type,
            window_start_secs,
            durations_nanos,
            errors,
        ) in edge_rows:
            stats = LatencyStats()
            stats.add_many(durations_nanos, errors)
            edge_key = EdgeKey(
                tenant, client, server, connection_type, window_start_secs
            )
            edges[edge_key] = stats
        logger.debug(
            "summarised %d traces, %d edge keys; %d pending, %d retained",
            len(output.summaries),
            len(output.edges),
            self._core.pending_trace_count,
            self._core.retained_trace_count,
        )
        return output


def _bounded(fields: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return summary ``fields`` (in `TraceSummary` order) with the services
    `bounded_services` keeps and the count it omits."""
    *head, services, cold_start_count, _ = fields
    kept, omitted = bounded_services(services)
    if omitted:
        logger.debug(
            "summary of trace %s lists %d services and omits %d (names too long)",
            fields[1],
            len(kept),
            omitted,
        )
    return (*head, kept, cold_start_count, omitted)


#: Either implementation; both have the interface of `TraceAssembler`.
AnyTraceAssembler = TraceAssembler | NativeTraceAssembler


def make_trace_assembler(
    settings: Settings,
    clock: Callable[[], float],
    implementation: str | None = None,
) -> AnyTraceAssembler:
    """Return a `NativeTraceAssembler` when the extension is to be used, else
    a `TraceAssembler`.

    ``implementation`` (``auto``, ``python`` or ``native``) overrides
    ``SPANSTREAM_DECODER``; raises `ConfigError` as
    `spanstream.extension.use_native` does.
    """
    if extension.use_native(implementation):
        return NativeTraceAssembler(settings, clock)
    return TraceAssembler(settings, clock)
