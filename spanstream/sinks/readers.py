"""The read side of the sinks, for the demo, dashboards and tests.

Each reader returns typed rows (the aggregate keys of
`spanstream.aggregate.types` with their stats) decoded from the layout in
`spanstream.sinks.items`. Time ranges are half-open: ``start <= t < end``,
in unix seconds (or nanos for traces). Readers page through every result;
they are meant for one tenant's dashboard or a test, not for bulk export
(the Parquet archive is for that).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from spanstream.aggregate.types import (
    ColdStartKey,
    ColdStartStats,
    EdgeKey,
    LateKey,
    LatencyStats,
    RedKey,
    TraceSummary,
)
from spanstream.config import Settings
from spanstream.sinks import items
from spanstream.sinks.archive import ARCHIVE_SCHEMA
from spanstream.sinks.deadletter import list_dead_letters
from spanstream.sinks.keys import encode_component, join_key
from spanstream.sinks.summaries import latest_state, summaries_of

logger = logging.getLogger(__name__)


class MetricRow(NamedTuple):
    """A RED series in one window; ``hwm`` is shard -> last applied sequence
    of the item holding it (all series of its service and window)."""

    key: RedKey
    stats: LatencyStats
    hwm: dict[str, str]


class LateRow(NamedTuple):
    key: LateKey
    late_count: int


class EdgeRow(NamedTuple):
    key: EdgeKey
    stats: LatencyStats


class ColdStartRow(NamedTuple):
    key: ColdStartKey
    stats: ColdStartStats


def _metric_rows(item: items.Item) -> list[MetricRow]:
    marks = items.high_water_marks(item)
    series = items.metric_series(item)
    return [MetricRow(key, stats, marks) for key, stats in sorted(series.items())]


def _late_row(item: items.Item) -> LateRow:
    return LateRow(items.late_series(item), items.late_count(item))


def _edge_row(item: items.Item) -> EdgeRow:
    return EdgeRow(items.edge_series(item), items.latency_stats(item))


def _cold_start_row(item: items.Item) -> ColdStartRow:
    return ColdStartRow(items.cold_start_series(item), items.cold_start_stats(item))


def _pages(client: Any, operation: str, **kwargs: Any) -> Iterator[items.Item]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get("Items", ())


def _query_window(
    client: Any,
    table_name: str,
    pk: str,
    start: int | None,
    end: int | None,
    index: str | None = None,
    pk_name: str = "pk",
    sk_name: str = "sk",
    start_label: Callable[[int], str] = items.window_label,
) -> Iterator[items.Item]:
    condition = f"{pk_name} = :pk"
    values: dict[str, Any] = {":pk": items.s(pk)}
    # A sort key is "<time label>#..." and "<label>#" sorts after "<label>", so
    # BETWEEN label(start) AND label(end) selects start <= t < end.
    if start is not None:
        values[":lower"] = items.s(start_label(start))
    if end is not None:
        values[":upper"] = items.s(start_label(end))
    if start is not None and end is not None:
        condition += f" AND {sk_name} BETWEEN :lower AND :upper"
    elif start is not None:
        condition += f" AND {sk_name} >= :lower"
    elif end is not None:
        condition += f" AND {sk_name} < :upper"
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    if index is None:
        kwargs["ConsistentRead"] = True
    else:
        kwargs["IndexName"] = index
    yield from _pages(client, "query", **kwargs)


def read_metrics(
    dynamodb_client: Any,
    settings: Settings,
    tenant: str,
    service: str,
    start_secs: int | None = None,
    end_secs: int | None = None,
) -> list[MetricRow]:
    """Return the RED series of one service with window start in [start, end)."""
    found = _query_window(
        dynamodb_client,
        settings.table_name(items.METRICS),
        join_key(tenant, service),
        start_secs,
        end_secs,
    )
    return [
        row
        for item in found
        if not items.is_late_item(item)
        for row in _metric_rows(item)
    ]


def read_late(
    dynamodb_client: Any,
    settings: Settings,
    tenant: str,
    service: str,
    start_secs: int | None = None,
    end_secs: int | None = None,
) -> list[LateRow]:
    """Return the late-span counters of one service, by arrival window."""
    found = _query_window(
        dynamodb_client,
        settings.table_name(items.METRICS),
        join_key(tenant, service),
        start_secs,
        end_secs,
    )
    return [_late_row(item) for item in found if items.is_late_item(item)]


def scan_metrics(dynamodb_client: Any, settings: Settings) -> list[MetricRow]:
    """Return every RED series of every tenant (a full table scan)."""
    found = _pages(
        dynamodb_client, "scan", TableName=settings.table_name(items.METRICS)
    )
    return [
        row
        for item in found
        if not items.is_late_item(item)
        for row in _metric_rows(item)
    ]


def scan_late(dynamodb_client: Any, settings: Settings) -> list[LateRow]:
    """Return every late-span counter of every tenant (a full table scan)."""
    found = _pages(
        dynamodb_client, "scan", TableName=settings.table_name(items.METRICS)
    )
    return [_late_row(item) for item in found if items.is_late_item(item)]


def read_edges(
    dynamodb_client: Any,
    settings: Settings,
    tenant: str,
    start_secs: int | None = None,
    end_secs: int | None = None,
) -> list[EdgeRow]:
    """Return a tenant's service graph edges with window start in [start, end)."""
    found = _query_window(
        dynamodb_client,
        settings.table_name(items.EDGES),
        encode_component(tenant),
        start_secs,
        end_secs,
    )
    return [_edge_row(item) for item in found]


