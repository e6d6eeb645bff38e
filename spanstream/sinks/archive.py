"""The Parquet span archive on S3, readable by pyarrow and Athena.

Spans are partitioned Hive style by tenant and by the UTC date and hour of
their start::

    {archive_prefix}tenant={tenant}/dt=YYYY-MM-DD/hour=HH/{shard}-{first}-{last}.parquet

The tenant is encoded with `encode_component`, so no name can leave its
prefix. The object name is the `FlushRange` the spans came from, so writing the
same records again (a replay after a crash) replaces the objects it wrote
before instead of adding copies.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spanstream.aggregate.types import FlushRange
from spanstream.model import SPAN_COLUMNS, SpanBatch
from spanstream.sinks.arrays import arrow_type, column_array, use_compiled_builders
from spanstream.sinks.keys import encode_component
from spanstream.sinks.s3put import (
    PendingObject,
    S3ObjectWriter,
)

logger = logging.getLogger(__name__)

PARTITION_KEYS = ("tenant", "dt", "hour")
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
COMPRESSION = "zstd"
NANOS_PER_HOUR = 3_600 * 1_000_000_000

ARCHIVE_SCHEMA = pa.schema(
    [pa.field(name, arrow_type(kind)) for name, kind in SPAN_COLUMNS.items()]
)


def arrow_table(batch: SpanBatch) -> pa.Table:
    """Return ``batch`` as an arrow table of `ARCHIVE_SCHEMA`.

    Raises pyarrow's ``ArrowInvalid``/``ArrowTypeError`` (or OverflowError) if
    a column holds a value of the wrong type or out of its type's range.
    """
    columns = batch.columns()
    compiled = use_compiled_builders()
    return pa.table(
        [column_array(columns[f.name], f.type, compiled) for f in ARCHIVE_SCHEMA],
        schema=ARCHIVE_SCHEMA,
    )


def encode_parquet(batch: SpanBatch) -> bytes:
    """Return ``batch`` as a zstd-compressed Parquet file of `ARCHIVE_SCHEMA`.

    Raises as `arrow_table` does.
    """
    return encode_table(arrow_table(batch))


#: Columns whose values are (nearly) unique per span: ids, times and
#: sequence numbers. A dictionary page of theirs would be as big as the
#: column, so Parquet writers try it and fall back; they are written plain.
UNIQUE_VALUED_COLUMNS = frozenset(
    {
        "trace_id",
        "span_id",
        "parent_span_id",
        "start_unix_nanos",
        "end_unix_nanos",
        "duration_nanos",
        "source_sequence_number",
        "arrival_unix_millis",
    }
)


def _leaf_paths(field: pa.Field) -> list[str]:
    if pa.types.is_map(field.type):
        return [f"{field.name}.key_value.key", f"{field.name}.key_value.value"]
    return [field.name]


#: Every other column (map columns by their key and value leaves) is
#: dictionary-encoded: on the reference workload that made the files 14 %
#: smaller and their encoding 9 % faster than dictionaries for all.
DICTIONARY_COLUMNS = [
    path
    for f in ARCHIVE_SCHEMA
    if f.name not in UNIQUE_VALUED_COLUMNS
    for path in _leaf_paths(f)
]


#: Columns whose min/max statistics a reader can skip data with: the times
#: and duration, the error flags and the low-cardinality names queries
#: filter on. Ids, free text, sequence numbers and attribute maps have none:
#: an object's rows are in arrival order, so their ranges span nearly every
#: value and prune nothing, and computing them took a fifth of the encoding
#: time on the reference workload.
STATISTICS_COLUMNS = [
    "service",
    "operation",
    "span_kind",
    "start_unix_nanos",
    "end_unix_nanos",
    "duration_nanos",
    "status_code",
    "is_error",
    "http_status_code",
]


def encode_table(table: pa.Table) -> bytes:
    """Return an `arrow_table` as a zstd-compressed Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        use_dictionary=DICTIONARY_COLUMNS,
        write_statistics=STATISTICS_COLUMNS,
    )
    return bytes(sink.getvalue().to_pybytes())


def partition_prefix(prefix: str, tenant: str, hour_index: int) -> str:
    """Return ``{prefix}tenant=…/dt=YYYY-MM-DD/hour=HH/`` of one tenant and
    hour (``hour_index`` counts hours since the epoch: start nanos // 1 h)."""
    hour = datetime.fromtimestamp(hour_index * 3_600, UTC)
    return (
        f"{prefix}tenant={encode_component(tenant)}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
    )


