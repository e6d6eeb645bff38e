"""The trace summary archive: keys, round trip, idempotence, latest state."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spanstream.aggregate.types import TraceSummary
from spanstream.config import Settings
from spanstream.errors import ConfigError
from spanstream.sinks import readers
from spanstream.sinks.dynamodb import AggregateWriter
from spanstream.sinks.factory import make_aggregates
from spanstream.sinks.summaries import (
    SUMMARY_SCHEMA,
    SummaryArchiveWriter,
    latest_state,
    schema_document,
)

REPO = Path(__file__).resolve().parents[2]
T0_NANOS = 1_714_557_600 * 1_000_000_000  # 2024-05-01T10:00:00Z
HOUR_NANOS = 3_600 * 1_000_000_000


def summary(
    trace: int, tenant: str = "acme", start: int = T0_NANOS, spans: int = 3, **more: Any
) -> TraceSummary:
    values: dict[str, Any] = {
        "tenant": tenant,
        "trace_id": f"{trace:032x}",
        "root_service": "frontend",
        "root_operation": "GET /",
        "start_unix_nanos": start,
        "end_unix_nanos": start + 1_000 * spans,
        "span_count": spans,
        "error_count": 0,
        "services": ["backend", "frontend"],
        "cold_start_count": 0,
    }
    values.update(more)
    return TraceSummary(**values)


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket="archive-bucket")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=settings.bucket)
        yield client


def all_keys(s3: Any, bucket: str) -> list[str]:
    response = s3.list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in response.get("Contents", ()))


def test_one_object_per_tenant_and_hour_of_the_trace_start(
    s3: Any, settings: Settings
) -> None:
    keys = SummaryArchiveWriter(s3, settings).write_summaries(
        [
            summary(1),
            summary(2, start=T0_NANOS + HOUR_NANOS),
            summary(3, tenant="../globex"),
            summary(4, start=T0_NANOS + 5),
        ]
    )
    pattern = r"traces/tenant=([^/]+)/dt=2024-05-01/hour=(\d\d)/[0-9a-f]{32}\.parquet"
    assert [re.fullmatch(pattern, key).groups() for key in keys] == [  # type: ignore[union-attr]
        ("%2E%2E%2Fglobex", "10"),
        ("acme", "10"),
        ("acme", "11"),
    ]
    assert all_keys(s3, settings.bucket) == sorted(keys)
    head = s3.head_object(Bucket=settings.bucket, Key=keys[0])
    assert head["ServerSideEncryption"] == "AES256"


def test_round_trip_through_the_reader(s3: Any, settings: Settings) -> None:
    written = [
        summary(1, services_omitted=2, error_count=1, cold_start_count=1),
        summary(2, root_service=None, root_operation=None, services=[]),
        summary(3, tenant="tenant=victim", services=["a/b", "\u00e9t\u00e9"]),
    ]
    SummaryArchiveWriter(s3, settings).write_summaries(written)
    assert readers.scan_trace_archive(s3, settings) == latest_state(written)
    assert readers.scan_trace_archive(s3, settings, "tenant=victim") == [written[2]]
    assert readers.find_trace(settings, s3, None, "acme", f"{2:032x}") == written[1]
    assert readers.find_trace(settings, s3, None, "other", f"{2:032x}") is None


def test_writing_the_same_summaries_again_replaces_the_object(
    s3: Any, settings: Settings
) -> None:
    writer = SummaryArchiveWriter(s3, settings)
    first = writer.write_summaries([summary(2), summary(1)])
    second = writer.write_summaries([summary(1), summary(2)])
    assert first == second
    assert all_keys(s3, settings.bucket) == first
    changed = writer.write_summaries([summary(1, spans=4), summary(2)])
    assert changed != first
    assert len(all_keys(s3, settings.bucket)) == 2


def test_reader_keeps_the_latest_state_of_a_trace_written_twice(
    s3: Any, settings: Settings
) -> None:
    writer = SummaryArchiveWriter(s3, settings)
    late = summary(1, spans=5)
    writer.write_summaries([summary(1, spans=3), summary(2)])
    writer.write_summaries([late])
    assert readers.scan_trace_archive(s3, settings) == [late, summary(2)]


def test_latest_state_does_not_depend_on_order() -> None:
    rows = [
        summary(1, spans=3),
        summary(1, spans=5),
        summary(1, spans=5, end_unix_nanos=T0_NANOS + 99_999),
        summary(1, spans=5, error_count=1, end_unix_nanos=T0_NANOS + 99_999),
        summary(1, tenant="globex", spans=1),
    ]
    chosen = latest_state(rows)
    assert latest_state(reversed(rows)) == chosen
    assert chosen == [rows[3], rows[4]]


def test_of_two_summaries_of_one_trace_in_one_call_the_later_wins(
    s3: Any, settings: Settings
) -> None:
    SummaryArchiveWriter(s3, settings).write_summaries(
        [summary(1, spans=9), summary(1, spans=2)]
    )
    [stored] = readers.scan_trace_archive(s3, settings)
    assert stored.span_count == 2


def test_nothing_to_write_writes_nothing(s3: Any, settings: Settings) -> None:
    assert SummaryArchiveWriter(s3, settings).write_summaries([]) == []
    assert all_keys(s3, settings.bucket) == []


def test_factory_routes_summaries_to_the_configured_store(settings: Settings) -> None:
    archive = make_aggregates(settings, object(), object())
    assert isinstance(archive.summaries, SummaryArchiveWriter)
    table = make_aggregates(
        replace(settings, trace_summary_store="table"), object(), object()
    )
    assert table.summaries is table.table
    assert isinstance(table.table, AggregateWriter)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPANSTREAM_TRACE_SUMMARY_STORE", "dynamo"),
        ("SPANSTREAM_TRACE_ARCHIVE_PREFIX", "archive/"),
        ("SPANSTREAM_TRACE_ARCHIVE_PREFIX", "archive/traces/"),
        ("SPANSTREAM_TRACE_ARCHIVE_PREFIX", ""),
    ],
)
def test_bad_store_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_trace_archive_json_agrees_with_the_schema() -> None:
    document = json.loads((REPO / "schemas" / "trace-archive.json").read_text())
    assert document == schema_document()
    assert [c["name"] for c in document["columns"]] == SUMMARY_SCHEMA.names


def test_athena_ddl_declares_every_summary_column() -> None:
    statements = (REPO / "schemas" / "athena.sql").read_text().split(";")
    [ddl] = [text for text in statements if "spanstream_trace_summaries (" in text]
    declared = dict(re.findall(r"^  `(\w+)` (\S+?),?$", ddl, re.MULTILINE))
    athena = {
        "string": "string",
        "int64": "bigint",
        "list<item: string>": "array<string>",
    }
    expected = {
        f.name: athena[str(f.type)] for f in SUMMARY_SCHEMA if f.name != "tenant"
    }
    assert declared == {**expected, "tenant": "string", "dt": "string", "hour": "int"}
