"""The Parquet archive: deterministic keys, readable files, the schema contract."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.model import SPAN_COLUMNS, SpanBatch
from spanstream.sinks.archive import (
    ARCHIVE_SCHEMA,
    STATISTICS_COLUMNS,
    UNIQUE_VALUED_COLUMNS,
    ArchiveWriter,
    encode_parquet,
    schema_document,
)
from spanstream.sinks.readers import read_archive
from spanstream.sinks.retry import RetryPolicy

REPO = Path(__file__).resolve().parents[2]
HOUR_NANOS = 3_600 * 1_000_000_000
# 2024-05-01T10:00:00Z
T0_NANOS = 1_714_557_600 * 1_000_000_000
RANGE = FlushRange("spans", "shardId-000000000001", "100", "200")


def make_batch(rows: list[tuple[str, int]]) -> SpanBatch:
    """Return a batch with one span per (tenant, start nanos)."""
    batch = SpanBatch()
    for index, (tenant, start) in enumerate(rows):
        batch.extend(_one_span(tenant, start, index))
    return batch


def _one_span(tenant: str, start: int, index: int) -> SpanBatch:
    values: dict[str, Any] = {
        "tenant": tenant,
        "trace_id": f"{index:032x}",
        "span_id": f"{index:016x}",
        "parent_span_id": None if index % 2 else f"{index + 1:016x}",
        "service": "checkout",
        "operation": "GET /cart",
        "span_name": "GET /cart",
        "span_kind": "SERVER",
        "start_unix_nanos": start,
        "end_unix_nanos": start + 1_000 + index,
        "duration_nanos": 1_000 + index,
        "status_code": "ERROR" if index % 3 == 0 else "OK",
        "status_message": None,
        "is_error": index % 3 == 0,
        "http_method": "GET",
        "http_route": "/cart",
        "http_status_code": 500 if index % 3 == 0 else 200,
        "peer_service": None,
        "db_system": None,
        "messaging_system": None,
        "cloud_region": "eu-west-1",
        "cloud_account_id": None,
        "faas_name": None,
        "is_cold_start": False,
        "event_count": index,
        "resource_attributes": {"service.name": "checkout", "tenant.id": tenant},
        "span_attributes": {} if index % 2 else {"http.route": "/cart"},
        "scope_name": None,
        "source_shard_id": RANGE.shard_id,
        "source_sequence_number": str(100 + index),
        "source_sub_sequence_number": 0,
        "arrival_unix_millis": start // 1_000_000 + 5,
    }
    assert set(values) == set(SPAN_COLUMNS)
    batch = SpanBatch()
    for name, value in values.items():
        getattr(batch, name).append(value)
    return batch


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket="archive-bucket", archive_prefix="archive/")


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


def test_groups_by_tenant_and_hour_with_deterministic_keys(
    s3: Any, settings: Settings
) -> None:
    batch = make_batch(
        [
            ("acme", T0_NANOS + 1),
            ("acme", T0_NANOS + HOUR_NANOS - 1),
            ("acme", T0_NANOS + HOUR_NANOS),
            ("globex", T0_NANOS + 5),
        ]
    )
    keys = ArchiveWriter(s3, settings).write(batch, RANGE)

    stem = "shardId-000000000001-100-200.parquet"
    assert keys == [
        f"archive/tenant=acme/dt=2024-05-01/hour=10/{stem}",
        f"archive/tenant=acme/dt=2024-05-01/hour=11/{stem}",
        f"archive/tenant=globex/dt=2024-05-01/hour=10/{stem}",
    ]
    assert all_keys(s3, settings.bucket) == sorted(keys)
    head = s3.head_object(Bucket=settings.bucket, Key=keys[0])
    assert head["ServerSideEncryption"] == "AES256"


def test_writing_the_same_records_again_replaces_the_objects(
    s3: Any, settings: Settings
) -> None:
    batch = make_batch([("acme", T0_NANOS), ("acme", T0_NANOS + HOUR_NANOS)])
    writer = ArchiveWriter(s3, settings)
    first = writer.write(batch, RANGE)
    second = writer.write(batch, RANGE)

    assert first == second
    assert all_keys(s3, settings.bucket) == sorted(first)
    assert read_archive(s3, settings).num_rows == len(batch)


def test_parquet_round_trips_with_the_archive_schema(
    s3: Any, settings: Settings
) -> None:
    batch = make_batch([("acme", T0_NANOS + i) for i in range(5)])
    ArchiveWriter(s3, settings).write(batch, RANGE)

    table = read_archive(s3, settings)
    assert table.schema.equals(ARCHIVE_SCHEMA)
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        expected = batch.row(index)
        for name in ("resource_attributes", "span_attributes"):
            assert dict(row[name]) == expected[name]
            row[name] = expected[name]
        assert row == expected


def test_files_are_zstd_compressed() -> None:
    data = encode_parquet(make_batch([("acme", T0_NANOS)]))
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_ids_and_times_are_written_plain_and_the_rest_with_dictionaries() -> None:
    data = encode_parquet(make_batch([("acme", T0_NANOS + i) for i in range(50)]))
    row_group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    dictionary_encoded = {
        column.path_in_schema: any("DICTIONARY" in e for e in column.encodings)
        for column in map(row_group.column, range(row_group.num_columns))
    }

    plain = {path for path, dictionary in dictionary_encoded.items() if not dictionary}
    # booleans have no dictionary encoding
    assert plain == UNIQUE_VALUED_COLUMNS | {"is_error", "is_cold_start"}
    assert dictionary_encoded["span_attributes.key_value.key"]
    assert dictionary_encoded["service"]


def test_only_the_filter_columns_carry_min_max_statistics() -> None:
    starts = [T0_NANOS + i * 7 for i in range(50)]
    data = encode_parquet(make_batch([("acme", start) for start in starts]))
    row_group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    columns = {
        column.path_in_schema: column
        for column in map(row_group.column, range(row_group.num_columns))
    }

    with_statistics = {path for path, column in columns.items() if column.is_stats_set}
    assert with_statistics == set(STATISTICS_COLUMNS)
    start_statistics = columns["start_unix_nanos"].statistics
    assert (start_statistics.min, start_statistics.max) == (min(starts), max(starts))
    assert columns["is_error"].statistics.null_count == 0


def test_hive_partitions_are_readable_by_pyarrow_dataset(
    s3: Any, settings: Settings, tmp_path: Path
) -> None:
    batch = make_batch([("acme", T0_NANOS), ("globex", T0_NANOS + HOUR_NANOS)])
    for key in ArchiveWriter(s3, settings).write(batch, RANGE):
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read())

    dataset = ds.dataset(
        tmp_path / "archive",
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([("dt", pa.string()), ("hour", pa.int32())]), flavor="hive"
        ),
    )
    table = dataset.to_table(filter=ds.field("hour") == 11)
    assert table.column("tenant").to_pylist() == ["globex"]
    assert table.column("dt").to_pylist() == ["2024-05-01"]


def test_hostile_tenant_stays_inside_its_prefix(s3: Any, settings: Settings) -> None:
    hostile = "../../dead-letters/x#/.."
    batch = make_batch([(hostile, T0_NANOS), ("acme", T0_NANOS)])
    keys = ArchiveWriter(s3, settings).write(batch, RANGE)

    for key in keys:
        segments = key.split("/")
        assert segments[0] == "archive"
        assert segments[1].startswith("tenant=")
        assert ".." not in segments and len(segments) == 5
    hostile_table = read_archive(s3, settings, "tenant=%2E%2E")
    assert hostile_table.column("tenant").to_pylist() == [hostile]
    assert read_archive(s3, settings, "tenant=acme/").num_rows == 1


def test_failed_upload_raises_sink_error_after_the_others(
    settings: Settings,
) -> None:
    class FailingS3:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def put_object(self, **kwargs: Any) -> dict[str, Any]:
            if "hour=11" in kwargs["Key"]:
                raise ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject")
            self.keys.append(kwargs["Key"])
            return {}

    failing = FailingS3()
    batch = make_batch([("acme", T0_NANOS), ("acme", T0_NANOS + HOUR_NANOS)])
    writer = ArchiveWriter(failing, settings, RetryPolicy(sleep=lambda _: None))
    with pytest.raises(SinkError, match="AccessDenied"):
        writer.write(batch, RANGE)
    assert len(failing.keys) == 1


def test_empty_batch_writes_nothing(s3: Any, settings: Settings) -> None:
    assert ArchiveWriter(s3, settings).write(SpanBatch(), RANGE) == []
    assert all_keys(s3, settings.bucket) == []


def test_archive_json_agrees_with_span_columns() -> None:
    document = json.loads((REPO / "schemas" / "archive.json").read_text())
    assert document == schema_document()
    assert [(c["name"], c["type"]) for c in document["columns"]] == list(
        SPAN_COLUMNS.items()
    )


def test_athena_ddl_declares_every_data_column() -> None:
    statements = (REPO / "schemas" / "athena.sql").read_text().split(";")
    [ddl] = [text for text in statements if "spanstream_spans (" in text]
    athena_types = {
        "string": "string",
        "int32": "int",
        "int64": "bigint",
        "bool": "boolean",
        "map<string,string>": "map<string,string>",
    }
    declared = dict(re.findall(r"^  `(\w+)` (\S+?),?$", ddl, re.MULTILINE))
    partitions = {p["name"]: p["type"] for p in schema_document()["partition_keys"]}
    expected = {
        name: athena_types[kind]
        for name, kind in SPAN_COLUMNS.items()
        if name not in partitions  # Athena refuses a column named like a partition
    }
    assert declared == {**expected, **partitions}
    assert "STORED AS PARQUET" in ddl
    assert "'projection.enabled' = 'true'" in ddl
