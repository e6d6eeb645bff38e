"""OTLP/JSON payloads as protobuf messages.

OTLP/JSON is the proto3 JSON mapping with one difference that matters here:
trace and span ids are hex strings, not base64. They are rewritten to base64
before protobuf's own ``json_format`` parses the document, so enum names or
numbers and int64-as-string values are handled by the library. An id that is
not valid hex becomes empty, which the extractor counts as a malformed span.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_to_base64(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        return ""


def _rewrite_ids(span: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        if name in span:
            span[name] = _hex_to_base64(span[name])
    for link in span.get("links") or ():
        if isinstance(link, dict):
            for name in ("traceId", "spanId"):
                if name in link:
                    link[name] = _hex_to_base64(link[name])


def is_otlp_json(document: Any) -> bool:
    """Return True if a parsed JSON document looks like OTLP traces."""
    return isinstance(document, dict) and "resourceSpans" in document


def parse_otlp_json(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """Return the OTLP/JSON ``document`` as an ``ExportTraceServiceRequest``.

    Mutates ``document`` (ids are rewritten in place). Raises
    ``json_format.ParseError`` when the document does not fit the schema.
    """
    for resource_spans in document.get("resourceSpans") or ():
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in resource_spans.get("scopeSpans") or ():
            if not isinstance(scope_spans, dict):
                continue
            for span in scope_spans.get("spans") or ():
                if isinstance(span, dict):
                    _rewrite_ids(span)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (binascii.Error, TypeError, AttributeError) as exc:
        raise json_format.ParseError(str(exc)) from exc
    return message