def scan_edges(dynamodb_client: Any, settings: Settings) -> list[EdgeRow]:
    """Return every edge of every tenant (a full table scan)."""
    found = _pages(dynamodb_client, "scan", TableName=settings.table_name(items.EDGES))
    return [_edge_row(item) for item in found]


def read_cold_starts(
    dynamodb_client: Any,
    settings: Settings,
    tenant: str,
    function: str,
    start_secs: int | None = None,
    end_secs: int | None = None,
) -> list[ColdStartRow]:
    """Return one function's cold start windows with start in [start, end)."""
    found = _query_window(
        dynamodb_client,
        settings.table_name(items.COLDSTARTS),
        join_key(tenant, function),
        start_secs,
        end_secs,
    )
    return [_cold_start_row(item) for item in found]


def scan_cold_starts(dynamodb_client: Any, settings: Settings) -> list[ColdStartRow]:
    """Return every cold start window of every tenant (a full table scan)."""
    found = _pages(
        dynamodb_client, "scan", TableName=settings.table_name(items.COLDSTARTS)
    )
    return [_cold_start_row(item) for item in found]


def read_trace(
    dynamodb_client: Any, settings: Settings, tenant: str, trace_id: str
) -> TraceSummary | None:
    """Return the summary of one trace, or None if none was written."""
    response = dynamodb_client.get_item(
        TableName=settings.table_name(items.TRACES),
        Key=items.trace_key(tenant, trace_id),
        ConsistentRead=True,
    )
    item = response.get("Item")
    return None if item is None else items.trace_summary(item)


def scan_traces(dynamodb_client: Any, settings: Settings) -> list[TraceSummary]:
    """Return every trace summary (a full table scan: for tests and small demos)."""
    found = _pages(
        dynamodb_client,
        "scan",
        TableName=settings.table_name(items.TRACES),
        ConsistentRead=True,
    )
    return [items.trace_summary(item) for item in found]


def query_traces_by_service(
    dynamodb_client: Any,
    settings: Settings,
    tenant: str,
    service: str,
    start_unix_nanos: int | None = None,
    end_unix_nanos: int | None = None,
) -> list[TraceSummary]:
    """Return traces whose root is ``service`` and start is in [start, end).

    Uses the ``by_service`` index, which is eventually consistent. Traces
    whose root span was not seen are under the service ``"unknown"``.
    """
    found = _query_window(
        dynamodb_client,
        settings.table_name(items.TRACES),
        items.service_key(tenant, service),
        start_unix_nanos,
        end_unix_nanos,
        index=items.TRACES_BY_SERVICE_INDEX,
        pk_name="service_key",
        sk_name="start_key",
        start_label=items.nanos_label,
    )
    return [items.trace_summary(item) for item in found]


def scan_trace_archive(
    s3_client: Any, settings: Settings, tenant: str | None = None
) -> list[TraceSummary]:
    """Return the latest state of every trace in the trace archive.

    Reads every object (of ``tenant``'s partition when given), keeps one
    summary per trace by `spanstream.sinks.summaries.latest_state` and
    returns them sorted by tenant, start and trace id. For tests and small
    demos; at scale the archive is queried with Athena (schemas/athena.sql).
    """
    prefix = settings.trace_archive_prefix
    if tenant is not None:
        prefix += f"tenant={encode_component(tenant)}/"
    found: list[TraceSummary] = []
    for table in _parquet_objects(s3_client, settings.bucket, prefix):
        found.extend(summaries_of(table))
    return latest_state(found)


def scan_summaries(
    settings: Settings, s3_client: Any, dynamodb_client: Any
) -> list[TraceSummary]:
    """Return every trace summary from the store ``settings`` writes them to."""
    if settings.trace_summary_store == "table":
        return scan_traces(dynamodb_client, settings)
    return scan_trace_archive(s3_client, settings)


def find_trace(
    settings: Settings,
    s3_client: Any,
    dynamodb_client: Any,
    tenant: str,
    trace_id: str,
) -> TraceSummary | None:
    """Return one trace's summary from the configured store, or None.

    On the table this is one GetItem; on the archive it reads the tenant's
    whole partition (a test and demo convenience: use Athena at scale).
    """
    if settings.trace_summary_store == "table":
        return read_trace(dynamodb_client, settings, tenant, trace_id)
    for summary in scan_trace_archive(s3_client, settings, tenant):
        if summary.trace_id == trace_id:
            return summary
    return None


def _parquet_objects(s3_client: Any, bucket: str, prefix: str) -> Iterator[pa.Table]:
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", ()):
            if not entry["Key"].endswith(".parquet"):
                continue
            body = s3_client.get_object(Bucket=bucket, Key=entry["Key"])
            yield pq.read_table(io.BytesIO(body["Body"].read()))


def read_archive(s3_client: Any, settings: Settings, prefix: str = "") -> pa.Table:
    """Return every archive object under ``archive_prefix + prefix`` as one table.

    Rows are in key order, then file order. The table has `ARCHIVE_SCHEMA`
    (partition values are in the keys, not added as columns).
    """
    tables = [ARCHIVE_SCHEMA.empty_table()]
    tables.extend(
        _parquet_objects(s3_client, settings.bucket, settings.archive_prefix + prefix)
    )
    return pa.concat_tables(tables)


def count_dead_letters(
    s3_client: Any,
    settings: Settings,
    stream: str | None = None,
    shard_id: str | None = None,
) -> int:
    """Return how many dead letters exist (of a stream, or of one shard)."""
    return sum(1 for _ in list_dead_letters(s3_client, settings, stream, shard_id))
