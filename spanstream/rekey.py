"""Re-keying spans by trace id, for trace-level aggregates across processes.

Records keyed randomly scatter one trace over every shard, but trace
summaries and client/server pairing need all of a trace's spans in one
place. When shards are read by many processes (KCL workers), stage 1
forwards every span it decodes, in a compact form, to a second stream
(``Settings.trace_stream_name``), keyed so that all spans of a trace land on
one shard of that stream, where stage 2
(`spanstream.pipeline.TraceShardProcessor`) assembles traces.

Each trace id falls into one of ``Settings.trace_stream_buckets`` buckets
(CRC-32 of the id), and a rekeyed record holds the spans of one flush whose
traces fall into one bucket, under the partition key ``trace-bucket-<n>``:
every fragment of a trace, from any stage-1 shard, goes to the bucket's
shard. Packing a flush's traces by bucket, rather than one record per trace,
turns thousands of small records into at most one per bucket; Kinesis
charges PUT payload units per 25 KB of a record, so a 2 KB fragment alone
would cost as much as a full unit.

Every record also says how far its stage-1 shard has got (`SourceProgress`):
the shard, its watermark (the latest span-stream arrival time it has read,
or the wall clock while it is caught up and idle), whether it has ended, and
the span stream's open shards it knows of. Each stage-1 flush sends one
record to every bucket (with no spans where it has none), and an idle
stage-1 shard sends such progress records every flush interval, so every
trace-stream shard hears from every stage-1 shard. The trace stage's clock
is the smallest watermark of the stage-1 shards that have not ended: a trace
goes idle only once every shard that may still hold its spans has read past
them, however unevenly the shards progress (a backlog, a dead worker).

A record is a zlib-compressed JSON document ``{"v": 2, "src": shard,
"wm": millis, "end": bool, "expect": [shards], "spans": [[...], ...]}``
whose rows have the fields of `REKEYED_FIELDS`, the columns the trace stage
reads. Stage 1 replays forward the same spans and progress again; stage 2
counts each span id once, and progress only moves forward.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any

from spanstream.aggregate.traces import TRACE_COLUMNS
from spanstream.config import Settings
from spanstream.errors import DecodeError
from spanstream.model import SPAN_COLUMNS, KinesisRecord, SpanBatch
from spanstream.sinks.kinesis import MAX_RECORD_BYTES, put_records
from spanstream.sinks.retry import RetryPolicy

FORMAT_VERSION = 2
REKEYED_FIELDS = TRACE_COLUMNS
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "start_unix_nanos": (int,),
    "end_unix_nanos": (int,),
    "duration_nanos": (int,),
    "is_error": (bool,),
    "is_cold_start": (bool,),
    "parent_span_id": (str, type(None)),
    "db_system": (str, type(None)),
    "messaging_system": (str, type(None)),
    "peer_service": (str, type(None)),
}
#: What the columns the trace stage does not read hold in a decoded batch.
_NEUTRAL: dict[str, Any] = {
    "span_name": "",
    "status_code": "UNSET",
    "event_count": 0,
    "source_sub_sequence_number": 0,
}


DEFAULT_TRACE_BUCKETS = 64


def trace_bucket_key(trace_id: str, buckets: int = DEFAULT_TRACE_BUCKETS) -> str:
    """Return the partition key of the records that carry ``trace_id``'s spans."""
    return f"trace-bucket-{zlib.crc32(trace_id.encode()) % buckets}"


@dataclass(frozen=True)
class SourceProgress:
    """How far a stage-1 shard has read, as its rekeyed records say.

    ``watermark_millis``: the latest span-stream arrival time it has read
    (unix millis), or the wall clock while it is caught up; ``ended``: it
    has read its shard to the end; ``expected``: the span stream's open
    shards it knows of (the trace stage waits for each of them).
    """

    source: str
    watermark_millis: int
    ended: bool = False
    expected: tuple[str, ...] = ()


@dataclass(frozen=True)
class RekeyedRecord:
    """A decoded rekeyed record: its spans and its stage-1 shard's progress."""

    batch: SpanBatch
    progress: SourceProgress


def rekey_records(
    batch: SpanBatch,
    progress: SourceProgress,
    buckets: int = DEFAULT_TRACE_BUCKETS,
) -> list[tuple[str, bytes]]:
    """Return ``(partition_key, record_bytes)`` records for ``batch``.

    One record per bucket of trace ids (`trace_bucket_key`), every bucket,
    each carrying ``progress`` (buckets without spans get a record without
    spans). A bucket too large for one Kinesis record is split over several
    with the same partition key, so they land on one shard.
    """
    columns = [getattr(batch, name) for name in REKEYED_FIELDS]
    by_bucket: dict[str, list[list[Any]]] = {
        f"trace-bucket-{bucket}": [] for bucket in range(buckets)
    }
    for row in sorted(zip(*columns, strict=True), key=lambda row: row[1]):
        by_bucket[trace_bucket_key(row[1], buckets)].append(list(row))
    header = {
        "v": FORMAT_VERSION,
        "src": progress.source,
        "wm": progress.watermark_millis,
        "end": progress.ended,
        "expect": list(progress.expected),
    }
    records: list[tuple[str, bytes]] = []
    for key, rows in by_bucket.items():
        records.extend((key, data) for data in _encode_rows(header, rows))
    return records


