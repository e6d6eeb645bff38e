"""The trace summary archive: one Parquet row per summary, on S3.

A summary is written once per trace (again after late spans), so a DynamoDB
item per summary would cost one write unit per trace, about 130,000 a
million spans at eight spans a trace: more than every aggregate together.
S3 takes a flush's summaries in a few objects instead, partitioned Hive
style like the span archive, by tenant and the UTC date and hour of the
trace's start::

    {trace_archive_prefix}tenant={tenant}/dt=YYYY-MM-DD/hour=HH/{digest}.parquet

``digest`` is a SHA-256 of the object's rows, so writing the same summaries
again (a retried or replayed flush) replaces the object instead of adding a
copy. A trace may still appear in several objects: re-summarised after late
spans, or summarised in two different flushes around a crash. Readers keep
one row per (tenant, trace_id), the *latest state*: the most spans, then the
latest end, then the largest digest of its values (`latest_state`), which is
the same rule ``schemas/athena.sql`` uses in its ``trace_summaries_latest``
view.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spanstream.aggregate.types import TraceSummary
from spanstream.sinks.archive import (
    COMPRESSION,
    NANOS_PER_HOUR,
    PARQUET_CONTENT_TYPE,
    PARTITION_KEY_DOCUMENTS,
    partition_prefix,
)
from spanstream.sinks.s3put import (
    PendingObject,
    S3ObjectWriter,
)

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("root_service", pa.string()),
        pa.field("root_operation", pa.string()),
        pa.field("start_unix_nanos", pa.int64(), nullable=False),
        pa.field("end_unix_nanos", pa.int64(), nullable=False),
        pa.field("duration_nanos", pa.int64(), nullable=False),
        pa.field("span_count", pa.int64(), nullable=False),
        pa.field("error_count", pa.int64(), nullable=False),
        pa.field("cold_start_count", pa.int64(), nullable=False),
        pa.field("services", pa.list_(pa.string()), nullable=False),
        pa.field("services_omitted", pa.int64(), nullable=False),
    ]
)


def summary_table(summaries: Sequence[TraceSummary]) -> pa.Table:
    """Return ``summaries`` as an arrow table of `SUMMARY_SCHEMA`, in order."""
    return pa.table(
        [
            pa.array([s.tenant for s in summaries], pa.string()),
            pa.array([s.trace_id for s in summaries], pa.string()),
            pa.array([s.root_service for s in summaries], pa.string()),
            pa.array([s.root_operation for s in summaries], pa.string()),
            pa.array([s.start_unix_nanos for s in summaries], pa.int64()),
            pa.array([s.end_unix_nanos for s in summaries], pa.int64()),
            pa.array([s.duration_nanos for s in summaries], pa.int64()),
            pa.array([s.span_count for s in summaries], pa.int64()),
            pa.array([s.error_count for s in summaries], pa.int64()),
            pa.array([s.cold_start_count for s in summaries], pa.int64()),
            pa.array([s.services for s in summaries], pa.list_(pa.string())),
            pa.array([s.services_omitted for s in summaries], pa.int64()),
        ],
        schema=SUMMARY_SCHEMA,
    )


def summaries_of(table: pa.Table) -> list[TraceSummary]:
    """Return the summaries of a table of `SUMMARY_SCHEMA` (an archive object)."""
    columns = table.select(SUMMARY_SCHEMA.names).to_pydict()
    return [
        TraceSummary(
            tenant=tenant,
            trace_id=trace_id,
            root_service=root_service,
            root_operation=root_operation,
            start_unix_nanos=start,
            end_unix_nanos=end,
            span_count=span_count,
            error_count=error_count,
            services=list(services),
            cold_start_count=cold_start_count,
            services_omitted=services_omitted,
        )
        for (
            tenant,
            trace_id,
            root_service,
            root_operation,
            start,
            end,
            _duration,
            span_count,
            error_count,
            cold_start_count,
            services,
            services_omitted,
        ) in zip(*columns.values(), strict=True)
    ]


def encode_summaries(summaries: Sequence[TraceSummary]) -> bytes:
    """Return ``summaries`` as one zstd-compressed Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(summary_table(summaries), sink, compression=COMPRESSION)
    return bytes(sink.getvalue().to_pybytes())


