"""What the pipeline should output, computed the plain way from span truth.

Everything here is deliberately naive: whole lists of spans in memory, plain
loops and dicts, exact sorted durations instead of sketches. It shares no
code with ``spanstream.aggregate``, ``decode`` or ``enrich``, so a bug there
cannot hide by being repeated here. Keys are plain tuples in the field order
of `spanstream.aggregate.types` (``RedKey``, ``EdgeKey``, ``ColdStartKey``):
a NamedTuple equals and hashes like the plain tuple of its fields, so these
dicts can be indexed with the pipeline's keys directly.

Rules beyond the per-span ones in `spanstream.traffic.truth`:

* RED: every span counts in (tenant, service, operation, span_kind,
  status_class, window of its end).
* Edges: a SERVER span whose parent (same tenant and trace) is a CLIENT span
  is an ``rpc`` call from the client's service to the server's; a CONSUMER
  whose parent is a PRODUCER is ``messaging``. A CLIENT or PRODUCER span that
  no such child answers calls a virtual node: its ``db_system``
  (``database``), else its ``messaging_system`` (``queue``), else its
  ``peer_service`` (``peer``); with none of them it is no edge. A call is
  measured by the client (producer) span: its duration and the window of its
  end; it is an error if either half is.
* Traces: keyed (tenant, trace_id); the root is the span without a parent
  (the earliest-starting one if there are several); start is the earliest
  start, end the latest end.
* Cold starts: SERVER and CONSUMER spans (invocations) of functions
  (``faas_name`` set), keyed by (tenant, faas_name, window of the end); cold
  if ``is_cold_start``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spanstream.traffic.truth import SpanTruth

RedTuple = tuple[str, str, str, str, str, int]
EdgeTuple = tuple[str, str, str, str, int]
ColdStartTuple = tuple[str, str, int]
TraceTuple = tuple[str, str]

INVOCATION_KINDS = ("SERVER", "CONSUMER")


@dataclass
class ExpectedStats:
    """Count, errors and every duration of a series (or of an edge's calls)."""

    count: int = 0
    errors: int = 0
    duration_sum_nanos: int = 0
    duration_min_nanos: int | None = None
    duration_max_nanos: int | None = None
    durations_nanos: list[int] = field(default_factory=list)

    def add(self, duration_nanos: int, is_error: bool) -> None:
        self.count += 1
        if is_error:
            self.errors += 1
        self.duration_sum_nanos += duration_nanos
        if self.duration_min_nanos is None or duration_nanos < self.duration_min_nanos:
            self.duration_min_nanos = duration_nanos
        if self.duration_max_nanos is None or duration_nanos > self.duration_max_nanos:
            self.duration_max_nanos = duration_nanos
        self.durations_nanos.append(duration_nanos)

    def quantile(self, q: float) -> int:
        """Return the exact ``q`` quantile: the value at rank ``floor(q * (n-1))``.

        That is the rank the latency sketch reports within 1 % of. Raises
        ValueError when there are no durations or ``q`` is outside [0, 1].
        """
        if not self.durations_nanos:
            raise ValueError("no durations")
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        ordered = sorted(self.durations_nanos)
        rank = q * (len(ordered) - 1)
        return ordered[int(rank)]


@dataclass
class ExpectedTrace:
    """The summary a trace should get once all its spans were seen."""

    tenant: str
    trace_id: str
    root_service: str | None
    root_operation: str | None
    start_unix_nanos: int
    end_unix_nanos: int
    span_count: int
    error_count: int
    services: list[str]
    cold_start_count: int


@dataclass
class ExpectedColdStarts:
    cold_count: int = 0
    cold_duration_sum_nanos: int = 0
    warm_count: int = 0
    warm_duration_sum_nanos: int = 0


@dataclass
class Expected:
    """All four expectations of one set of spans."""

    red: dict[RedTuple, ExpectedStats]
    edges: dict[EdgeTuple, ExpectedStats]
    traces: dict[TraceTuple, ExpectedTrace]
    cold_starts: dict[ColdStartTuple, ExpectedColdStarts]


def window_of(end_unix_nanos: int, window_secs: int = 60) -> int:
    """Return the start (unix seconds) of the window ``end_unix_nanos`` is in."""
    return end_unix_nanos // 1_000_000_000 // window_secs * window_secs


def expected(spans: Iterable[SpanTruth], window_secs: int = 60) -> Expected:
    """Return RED, edges, trace summaries and cold starts of ``spans``."""
    spans = list(spans)
    return Expected(
        red=expected_red(spans, window_secs),
        edges=expected_edges(spans, window_secs),
        traces=expected_traces(spans),
        cold_starts=expected_cold_starts(spans, window_secs),
    )


def expected_red(
    spans: Iterable[SpanTruth], window_secs: int = 60
) -> dict[RedTuple, ExpectedStats]:
    """Return the RED statistics per series and window."""
    red: dict[RedTuple, ExpectedStats] = {}
    for span in spans:
        key = (
            span.tenant,
            span.service,
            span.operation,
            span.span_kind,
            span.status_class,
            window_of(span.end_unix_nanos, window_secs),
        )
        if key not in red:
            red[key] = ExpectedStats()
        red[key].add(span.duration_nanos, span.is_error)
    return red


def expected_edges(
    spans: Iterable[SpanTruth], window_secs: int = 60
) -> dict[EdgeTuple, ExpectedStats]:
    """Return the service-graph calls per edge and window."""
    edges: dict[EdgeTuple, ExpectedStats] = {}
    for trace_spans in _by_trace(spans).values():
        by_id = {span.span_id: span for span in trace_spans}
        answered = set()
        for span in trace_spans:
            parent = by_id.get(span.parent_span_id) if span.parent_span_id else None
            if parent is None:
                continue
            if span.span_kind == "SERVER" and parent.span_kind == "CLIENT":
                connection_type = "rpc"
            elif span.span_kind == "CONSUMER" and parent.span_kind == "PRODUCER":
                connection_type = "messaging"
            else:
                continue
            answered.add(parent.span_id)
            key = (
                parent.tenant,
                parent.service,
                span.service,
                connection_type,
                window_of(parent.end_unix_nanos, window_secs),
            )
            _stats(edges, key).add(
                parent.duration_nanos, parent.is_error or span.is_error
            )
        for span in trace_spans:
            if span.span_kind not in ("CLIENT", "PRODUCER"):
                continue
            if span.span_id in answered:
                continue
            node = virtual_node(span)
            if node is None:
                continue
            key = (
                span.tenant,
                span.service,
                node[0],
                node[1],
                window_of(span.end_unix_nanos, window_secs),
            )
            _stats(edges, key).add(span.duration_nanos, span.is_error)
    return edges


def virtual_node(span: SpanTruth) -> tuple[str, str] | None:
    """Return (node, connection type) a caller span with no answering half calls."""
    if span.db_system:
        return span.db_system, "database"
    if span.messaging_system:
        return span.messaging_system, "queue"
    if span.peer_service:
        return span.peer_service, "peer"
    return None


def expected_traces(spans: Iterable[SpanTruth]) -> dict[TraceTuple, ExpectedTrace]:
    """Return the summary each trace should get."""
    traces: dict[TraceTuple, ExpectedTrace] = {}
    for key, trace_spans in _by_trace(spans).items():
        roots = [span for span in trace_spans if not span.parent_span_id]
        root = None
        for candidate in roots:
            if root is None or candidate.start_unix_nanos < root.start_unix_nanos:
                root = candidate
        services = set()
        errors = 0
        cold_starts = 0
        for span in trace_spans:
            services.add(span.service)
            if span.is_error:
                errors += 1
            if span.is_cold_start:
                cold_starts += 1
        traces[key] = ExpectedTrace(
            tenant=key[0],
            trace_id=key[1],
            root_service=root.service if root else None,
            root_operation=root.operation if root else None,
            start_unix_nanos=min(span.start_unix_nanos for span in trace_spans),
            end_unix_nanos=max(span.end_unix_nanos for span in trace_spans),
            span_count=len(trace_spans),
            error_count=errors,
            services=sorted(services),
            cold_start_count=cold_starts,
        )
    return traces


def expected_cold_starts(
    spans: Iterable[SpanTruth], window_secs: int = 60
) -> dict[ColdStartTuple, ExpectedColdStarts]:
    """Return cold and warm invocations per function and window."""
    result: dict[ColdStartTuple, ExpectedColdStarts] = {}
    for span in spans:
        if span.faas_name is None or span.span_kind not in INVOCATION_KINDS:
            continue
        key = (span.tenant, span.faas_name, window_of(span.end_unix_nanos, window_secs))
        if key not in result:
            result[key] = ExpectedColdStarts()
        stats = result[key]
        if span.is_cold_start:
            stats.cold_count += 1
            stats.cold_duration_sum_nanos += span.duration_nanos
        else:
            stats.warm_count += 1
            stats.warm_duration_sum_nanos += span.duration_nanos
    return result


def diff_stats(
    expected: Mapping[Any, ExpectedStats],
    actual: Mapping[Any, Any],
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
    relative_accuracy: float = 0.01,
) -> list[str]:
    """Return one line per difference between expected and actual statistics.

    ``actual`` maps the same keys to objects with ``count``, ``errors``,
    ``duration_sum_nanos``, ``duration_min_nanos``, ``duration_max_nanos``
    and, if present, a ``sketch`` with ``quantile(q)``. Counts and sums must
    match exactly; quantiles within ``relative_accuracy``. An empty list
    means they agree.
    """
    problems = []
    for key in expected.keys() - actual.keys():
        problems.append(f"missing {key!r}")
    for key in actual.keys() - expected.keys():
        problems.append(f"unexpected {key!r}")
    for key in expected.keys() & actual.keys():
        want, got = expected[key], actual[key]
        for name in (
            "count",
            "errors",
            "duration_sum_nanos",
            "duration_min_nanos",
            "duration_max_nanos",
        ):
            if getattr(want, name) != getattr(got, name):
                problems.append(
                    f"{key!r}: {name} expected {getattr(want, name)!r}, "
                    f"got {getattr(got, name)!r}"
                )
        sketch = getattr(got, "sketch", None)
        if sketch is None:
            continue
        for q in quantiles:
            exact = want.quantile(q)
            estimate = sketch.quantile(q)
            if estimate is None or abs(estimate - exact) > relative_accuracy * exact:
                problems.append(
                    f"{key!r}: p{q * 100:g} expected {exact}, got {estimate}"
                )
    return sorted(problems)


def _by_trace(spans: Iterable[SpanTruth]) -> dict[TraceTuple, list[SpanTruth]]:
    traces: dict[TraceTuple, list[SpanTruth]] = {}
    for span in spans:
        key = (span.tenant, span.trace_id)
        if key not in traces:
            traces[key] = []
        traces[key].append(span)
    return traces


def _stats(table: dict[EdgeTuple, ExpectedStats], key: EdgeTuple) -> ExpectedStats:
    if key not in table:
        table[key] = ExpectedStats()
    return table[key]
