"""Small builders of OTLP messages for decoder and enrichment tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1 import trace_pb2

from spanstream.model import KinesisRecord, RecordRef

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_ID = bytes.fromhex("b7ad6b7169203331")


def set_attributes(target: Any, attributes: dict[str, Any]) -> None:
    """Append ``attributes`` to a repeated KeyValue field."""
    for key, value in attributes.items():
        key_value = target.add()
        key_value.key = key
        if isinstance(value, bool):
            key_value.value.bool_value = value
        elif isinstance(value, int):
            key_value.value.int_value = value
        elif isinstance(value, float):
            key_value.value.double_value = value
        elif isinstance(value, list):
            for item in value:
                key_value.value.array_value.values.add().string_value = str(item)
        else:
            key_value.value.string_value = value


def make_span(
    name: str = "GET /users/{id}",
    kind: int = trace_pb2.Span.SPAN_KIND_SERVER,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
    parent_span_id: bytes = b"",
    start_unix_nanos: int = 1_700_000_000_000_000_000,
    duration_nanos: int = 5_000_000,
    attributes: dict[str, Any] | None = None,
    status_code: int = 0,
    events: tuple[str, ...] = (),
) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start_unix_nanos,
        end_time_unix_nano=start_unix_nanos + duration_nanos,
    )
    set_attributes(span.attributes, attributes or {})
    span.status.code = status_code  # type: ignore[assignment]
    for event_name in events:
        span.events.add().name = event_name
    return span


def make_request(
    spans: list[trace_pb2.Span], resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    set_attributes(
        resource_spans.resource.attributes, resource or {"service.name": "frontend"}
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "test"
    scope_spans.spans.extend(spans)
    return request


def make_record(
    data: bytes,
    sequence_number: str = "49590338271490256608559692538361571095921575989136588898",
) -> KinesisRecord:
    return KinesisRecord(
        data,
        RecordRef(
            "spans", "shardId-000000000000", sequence_number, 0, "pk", 1_700_000_000_000
        ),
    )