def _state(summary: TraceSummary) -> tuple[Any, ...]:
    return (
        summary.span_count,
        summary.end_unix_nanos,
        summary.start_unix_nanos,
        summary.error_count,
        summary.cold_start_count,
        summary.root_service or "",
        summary.root_operation or "",
        tuple(summary.services),
        summary.services_omitted,
    )


def latest_state(summaries: Iterable[TraceSummary]) -> list[TraceSummary]:
    """Return one summary per (tenant, trace_id), the latest state of each.

    The latest state has the most spans, then the latest end, then the
    greatest of its other values, so the choice depends only on the set of
    rows, never on the order objects were listed in. Sorted by tenant, start,
    trace id.
    """
    best: dict[tuple[str, str], TraceSummary] = {}
    for summary in summaries:
        key = (summary.tenant, summary.trace_id)
        held = best.get(key)
        if held is None or _state(summary) > _state(held):
            best[key] = summary
    return sorted(
        best.values(), key=lambda s: (s.tenant, s.start_unix_nanos, s.trace_id)
    )


def digest(summaries: Sequence[TraceSummary]) -> str:
    """Return 32 hex digits of SHA-256 over the summaries' values, in order."""
    hasher = hashlib.sha256()
    for summary in summaries:
        hasher.update(
            repr((summary.tenant, summary.trace_id, _state(summary))).encode(
                "utf-8", "surrogatepass"
            )
        )
    return hasher.hexdigest()[:32]


def object_key(
    prefix: str, tenant: str, hour_index: int, summaries: Sequence[TraceSummary]
) -> str:
    """Return the key of the object holding ``summaries`` of one tenant and hour."""
    return f"{partition_prefix(prefix, tenant, hour_index)}{digest(summaries)}.parquet"


class SummaryArchiveWriter(S3ObjectWriter):
    """Writes `TraceSummary` rows to the trace archive in ``settings.bucket``.

    Has the ``write_summaries`` of `spanstream.pipeline.AggregateSink`, so a
    trace stage can be given either this or the DynamoDB table writer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.objects_written = 0
        self.summaries_written = 0

    def write_summaries(self, summaries: Sequence[TraceSummary]) -> list[str]:
        """Write ``summaries`` as one object per (tenant, UTC hour of start).

        Of two summaries of one trace in one call, the later is kept. Rows
        are sorted by start and trace id within an object, so the keys and
        bytes depend only on the summaries. Returns the keys; raises
        `SinkError` (after every upload finished) if one failed, and writing
        the same summaries again completes it.
        """
        by_trace = {(s.tenant, s.trace_id): s for s in summaries}
        groups: dict[tuple[str, int], list[TraceSummary]] = defaultdict(list)
        for summary in by_trace.values():
            hour_index = summary.start_unix_nanos // NANOS_PER_HOUR
            groups[summary.tenant, hour_index].append(summary)
        pending = []
        for (tenant, hour_index), rows in sorted(groups.items()):
            rows.sort(key=lambda s: (s.start_unix_nanos, s.trace_id))
            pending.append(
                PendingObject(
                    object_key(
                        self.settings.trace_archive_prefix, tenant, hour_index, rows
                    ),
                    partial(encode_summaries, rows),
                    PARQUET_CONTENT_TYPE,
                )
            )
        keys = self.upload(pending)
        self.objects_written += len(keys)
        self.summaries_written += len(by_trace)
        logger.debug(
            "archived %d trace summaries in %d objects", len(by_trace), len(keys)
        )
        return keys


def schema_document() -> dict[str, Any]:
    """Return the trace archive contract written to ``schemas/trace-archive.json``."""
    return {
        "description": (
            "Parquet trace summary archive; generated from "
            "spanstream.sinks.summaries.SUMMARY_SCHEMA by schema_document()"
        ),
        "format": "parquet",
        "compression": COMPRESSION,
        "key_template": (
            "{trace_archive_prefix}tenant={tenant}/dt={YYYY-MM-DD}/hour={HH}/"
            "{sha256 of the rows, 32 hex digits}.parquet"
        ),
        "latest_state": (
            "one row per (tenant, trace_id): most span_count, then latest "
            "end_unix_nanos, then greatest other values"
        ),
        "columns": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable}
            for f in SUMMARY_SCHEMA
        ],
        "partition_keys": PARTITION_KEY_DOCUMENTS,
    }
