"""Generated spans as OTLP: protobuf messages and the OTLP/JSON mapping.

Both builders group spans by resource (first appearance first) and then by
instrumentation scope, the way an SDK exporter does. Building protobuf
messages is the costly part of encoding, so `AttributeCache` reuses one
`KeyValue` per distinct (key, value): appending a prebuilt message is about
three times cheaper than constructing it again.

The JSON builder writes the OTLP/JSON encoding directly rather than through
``json_format``: hex trace and span ids (not base64), 64-bit integers as
strings, enums as numbers or as names. ``json_format.MessageToDict`` costs
about 80 us a span, which would make JSON the slowest form by far; the unit
tests check this builder against ``json_format.ParseDict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from spanstream.model import SPAN_KINDS, STATUS_CODES
from spanstream.traffic.model import AttributeValue, GeneratedSpan

JSON_KIND_NAMES = tuple(f"SPAN_KIND_{name}" for name in SPAN_KINDS)
JSON_STATUS_NAMES = tuple(f"STATUS_CODE_{name}" for name in STATUS_CODES)


def any_value(value: AttributeValue) -> AnyValue:
    """Return ``value`` as an OTLP ``AnyValue`` (bool before int: bool is an int)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=value)


class AttributeCache:
    """Hands out one `KeyValue` per distinct attribute, built on first use."""

    def __init__(self) -> None:
        # (key, value) -> (type of value, KeyValue); the type tells 1 from True.
        self._key_values: dict[tuple[str, Any], tuple[type, KeyValue]] = {}

    def key_values(self, attributes: dict[str, AttributeValue]) -> list[KeyValue]:
        """Return the ``KeyValue`` messages of ``attributes``, in order."""
        cache = self._key_values
        found = []
        for item in attributes.items():
            kind = type(item[1])
            if kind is list:
                found.append(KeyValue(key=item[0], value=any_value(item[1])))
                continue
            hit = cache.get(item)
            if hit is None or hit[0] is not kind:
                hit = (kind, KeyValue(key=item[0], value=any_value(item[1])))
                cache[item] = hit
            found.append(hit[1])
        return found


def group_spans(
    spans: Iterable[GeneratedSpan],
) -> list[list[list[GeneratedSpan]]]:
    """Return spans grouped by resource, then by scope, in first-seen order."""
    by_resource: dict[int, dict[tuple[str, str], list[GeneratedSpan]]] = {}
    for span in spans:
        scopes = by_resource.setdefault(id(span.resource), {})
        scopes.setdefault((span.scope_name, span.scope_version), []).append(span)
    return [list(scopes.values()) for scopes in by_resource.values()]


def resource_spans(
    spans: Iterable[GeneratedSpan], cache: AttributeCache | None = None
) -> list[ResourceSpans]:
    """Return one ``ResourceSpans`` per resource among ``spans``."""
    cache = cache or AttributeCache()
    result = []
    for scope_groups in group_spans(spans):
        first = scope_groups[0][0]
        pb_resource_spans = ResourceSpans(
            resource=Resource(attributes=cache.key_values(first.resource.attributes))
        )
        for group in scope_groups:
            pb_scope_spans = pb_resource_spans.scope_spans.add(
                scope=InstrumentationScope(
                    name=group[0].scope_name, version=group[0].scope_version
                )
            )
            pb_spans = pb_scope_spans.spans
            for span in group:
                _add_span(pb_spans, span, cache)
        result.append(pb_resource_spans)
    return result


def _add_span(pb_spans: Any, span: GeneratedSpan, cache: AttributeCache) -> Span:
    pb_span = pb_spans.add(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        kind=span.kind,
        start_time_unix_nano=span.start_unix_nanos,
        end_time_unix_nano=span.end_unix_nanos,
    )
    pb_span.attributes.extend(cache.key_values(span.attributes))
    for event in span.events:
        pb_span.events.add(
            time_unix_nano=event.time_unix_nanos,
            name=event.name,
            attributes=cache.key_values(event.attributes),
        )
    # Always present, even when empty, as the SDK exporters write it.
    pb_span.status.SetInParent()
    if span.status_code or span.status_message:
        pb_span.status.code = span.status_code
        pb_span.status.message = span.status_message
    return pb_span


def export_request(
    spans: Iterable[GeneratedSpan], cache: AttributeCache | None = None
) -> ExportTraceServiceRequest:
    """Return an ``ExportTraceServiceRequest`` holding ``spans``."""
    return ExportTraceServiceRequest(resource_spans=resource_spans(spans, cache))


# -- OTLP/JSON -------------------------------------------------------------


def json_value(value: AttributeValue) -> dict[str, Any]:
    """Return ``value`` as an OTLP/JSON ``AnyValue`` object."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    return {"stringValue": value}


def json_attributes(attributes: dict[str, AttributeValue]) -> list[dict[str, Any]]:
    """Return ``attributes`` as an OTLP/JSON ``KeyValue`` list."""
    return [
        {"key": key, "value": json_value(value)} for key, value in attributes.items()
    ]


def json_request(
    spans: Iterable[GeneratedSpan], enum_names: bool = False
) -> dict[str, Any]:
    """Return an OTLP/JSON ``ExportTraceServiceRequest`` object for ``spans``.

    ``enum_names`` writes ``"SPAN_KIND_SERVER"`` instead of ``2`` (receivers
    must accept both).
    """
    resource_list = []
    for scope_groups in group_spans(spans):
        first = scope_groups[0][0]
        scope_list = [
            {
                "scope": {
                    "name": group[0].scope_name,
                    "version": group[0].scope_version,
                },
                "spans": [_json_span(span, enum_names) for span in group],
            }
            for group in scope_groups
        ]
        resource_list.append(
            {
                "resource": {"attributes": json_attributes(first.resource.attributes)},
                "scopeSpans": scope_list,
            }
        )
    return {"resourceSpans": resource_list}


def _json_span(span: GeneratedSpan, enum_names: bool) -> dict[str, Any]:
    json_span: dict[str, Any] = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
    }
    if span.parent_span_id:
        json_span["parentSpanId"] = span.parent_span_id.hex()
    json_span["name"] = span.name
    json_span["kind"] = JSON_KIND_NAMES[span.kind] if enum_names else span.kind
    json_span["startTimeUnixNano"] = str(span.start_unix_nanos)
    json_span["endTimeUnixNano"] = str(span.end_unix_nanos)
    json_span["attributes"] = json_attributes(span.attributes)
    if span.events:
        json_span["events"] = [
            {
                "timeUnixNano": str(event.time_unix_nanos),
                "name": event.name,
                "attributes": json_attributes(event.attributes),
            }
            for event in span.events
        ]
    status: dict[str, Any] = {}
    if span.status_message:
        status["message"] = span.status_message
    if span.status_code:
        code = span.status_code
        status["code"] = JSON_STATUS_NAMES[code] if enum_names else code
    json_span["status"] = status
    return json_span