def _encode_rows(header: dict[str, Any], rows: list[list[Any]]) -> list[bytes]:
    document = {**header, "spans": rows}
    data = zlib.compress(json.dumps(document, separators=(",", ":")).encode())
    if len(data) <= MAX_RECORD_BYTES or len(rows) <= 1:
        return [data]
    middle = len(rows) // 2
    return _encode_rows(header, rows[:middle]) + _encode_rows(header, rows[middle:])


def decode_rekeyed(record: KinesisRecord) -> RekeyedRecord:
    """Return the spans and the progress a rekeyed record carries.

    Only the `REKEYED_FIELDS` columns of the batch carry data; the others
    hold neutral values. Raises `DecodeError` naming the record if it is not
    a rekeyed record this version wrote.
    """
    try:
        document = json.loads(zlib.decompress(record.data))
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(record.ref, f"not a rekeyed span record: {exc}") from exc
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise DecodeError(
            record.ref, f"rekeyed record of an unknown format: {str(document)[:60]!r}"
        )
    progress = _progress(document, record)
    rows = document.get("spans")
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) == len(REKEYED_FIELDS) for row in rows
    ):
        raise DecodeError(record.ref, "rekeyed record's spans are not rows of fields")
    batch = SpanBatch()
    for index, name in enumerate(REKEYED_FIELDS):
        column = [row[index] for row in rows]
        expected = _FIELD_TYPES.get(name, (str,))
        if not all(type(value) in expected for value in column):
            raise DecodeError(record.ref, f"rekeyed field {name!r} has wrong types")
        getattr(batch, name).extend(column)
    _fill_other_columns(batch, record)
    return RekeyedRecord(batch, progress)


def _progress(document: dict[str, Any], record: KinesisRecord) -> SourceProgress:
    source, watermark = document.get("src"), document.get("wm")
    ended, expected = document.get("end"), document.get("expect")
    if (
        not isinstance(source, str)
        or type(watermark) is not int
        or type(ended) is not bool
        or not isinstance(expected, list)
        or not all(isinstance(shard, str) for shard in expected)
    ):
        raise DecodeError(record.ref, "rekeyed record's progress fields are invalid")
    return SourceProgress(source, watermark, ended, tuple(expected))


def _fill_other_columns(batch: SpanBatch, record: KinesisRecord) -> None:
    count = len(batch.span_id)
    ref = record.ref
    from_record = {
        "source_shard_id": ref.shard_id,
        "source_sequence_number": ref.sequence_number,
        "arrival_unix_millis": ref.arrival_unix_millis,
    }
    for name, kind in SPAN_COLUMNS.items():
        if name in REKEYED_FIELDS:
            continue
        column = getattr(batch, name)
        if kind == "map<string,string>":
            column.extend({} for _ in range(count))
        else:
            value = from_record.get(name, _NEUTRAL.get(name))
            column.extend([value] * count)


class KinesisForwarder:
    """Stage 1's forward sink: puts spans and progress on the trace stream.

    The span stream's open shards (for `SourceProgress.expected`) are listed
    once, at the first write, retried under ``retry``.
    """

    def __init__(
        self, kinesis_client: Any, settings: Settings, retry: RetryPolicy | None = None
    ) -> None:
        if not settings.trace_stream_name:
            raise ValueError("KinesisForwarder needs Settings.trace_stream_name")
        self._kinesis = kinesis_client
        self._retry = retry or RetryPolicy()
        self._span_stream_name = settings.stream_name
        self._stream_name = settings.trace_stream_name
        self._buckets = settings.trace_stream_buckets
        self._open_shards: tuple[str, ...] | None = None
        self.records_put = 0

    def write(
        self,
        batch: SpanBatch,
        source: str,
        watermark_millis: int,
        ended: bool = False,
    ) -> int:
        """Put every span of ``batch`` and the source's progress; return records put.

        Raises `spanstream.sinks.kinesis.PutRecordsError` (a `SinkError`) if
        some records could not be put, `SinkError` if the span stream's
        shards could not be listed.
        """
        progress = SourceProgress(
            source, watermark_millis, ended, self._expected_sources()
        )
        records = rekey_records(batch, progress, self._buckets)
        put = put_records(self._kinesis, self._stream_name, records)
        self.records_put += put
        return put

    def _expected_sources(self) -> tuple[str, ...]:
        if self._open_shards is None:
            shards = []
            kwargs: dict[str, Any] = {"StreamName": self._span_stream_name}
            while True:
                response = self._retry.call(
                    partial(self._kinesis.list_shards, **kwargs),
                    f"ListShards of {self._span_stream_name}",
                )
                shards += [
                    shard["ShardId"]
                    for shard in response["Shards"]
                    if "EndingSequenceNumber" not in shard["SequenceNumberRange"]
                ]
                token = response.get("NextToken")
                if not token:
                    break
                kwargs = {"NextToken": token}
            self._open_shards = tuple(sorted(shards))
        return self._open_shards
