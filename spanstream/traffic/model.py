"""The generator's output: OTLP-ready span data plus the truth it intended.

Values stay plain Python (bytes ids, dict attributes) so the encoders can
turn them into protobuf or JSON directly, and so tests can read them without
protobuf. One `GeneratedResource` object is shared by every span of one
service of one tenant; the encoders group spans by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from spanstream.traffic.truth import SpanTruth

#: An OTLP attribute value as the generator produces it.
AttributeValue = str | bool | int | float | list[str]


@dataclass(eq=False, slots=True)
class GeneratedResource:
    """A service instance of one tenant: ``key`` is ``"<tenant>/<service>"``."""

    key: str
    attributes: dict[str, AttributeValue]


@dataclass(slots=True)
class GeneratedEvent:
    """A span event (``exception``, gRPC ``message``, ...)."""

    name: str
    time_unix_nanos: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(slots=True)
class GeneratedSpan:
    """One span: OTLP fields (ids as bytes, kind and status as enum numbers)."""

    resource: GeneratedResource
    scope_name: str
    scope_version: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # b"" for a root span
    name: str
    kind: int
    start_unix_nanos: int
    end_unix_nanos: int
    attributes: dict[str, AttributeValue]
    events: list[GeneratedEvent]
    status_code: int
    status_message: str
    truth: SpanTruth


@dataclass(slots=True)
class GeneratedTrace:
    """The spans of one trace, parents before children, and its shape name."""

    trace_id: bytes
    tenant: str
    shape: str
    spans: list[GeneratedSpan]

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()


def iter_spans(traces: Iterable[GeneratedTrace]) -> Iterator[GeneratedSpan]:
    """Yield every span of ``traces`` in order."""
    for trace in traces:
        yield from trace.spans


def truths(traces: Iterable[GeneratedTrace]) -> list[SpanTruth]:
    """Return the intended `SpanTruth` of every span of ``traces``."""
    return [span.truth for span in iter_spans(traces)]


def span_count(traces: Iterable[GeneratedTrace]) -> int:
    """Return how many spans ``traces`` hold."""
    return sum(len(trace.spans) for trace in traces)
