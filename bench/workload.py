"""The reference workload: one seeded set of traces in every input form.

The traces come from `spanstream.traffic` (the generator the tests use), so
the shape is the generator's: four tenants running the same shop of eight
services. `describe` measures that shape from the generated spans rather
than restating it, so the table always shows what was actually run.
"""

from __future__ import annotations

import gzip
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zstandard

from spanstream.model import KinesisRecord, RecordRef
from spanstream.traffic.encode import EncodedRecord, Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import GeneratedTrace

SEED = 42
STREAM = "bench-stream"
SHARD_ID = "shardId-000000000000"

#: Input forms measured, by the name the table uses. The compressed forms are
#: the Collector's Kinesis exporter with compression on: each OTLP protobuf
#: record compressed whole.
FORMS = ("protobuf", "json", "gzip", "zstd", "kpl")
REFERENCE_FORM = "protobuf"
#: Spans batched into one export before they become records, one record per
#: resource of the batch: one second of the steady 5,000 spans/s, as a fleet
#: whose SDKs export once a second produces it (about 150 spans a record over
#: the 32 resources). `bench.e2e` puts the same shape live.
EXPORT_BATCH_SPANS = 5_000


@dataclass
class Workload:
    """The reference traces and their records in each form."""

    seed: int
    traces: list[GeneratedTrace]
    records: dict[str, list[KinesisRecord]] = field(default_factory=dict)

    @property
    def span_count(self) -> int:
        return sum(len(trace.spans) for trace in self.traces)


def build(min_span_count: int, seed: int = SEED) -> Workload:
    """Generate whole traces holding at least ``min_span_count`` spans and
    encode them in every form of `FORMS`. Deterministic for a seed, except
    that timestamps end at the current time (so no span counts as late)."""
    now_unix_nanos = time.time_ns()
    traces = generate_spans(min_span_count, seed, now_unix_nanos)
    arrival_unix_millis = now_unix_nanos // 1_000_000
    proto = encode_records(traces, Form.OTLP_PROTO, seed, EXPORT_BATCH_SPANS)
    encoded = {
        "protobuf": proto,
        "json": encode_records(traces, Form.OTLP_JSON, seed, EXPORT_BATCH_SPANS),
        "gzip": [_recompress(r, _gzip) for r in proto],
        "zstd": [_recompress(r, zstandard.ZstdCompressor().compress) for r in proto],
        "kpl": encode_records(traces, Form.KPL, seed, EXPORT_BATCH_SPANS),
    }
    workload = Workload(seed, traces)
    for form, records in encoded.items():
        workload.records[form] = to_kinesis_records(records, arrival_unix_millis)
    return workload


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _recompress(record: EncodedRecord, compress: Any) -> EncodedRecord:
    return EncodedRecord(record.partition_key, compress(record.data))


def to_kinesis_records(
    records: list[EncodedRecord],
    arrival_unix_millis: int,
    shard_id: str = SHARD_ID,
) -> list[KinesisRecord]:
    """Return ``records`` as one shard's records, in sequence order."""
    base = 49_000_000_000_000_000_000
    return [
        KinesisRecord(
            record.data,
            RecordRef(
                STREAM,
                shard_id,
                str(base + index),
                0,
                record.partition_key,
                arrival_unix_millis,
            ),
        )
        for index, record in enumerate(records)
    ]


def describe(workload: Workload) -> dict[str, Any]:
    """Return the workload's shape, measured from its spans."""
    spans = [span for trace in workload.traces for span in trace.spans]
    per_trace = [len(trace.spans) for trace in workload.traces]
    services = {span.truth.service for span in spans}
    operations = {(span.truth.service, span.truth.operation) for span in spans}
    invocations = [s for s in spans if s.truth.faas_name is not None]
    records = workload.records[REFERENCE_FORM]
    return {
        "seed": workload.seed,
        "spans": len(spans),
        "traces": len(workload.traces),
        "tenants": sorted(Counter(s.truth.tenant for s in spans)),
        "services": len(services),
        "operations": len(operations),
        "spans_per_trace_mean": round(statistics.fmean(per_trace), 2),
        "spans_per_trace_max": max(per_trace),
        "span_attributes_per_span_mean": round(
            statistics.fmean(len(s.attributes) for s in spans), 2
        ),
        "resource_attributes_per_span_mean": round(
            statistics.fmean(len(s.resource.attributes) for s in spans), 2
        ),
        "error_rate": round(sum(s.truth.is_error for s in spans) / len(spans), 4),
        "cold_start_rate_of_invocations": round(
            sum(s.truth.is_cold_start for s in invocations) / len(invocations), 4
        )
        if invocations
        else 0.0,
        "function_spans_share": round(len(invocations) / len(spans), 4),
        "records_by_form": {form: len(workload.records[form]) for form in FORMS},
        "spans_per_record_protobuf": round(len(spans) / len(records), 2),
        "bytes_per_record_by_form": {
            form: round(statistics.fmean(len(r.data) for r in workload.records[form]))
            for form in FORMS
        },
    }
