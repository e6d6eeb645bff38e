"""Zipkin v2 JSON payloads as OTLP protobuf messages.

The OpenTelemetry Collector's Kinesis exporter can write Zipkin JSON, and
many systems still emit it. Spans are regrouped by their local service into
OTLP resources and mapped field by field: microsecond ``timestamp`` and
``duration`` become nanosecond start and end, ``tags`` become string
attributes, an ``error`` tag becomes status ERROR, and the remote endpoint's
service becomes ``peer.service``.

Zipkin lets the client and server halves of an RPC share one span id
(``"shared": true`` on the server half). OTLP needs distinct ids, so the
server half gets an id derived from the trace and span ids, with the client
half as its parent. The derivation is deterministic, so a replayed record
yields the same ids.
"""

from __future__ import annotations

import hashlib
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1 import trace_pb2

_KINDS = {
    "SERVER": trace_pb2.Span.SPAN_KIND_SERVER,
    "CLIENT": trace_pb2.Span.SPAN_KIND_CLIENT,
    "PRODUCER": trace_pb2.Span.SPAN_KIND_PRODUCER,
    "CONSUMER": trace_pb2.Span.SPAN_KIND_CONSUMER,
}
_UNKNOWN_SERVICE = "unknown_service"


def is_zipkin_json(document: Any) -> bool:
    """Return True if a parsed JSON document looks like Zipkin v2 spans."""
    if isinstance(document, dict):
        return "traceId" in document
    return (
        isinstance(document, list)
        and bool(document)
        and all(isinstance(span, dict) and "traceId" in span for span in document)
    )


def _hex_id(value: Any, width: int) -> bytes:
    """Return a hex id left-padded to ``width`` hex digits, or b"" if invalid."""
    if not isinstance(value, str) or not value or len(value) > width:
        return b""
    try:
        return bytes.fromhex(value.rjust(width, "0"))
    except ValueError:
        return b""


def server_half_id(trace_id: bytes, span_id: bytes) -> bytes:
    """Return the id given to the server half of a shared Zipkin span."""
    return hashlib.sha256(trace_id + span_id + b"/server").digest()[:8]


def _service_of(endpoint: Any) -> str | None:
    if isinstance(endpoint, dict):
        name = endpoint.get("serviceName")
        if isinstance(name, str) and name:
            return name
    return None


def parse_zipkin_json(document: Any) -> ExportTraceServiceRequest:
    """Return Zipkin v2 span(s) as an ``ExportTraceServiceRequest``.

    A span without a timestamp gets empty ids, so the extractor counts it as
    malformed and keeps the rest. Raises ``TypeError``/``ValueError`` only for
    values of the wrong JSON type in otherwise well-formed spans.
    """
    spans = [document] if isinstance(document, dict) else document
    by_service: dict[str, list[trace_pb2.Span]] = {}
    for zipkin_span in spans:
        service = _service_of(zipkin_span.get("localEndpoint")) or _UNKNOWN_SERVICE
        by_service.setdefault(service, []).append(_to_pb_span(zipkin_span))
    request = ExportTraceServiceRequest()
    for service, pb_spans in by_service.items():
        resource_spans = request.resource_spans.add()
        attribute = resource_spans.resource.attributes.add()
        attribute.key = "service.name"
        attribute.value.string_value = service
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "zipkin"
        scope_spans.spans.extend(pb_spans)
    return request


def _to_pb_span(zipkin_span: dict[str, Any]) -> trace_pb2.Span:
    pb_span = trace_pb2.Span()
    timestamp_micros = zipkin_span.get("timestamp")
    if not isinstance(timestamp_micros, int | float) or isinstance(
        timestamp_micros, bool
    ):
        return pb_span  # empty ids: counted as malformed by the extractor
    trace_id = _hex_id(zipkin_span.get("traceId"), 32)
    span_id = _hex_id(zipkin_span.get("id"), 16)
    parent_id = _hex_id(zipkin_span.get("parentId"), 16)
    kind = _KINDS.get(
        str(zipkin_span.get("kind") or ""), trace_pb2.Span.SPAN_KIND_INTERNAL
    )
    if (
        zipkin_span.get("shared")
        and kind == trace_pb2.Span.SPAN_KIND_SERVER
        and span_id
    ):
        parent_id, span_id = span_id, server_half_id(trace_id, span_id)
    pb_span.trace_id = trace_id
    pb_span.span_id = span_id
    pb_span.parent_span_id = parent_id
    pb_span.name = str(zipkin_span.get("name") or "")
    pb_span.kind = kind
    pb_span.start_time_unix_nano = int(timestamp_micros * 1000)
    duration_micros = zipkin_span.get("duration") or 0
    pb_span.end_time_unix_nano = pb_span.start_time_unix_nano + int(
        duration_micros * 1000
    )
    tags = zipkin_span.get("tags") or {}
    if not isinstance(tags, dict):
        tags = {}
    for key, value in tags.items():
        attribute = pb_span.attributes.add()
        attribute.key = str(key)
        attribute.value.string_value = str(value)
    if "http.path" in tags and "url.path" not in tags:
        attribute = pb_span.attributes.add()
        attribute.key = "url.path"
        attribute.value.string_value = str(tags["http.path"])
    remote_service = _service_of(zipkin_span.get("remoteEndpoint"))
    if remote_service and "peer.service" not in tags:
        attribute = pb_span.attributes.add()
        attribute.key = "peer.service"
        attribute.value.string_value = remote_service
    if "error" in tags:
        pb_span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        pb_span.status.message = str(tags["error"])
    return pb_span
