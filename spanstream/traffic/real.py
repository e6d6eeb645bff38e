"""Loaders for the recorded real traces in ``../shared/data/real-traces``.

Two captures (see that folder's README): an OpenTelemetry capture of the
robot-shop demo as a CSV, which becomes OTLP ``ResourceSpans`` (one per
service) plus a per-span `SpanTruth`; and Zipkin v2 JSON files, which
spanstream reads as an input form of its own, so they are handed out as
record payloads, one JSON array per trace. The files are read in place,
never copied.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import (
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
)

from spanstream.model import SPAN_KINDS, STATUS_CODES
from spanstream.traffic.encode import EncodedRecord
from spanstream.traffic.truth import (
    DEFAULT_TENANT,
    SpanTruth,
    http_status_code,
    is_error_for,
    operation_for,
    peer_service_for,
    status_class_for,
)

ROBOT_SHOP_CSV = Path("real-traces", "robot-shop", "traces.csv")
ZIPKIN_DIR = Path("real-traces", "zipkin")
ROBOT_SHOP_SCOPE = InstrumentationScope(name="robot-shop-capture", version="1")

#: CSV column -> (OTel attribute, value type); empty and "0" values are absent.
_ATTRIBUTE_COLUMNS = (
    ("http_method", "http.method", str),
    ("http_status_code", "http.status_code", int),
    ("http_target", "http.target", str),
    ("http_url", "http.url", str),
    ("net_peer_name", "net.peer.name", str),
    ("net_peer_port", "net.peer.port", int),
)


SHARED_DATA_VARIABLE = "SPANSTREAM_SHARED_DATA"


def shared_data_dir(repo_root: Path | str | None = None) -> Path:
    """Return ``SPANSTREAM_SHARED_DATA`` if set, else ``<repo root>/../shared/data``
    (default root: this checkout)."""
    if not repo_root and (override := os.environ.get(SHARED_DATA_VARIABLE)):
        return Path(override)
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    return root.parent / "shared" / "data"


# -- robot-shop --------------------------------------------------------------


def robot_shop_rows(data_dir: Path | str | None = None) -> list[dict[str, str]]:
    """Return the CSV rows as read (strings; anomaly labels included)."""
    path = Path(data_dir or shared_data_dir()) / ROBOT_SHOP_CSV
    with path.open(newline="") as csv_file:
        return list(csv.DictReader(csv_file))


def row_attributes(row: dict[str, str]) -> dict[str, str | int]:
    """Return a row's span attributes under their OTel (old semconv) names."""
    attributes: dict[str, str | int] = {}
    for column, name, kind in _ATTRIBUTE_COLUMNS:
        raw = row[column]
        if raw in ("", "0"):
            continue
        attributes[name] = int(raw) if kind is int else raw
    return attributes


def robot_shop_resource_spans(
    data_dir: Path | str | None = None,
) -> list[ResourceSpans]:
    """Return the capture as one ``ResourceSpans`` per service, in CSV order.

    Resources carry only ``service.name`` (so the spans belong to the
    default tenant); kind and status are the CSV's OTLP enum numbers.
    Raises OSError if the file is missing.
    """
    by_service: dict[str, ScopeSpans] = {}
    for row in robot_shop_rows(data_dir):
        service = row["service_name"]
        scope_spans = by_service.get(service)
        if scope_spans is None:
            scope_spans = by_service[service] = ScopeSpans(scope=ROBOT_SHOP_SCOPE)
        scope_spans.spans.append(_pb_span(row))
    return [
        ResourceSpans(
            resource=Resource(attributes=[_key_value("service.name", service)]),
            scope_spans=[scope_spans],
        )
        for service, scope_spans in by_service.items()
    ]


def robot_shop_records(
    data_dir: Path | str | None = None, spans_per_record: int = 500
) -> list[EncodedRecord]:
    """Return the capture as OTLP protobuf records of at most ``spans_per_record``.

    Each record is an ``ExportTraceServiceRequest`` with one ``ResourceSpans``;
    the partition key is ``robot-shop-<service>-<n>``.
    """
    records = []
    for pb_resource_spans in robot_shop_resource_spans(data_dir):
        service = pb_resource_spans.resource.attributes[0].value.string_value
        spans = pb_resource_spans.scope_spans[0].spans
        for index, start in enumerate(range(0, len(spans), spans_per_record)):
            chunk = ResourceSpans(resource=pb_resource_spans.resource)
            chunk.scope_spans.add(
                scope=ROBOT_SHOP_SCOPE, spans=spans[start : start + spans_per_record]
            )
            request = ExportTraceServiceRequest(resource_spans=[chunk])
            key = f"robot-shop-{service}-{index}"
            records.append(EncodedRecord(key, request.SerializeToString()))
    return records