def object_key(
    prefix: str, tenant: str, hour_index: int, flush_range: FlushRange
) -> str:
    """Return the key of the archive object of one tenant and hour."""
    return (
        f"{partition_prefix(prefix, tenant, hour_index)}"
        f"{encode_component(flush_range.object_stem())}.parquet"
    )


def group_rows(batch: SpanBatch) -> dict[tuple[str, int], list[int]]:
    """Return row indices of ``batch`` by (tenant, hours since the epoch)."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index, (tenant, start) in enumerate(
        zip(batch.tenant, batch.start_unix_nanos, strict=True)
    ):
        groups[tenant, start // NANOS_PER_HOUR].append(index)
    return groups


class ArchiveWriter(S3ObjectWriter):
    """Writes `SpanBatch` rows to the Parquet archive in ``settings.bucket``."""

    def write(self, batch: SpanBatch, flush_range: FlushRange) -> list[str]:
        """Write ``batch`` as one object per (tenant, UTC hour) and return the keys.

        The keys depend only on the rows and ``flush_range``, so a second
        write of the same records replaces the first. Objects are encoded and
        uploaded concurrently with ``ServerSideEncryption="AES256"``; returns
        after every upload succeeded and raises `SinkError` otherwise (some
        objects may then exist: writing the range again completes it).
        """
        groups = sorted(group_rows(batch).items())
        table = _whole_table(batch) if groups else None
        pending = [
            PendingObject(
                object_key(
                    self.settings.archive_prefix, tenant, hour_index, flush_range
                ),
                (
                    partial(_encode_rows, batch, indices)
                    if table is None
                    else partial(_encode_table_rows, table, indices)
                ),
                PARQUET_CONTENT_TYPE,
            )
            for (tenant, hour_index), indices in groups
        ]
        keys = self.upload(pending)
        logger.debug(
            "archived %d spans of %s/%s in %d objects",
            len(batch),
            flush_range.stream,
            flush_range.shard_id,
            len(keys),
        )
        return keys


def _whole_table(batch: SpanBatch) -> pa.Table | None:
    """Return ``batch`` as one table, to cut per object (None: a value is bad).

    Converting once and taking rows in arrow is cheaper than converting each
    object's rows. A batch holding a bad value is left to `_encode_rows`, so
    the objects without it are still written and the failure is reported per
    object as before.
    """
    try:
        return arrow_table(batch)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def _encode_table_rows(table: pa.Table, indices: list[int]) -> bytes:
    if len(indices) == table.num_rows:
        return encode_table(table)
    return encode_table(table.take(pa.array(indices, pa.int64())))


def _encode_rows(batch: SpanBatch, indices: list[int]) -> bytes:
    if len(indices) == len(batch):
        return encode_parquet(batch)
    return encode_parquet(batch.take(indices))


#: The Hive partition keys of both archives (`partition_prefix`), as their
#: schema documents describe them.
PARTITION_KEY_DOCUMENTS: list[dict[str, str]] = [
    {
        "name": "tenant",
        "type": "string",
        "source": "tenant, percent-encoded by spanstream.sinks.keys",
    },
    {"name": "dt", "type": "string", "source": "UTC date of start_unix_nanos"},
    {
        "name": "hour",
        "type": "int",
        "source": "UTC hour of start_unix_nanos, two digits in the key",
    },
]


def schema_document() -> dict[str, Any]:
    """Return the archive contract written to ``schemas/archive.json``."""
    return {
        "description": (
            "Parquet span archive; generated from spanstream.model.SPAN_COLUMNS "
            "by spanstream.sinks.archive.schema_document()"
        ),
        "format": "parquet",
        "compression": COMPRESSION,
        "key_template": (
            "{archive_prefix}tenant={tenant}/dt={YYYY-MM-DD}/hour={HH}/"
            "{shard_id}-{first_sequence_number}-{last_sequence_number}.parquet"
        ),
        "columns": [
            {"name": name, "type": kind} for name, kind in SPAN_COLUMNS.items()
        ],
        "partition_keys": PARTITION_KEY_DOCUMENTS,
        "statistics_columns": STATISTICS_COLUMNS,
    }
