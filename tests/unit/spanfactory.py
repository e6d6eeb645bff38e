"""Build `SpanBatch` rows for tests from dicts that name only what matters.

``make_batch([{"service": "cart", "duration_nanos": 5_000}])`` fills every
other column with a plain default: a span of tenant ``t1``, kind SERVER,
status UNSET, 1 ms long, ending at `BASE_END_UNIX_NANOS`, with a fresh
span id. Timing columns are kept consistent: give any two of start, end and
duration and the third follows.
"""

from __future__ import annotations

import itertools
from typing import Any

from spanstream.model import SPAN_COLUMNS, SpanBatch

#: 2023-11-14T22:13:00Z, the start of a 60 s window.
BASE_END_UNIX_NANOS = 1_699_999_980 * 1_000_000_000
DEFAULT_DURATION_NANOS = 1_000_000

_span_numbers = itertools.count(1)

_DEFAULTS: dict[str, Any] = {
    "tenant": "t1",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "parent_span_id": None,
    "service": "svc",
    "operation": "op",
    "span_kind": "SERVER",
    "status_code": "UNSET",
    "status_message": None,
    "http_method": None,
    "http_route": None,
    "http_status_code": None,
    "peer_service": None,
    "db_system": None,
    "messaging_system": None,
    "cloud_region": None,
    "cloud_account_id": None,
    "faas_name": None,
    "is_cold_start": False,
    "event_count": 0,
    "scope_name": None,
    "source_shard_id": "shardId-000000000000",
    "source_sequence_number": "1",
    "source_sub_sequence_number": 0,
    "arrival_unix_millis": 0,
}


def make_row(**values: Any) -> dict[str, Any]:
    """Return one complete row: ``values`` over the defaults.

    Raises KeyError for a name that is not a `SpanBatch` column.
    """
    unknown = set(values) - set(SPAN_COLUMNS)
    if unknown:
        raise KeyError(f"not SpanBatch columns: {sorted(unknown)}")
    row = dict(_DEFAULTS)
    row["span_id"] = f"{next(_span_numbers):016x}"
    row["resource_attributes"] = {}
    row["span_attributes"] = {}
    row.update(values)
    row.setdefault("span_name", row["operation"])
    row.setdefault("is_error", row["status_code"] == "ERROR")
    _fill_timing(row)
    return row


def make_batch(rows: list[dict[str, Any]]) -> SpanBatch:
    """Return a batch of ``rows``, each completed by `make_row`."""
    batch = SpanBatch()
    for values in rows:
        row = make_row(**values)
        for name in SPAN_COLUMNS:
            getattr(batch, name).append(row[name])
    return batch


def _fill_timing(row: dict[str, Any]) -> None:
    start = row.get("start_unix_nanos")
    end = row.get("end_unix_nanos")
    duration = row.get("duration_nanos")
    if duration is None:
        duration = end - start if start is not None and end is not None else None
        duration = DEFAULT_DURATION_NANOS if duration is None else duration
    if end is None:
        end = BASE_END_UNIX_NANOS if start is None else start + duration
    if start is None:
        start = end - duration
    row.update(start_unix_nanos=start, end_unix_nanos=end, duration_nanos=duration)


_OTLP_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_OTLP_STATUSES = ("UNSET", "OK", "ERROR")
_DATABASES = frozenset(("mongodb", "redis", "mysql", "postgresql"))


def robot_shop_rows(csv_path: str, tenant: str = "robot-shop") -> list[dict[str, Any]]:
    """Return the spans of the robot-shop capture (``traces.csv``) as rows.

    The capture's ``net_peer_name`` becomes ``db_system`` for a database
    peer and ``peer_service`` otherwise; an HTTP status of 0 means none.
    Records are taken to arrive 2 s after the span ended.
    """
    import csv  # noqa: PLC0415 - only this helper needs it

    rows = []
    with open(csv_path, newline="") as csv_file:
        for record in csv.DictReader(csv_file):
            peer = record["net_peer_name"] or None
            http_status = int(record["http_status_code"] or 0) or None
            status = _OTLP_STATUSES[int(record["span_status"])]
            end_nanos = int(record["end_time_ns"])
            rows.append(
                {
                    "tenant": tenant,
                    "trace_id": record["trace_id"],
                    "span_id": record["span_id"],
                    "parent_span_id": record["parent_span_id"] or None,
                    "service": record["service_name"],
                    "operation": record["span_name"],
                    "span_kind": _OTLP_KINDS[int(record["span_kind"])],
                    "start_unix_nanos": int(record["start_time_ns"]),
                    "end_unix_nanos": end_nanos,
                    "duration_nanos": end_nanos - int(record["start_time_ns"]),
                    "status_code": status,
                    "is_error": status == "ERROR"
                    or (http_status is not None and http_status >= 500),
                    "http_method": record["http_method"] or None,
                    "http_status_code": http_status,
                    "db_system": peer if peer in _DATABASES else None,
                    "peer_service": None if peer in _DATABASES else peer,
                    "arrival_unix_millis": end_nanos // 1_000_000 + 2_000,
                }
            )
    return rows