def robot_shop_truth(data_dir: Path | str | None = None) -> list[SpanTruth]:
    """Return the enriched view each CSV span should get, by the documented rules.

    Computed from the CSV columns directly (not from the OTLP built above).
    """
    truths = []
    for row in robot_shop_rows(data_dir):
        attributes = row_attributes(row)
        kind = SPAN_KINDS[int(row["span_kind"])]
        status = STATUS_CODES[int(row["span_status"])]
        start, end = int(row["start_time_ns"]), int(row["end_time_ns"])
        is_caller = kind in ("CLIENT", "PRODUCER")
        truths.append(
            SpanTruth(
                tenant=DEFAULT_TENANT,
                trace_id=row["trace_id"],
                span_id=row["span_id"],
                parent_span_id=row["parent_span_id"] or None,
                service=row["service_name"],
                operation=operation_for(row["span_name"], kind, attributes),
                span_name=row["span_name"],
                span_kind=kind,
                start_unix_nanos=start,
                end_unix_nanos=end,
                duration_nanos=max(0, end - start),
                is_error=is_error_for(kind, status, attributes),
                status_code=status,
                status_class=status_class_for(status, attributes),
                http_status_code=http_status_code(attributes),
                is_cold_start=False,
                faas_name=None,
                peer_service=peer_service_for(attributes) if is_caller else None,
                db_system=None,
                messaging_system=None,
            )
        )
    return truths


def _pb_span(row: dict[str, str]) -> Span:
    pb_span = Span(
        trace_id=bytes.fromhex(row["trace_id"]),
        span_id=bytes.fromhex(row["span_id"]),
        parent_span_id=bytes.fromhex(row["parent_span_id"]),
        name=row["span_name"],
        kind=Span.SpanKind.ValueType(int(row["span_kind"])),
        start_time_unix_nano=int(row["start_time_ns"]),
        end_time_unix_nano=int(row["end_time_ns"]),
        attributes=[
            _key_value(name, value) for name, value in row_attributes(row).items()
        ],
    )
    pb_span.status.code = Status.StatusCode.ValueType(int(row["span_status"]))
    pb_span.status.message = row["span_status_message"]
    return pb_span


def _key_value(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


# -- Zipkin ------------------------------------------------------------------


def zipkin_files(data_dir: Path | str | None = None) -> list[Path]:
    """Return the Zipkin v2 JSON files, sorted by name."""
    return sorted((Path(data_dir or shared_data_dir()) / ZIPKIN_DIR).glob("*.json"))


def zipkin_spans(data_dir: Path | str | None = None) -> list[dict[str, Any]]:
    """Return every Zipkin span of every file, as parsed JSON objects."""
    return [span for path in zipkin_files(data_dir) for span in _load(path)]


def zipkin_records(data_dir: Path | str | None = None) -> list[EncodedRecord]:
    """Return one record per trace: a JSON array of its Zipkin v2 spans.

    A file holding a single trace is passed on byte for byte; a file with
    several traces is split into one compact JSON array per trace. The
    partition key is the trace id.
    """
    records = []
    for path in zipkin_files(data_dir):
        file_bytes = path.read_bytes()
        by_trace = _group_by_trace(json.loads(file_bytes))
        if len(by_trace) == 1:
            records.append(EncodedRecord(next(iter(by_trace)), file_bytes))
            continue
        for trace_id, spans in by_trace.items():
            data = json.dumps(spans, separators=(",", ":")).encode()
            records.append(EncodedRecord(trace_id, data))
    return records


def _load(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_bytes())
    return document if isinstance(document, list) else [document]


def _group_by_trace(document: Any) -> dict[str, list[dict[str, Any]]]:
    spans = document if isinstance(document, list) else [document]
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    return by_trace


def iter_zipkin_traces(
    data_dir: Path | str | None = None,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(trace_id, spans)`` for every Zipkin trace."""
    for path in zipkin_files(data_dir):
        yield from _group_by_trace(json.loads(path.read_bytes())).items()
