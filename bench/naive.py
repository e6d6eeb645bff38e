"""The baseline: a consumer written the way a typical user would write it.

Per record: deaggregate KPL with the library's Lambda helper, decompress by
magic bytes, parse the OTLP request and turn it into a dict with
``json_format.MessageToDict`` (OTLP/JSON is loaded with ``json.loads``, which
gives the same shape). Per span: look up the resource's service and tenant
in the attribute list, and update plain dicts: RED counts and a list of
durations per series (percentiles sorted at flush), a summary per trace, a
service-graph edge per parent/child pair across services, and cold starts
per function.

It writes nothing itself. For cost, the baseline's writes are what such a
consumer typically does: one DynamoDB ``UpdateItem`` (``ADD`` count, errors,
duration sum) per span; `update_item_params` builds that call, and
`bench.cost` counts it on a sample instead of sending a million of them.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zstandard
from aws_kinesis_agg.deaggregator import deaggregate_records
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from spanstream.model import KinesisRecord

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: OTLP/JSON may carry enums as numbers; MessageToDict gives their names.
SPAN_KINDS = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
STATUS_CODES = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}
WINDOW_SECS = 60
NANOS_PER_SEC = 1_000_000_000


#: Called per span with its RED key, duration and error flag (the baseline's
#: per-span write).
OnSpan = Callable[[tuple[Any, ...], int, bool], None]


@dataclass
class NaiveAggregates:
    """What the baseline keeps: plain dicts updated span by span."""

    red: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[tuple[Any, ...], int] = field(default_factory=lambda: defaultdict(int))
    cold_starts: dict[tuple[Any, ...], dict[str, int]] = field(default_factory=dict)
    span_services: dict[str, str] = field(default_factory=dict)
    spans: int = 0
    on_span: OnSpan | None = None

    def percentiles(self) -> dict[tuple[Any, ...], tuple[int, int, int]]:
        """Return p50/p90/p99 per RED series, by sorting its durations."""
        result = {}
        for key, series in self.red.items():
            ordered = sorted(series["durations"])
            last = len(ordered) - 1
            result[key] = tuple(ordered[int(last * q)] for q in (0.5, 0.9, 0.99))
        return result  # type: ignore[return-value]


def consume(
    records: list[KinesisRecord], on_span: OnSpan | None = None
) -> NaiveAggregates:
    """Decode and aggregate ``records`` the straightforward way.

    ``on_span`` (for the cost sample) is called once per span after its
    aggregates were updated; the throughput measurement passes none.
    """
    aggregates = NaiveAggregates(on_span=on_span)
    for record in records:
        for payload in _user_payloads(record):
            document = _to_dict(payload)
            for resource_spans in document.get("resourceSpans", []):
                _add_resource(aggregates, resource_spans)
    aggregates.percentiles()
    return aggregates


def _user_payloads(record: KinesisRecord) -> list[bytes]:
    data = record.data
    if data.startswith(KPL_MAGIC):
        event = [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": record.ref.partition_key,
                    "sequenceNumber": record.ref.sequence_number,
                    "approximateArrivalTimestamp": record.ref.arrival_unix_millis,
                    "data": base64.b64encode(data).decode(),
                }
            }
        ]
        return [
            base64.b64decode(user["kinesis"]["data"])
            for user in deaggregate_records(event)
        ]
    return [data]


def _to_dict(payload: bytes) -> dict[str, Any]:
    if payload.startswith(GZIP_MAGIC):
        payload = gzip.decompress(payload)
    elif payload.startswith(ZSTD_MAGIC):
        payload = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    elif payload[:1] == b"\x78":
        payload = zlib.decompress(payload)
    if payload[:1] == b"{":
        return dict(json.loads(payload))
    request = ExportTraceServiceRequest.FromString(payload)
    return json_format.MessageToDict(request)


def _attribute(attributes: list[dict[str, Any]], key: str) -> Any:
    for attribute in attributes:
        if attribute["key"] == key:
            value = attribute.get("value", {})
            return next(iter(value.values()), None)
    return None


def _add_resource(aggregates: NaiveAggregates, resource_spans: dict[str, Any]) -> None:
    resource_attributes = resource_spans.get("resource", {}).get("attributes", [])
    service = _attribute(resource_attributes, "service.name") or "unknown"
    tenant = _attribute(resource_attributes, "tenant.id") or "default"
    function = _attribute(resource_attributes, "faas.name")
    for scope_spans in resource_spans.get("scopeSpans", []):
        for span in scope_spans.get("spans", []):
            _add_span(aggregates, span, tenant, service, function)


def _add_span(
    aggregates: NaiveAggregates,
    span: dict[str, Any],
    tenant: str,
    service: str,
    function: str | None,
) -> None:
    aggregates.spans += 1
    start = int(span.get("startTimeUnixNano", 0))
    end = int(span.get("endTimeUnixNano", 0))
    duration = end - start
    status = span.get("status", {}).get("code", "STATUS_CODE_UNSET")
    status = STATUS_CODES.get(status, status)
    is_error = status == "STATUS_CODE_ERROR"
    window = end // NANOS_PER_SEC // WINDOW_SECS * WINDOW_SECS
    kind = span.get("kind", "SPAN_KIND_INTERNAL")
    kind = SPAN_KINDS.get(kind, kind)
    key = (tenant, service, span.get("name", ""), kind, status, window)
    series = aggregates.red.get(key)
    if series is None:
        series = aggregates.red[key] = {"count": 0, "errors": 0, "durations": []}
    series["count"] += 1
    series["errors"] += is_error
    series["durations"].append(duration)
    if aggregates.on_span is not None:
        aggregates.on_span(key, duration, is_error)

    trace_id = span.get("traceId", "")
    trace = aggregates.traces.get(trace_id)
    if trace is None:
        trace = aggregates.traces[trace_id] = {
            "spans": 0,
            "errors": 0,
            "start": start,
            "end": end,
            "services": set(),
            "root": None,
        }
    trace["spans"] += 1
    trace["errors"] += is_error
    trace["start"] = min(trace["start"], start)
    trace["end"] = max(trace["end"], end)
    trace["services"].add(service)
    span_id = span.get("spanId", "")
    parent = span.get("parentSpanId")
    if not parent:
        trace["root"] = (service, span.get("name"))
    else:
        parent_service = aggregates.span_services.get(parent)
        if parent_service is not None and parent_service != service:
            aggregates.edges[tenant, parent_service, service, window] += 1
    aggregates.span_services[span_id] = service

    if function is not None and kind in ("SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"):
        is_cold = _attribute(span.get("attributes", []), "faas.coldstart") is True
        stats = aggregates.cold_starts.setdefault(
            (tenant, function, window), {"cold": 0, "warm": 0}
        )
        stats["cold" if is_cold else "warm"] += 1


def update_item_params(
    table_name: str, key: tuple[Any, ...], duration_nanos: int, is_error: bool
) -> dict[str, Any]:
    """Return the ``UpdateItem`` call the baseline makes for one span."""
    tenant, service, operation, kind, status, window = key
    return {
        "TableName": table_name,
        "Key": {
            "pk": {"S": f"{tenant}#{service}"},
            "sk": {"S": f"{window}#{operation}#{kind}#{status}"},
        },
        "UpdateExpression": "ADD #c :one, #e :err, #d :dur",
        "ExpressionAttributeNames": {
            "#c": "count",
            "#e": "errors",
            "#d": "duration_sum_nanos",
        },
        "ExpressionAttributeValues": {
            ":one": {"N": "1"},
            ":err": {"N": "1" if is_error else "0"},
            ":dur": {"N": str(duration_nanos)},
        },
        "ReturnConsumedCapacity": "TOTAL",
    }
