"""Names of any length from one tenant cannot block a shard's flush.

Tenant, service, operation, peer and function names are cut to
``max_attribute_value_chars`` (docs/enrichment.md, "Limits"), and a trace
summary lists only as many services as fit `MAX_SUMMARY_SERVICES_BYTES`, so
no DynamoDB item outgrows the 400 KB that DynamoDB (and moto) refuse. Without
that, a single 500,000-character operation name failed every flush of its
shard with a ValidationException, and the runtime retried it for ever.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from opentelemetry.proto.trace.v1 import trace_pb2
from otlpfactory import TRACE_ID, make_record, make_request, make_span

from spanstream.aggregate.nativetraces import make_trace_assembler
from spanstream.aggregate.traces import (
    MAX_SUMMARY_SERVICES_BYTES,
    bounded_services,
)
from spanstream.aggregate.types import (
    AggregateDelta,
    EdgeKey,
    FlushRange,
    LatencyStats,
    RedKey,
)
from spanstream.config import MAX_ATTRIBUTE_VALUE_CHARS_LIMIT, Settings
from spanstream.enrich.attributes import TRUNCATION_MARKER
from spanstream.errors import ConfigError
from spanstream.model import SpanBatch
from spanstream.pipeline import ShardProcessor, TraceStage
from spanstream.sinks import items, readers
from spanstream.sinks.dynamodb import AggregateWriter
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.retry import RetryPolicy

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "dynamodb"
HUGE_CHARS = 500_000
#: DynamoDB's item size limit is 400 KB; moto refuses items past 405,000 bytes.
DYNAMODB_ITEM_LIMIT_BYTES = 400_000
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
OTHER_TRACE_ID = bytes.fromhex("1f" * 16)


def cut(name: str, max_chars: int = Settings().max_attribute_value_chars) -> str:
    """What the decoders store for ``name``, spelt out independently."""
    return name if len(name) <= max_chars else name[:max_chars] + TRUNCATION_MARKER


def item_bytes(value: dict[str, Any]) -> int:
    """Return the size DynamoDB bills a typed attribute value at (an upper bound
    for numbers: DynamoDB stores about one byte per two digits)."""
    [(kind, plain)] = value.items()
    if kind == "S":
        return len(plain.encode("utf-8"))
    if kind == "N":
        return len(plain) + 1
    if kind == "B":
        return len(plain)
    if kind == "L":
        return 3 + sum(1 + item_bytes(element) for element in plain)
    if kind == "M":
        return 3 + sum(
            1 + len(key.encode("utf-8")) + item_bytes(element)
            for key, element in plain.items()
        )
    raise AssertionError(f"unexpected attribute type {kind!r}")


def size_of(item: dict[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + item_bytes(v) for name, v in item.items())


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """Return (s3, dynamodb) clients of moto, with the bucket and the tables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=Settings().bucket)
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        for path in sorted(SCHEMAS.glob("*.json")):
            table = json.loads(path.read_text())
            table["TableName"] = Settings().table_name(table["TableName"])
            dynamodb.create_table(**table)
        yield s3, dynamodb


def hostile_record_bytes() -> bytes:
    """One gzip record: a 500,000-character tenant, service, function name,
    operation (a SERVER root) and peer name (its CLIENT child)."""
    spans = [
        make_span(name="o" * HUGE_CHARS, kind=SERVER, span_id=b"\x01" * 8),
        make_span(
            name="call",
            kind=CLIENT,
            span_id=b"\x02" * 8,
            parent_span_id=b"\x01" * 8,
            attributes={"peer.service": "p" * HUGE_CHARS},
        ),
    ]
    resource = {
        "tenant.id": "t" * HUGE_CHARS,
        "service.name": "s" * HUGE_CHARS,
        "faas.name": "f" * HUGE_CHARS,
    }
    return gzip.compress(make_request(spans, resource).SerializeToString())


def acme_record_bytes() -> bytes:
    spans = [
        make_span(name="GET /cart", trace_id=OTHER_TRACE_ID, span_id=bytes([i]) * 8)
        for i in range(1, 4)
    ]
    resource = {"tenant.id": "acme", "service.name": "checkout"}
    return make_request(spans, resource).SerializeToString()


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_huge_names_are_cut_and_the_shard_flushes(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    # GIVEN a record with 500,000-character names, then another tenant's record
    monkeypatch.setenv("SPANSTREAM_DECODER", decoder)
    s3, dynamodb = aws
    settings = Settings()
    sinks = make_sinks(settings, s3, dynamodb)
    stage = TraceStage(settings, sinks.aggregates, "trace-stage", clock=lambda: 0.0)
    processor = ShardProcessor(settings, "spans", "shard-0", sinks, router=stage)
    records = [
        make_record(hostile_record_bytes(), sequence_number="10"),
        make_record(acme_record_bytes(), sequence_number="11"),
    ]

    # WHEN both are processed and flushed, with the trace stage's output
    assert processor.process(records) == 5
    result = processor.flush()
    assert stage.flush(everything=True) == 2

    # THEN nothing failed, and the hostile names are stored cut and marked
    assert result.checkpoint_sequence_number == "11"
    tenant, service = cut("t" * HUGE_CHARS), cut("s" * HUGE_CHARS)
    assert len(tenant) == settings.max_attribute_value_chars + len(TRUNCATION_MARKER)
    metrics = {
        row.key[:3]: row.stats.count for row in readers.scan_metrics(dynamodb, settings)
    }
    assert metrics == {
        (tenant, service, cut("o" * HUGE_CHARS)): 1,
        (tenant, service, "call"): 1,
        ("acme", "checkout", "GET /cart"): 3,
    }
    [edge] = readers.scan_edges(dynamodb, settings)
    assert edge.key[:4] == (tenant, service, cut("p" * HUGE_CHARS), "peer")
    [cold_start] = readers.scan_cold_starts(dynamodb, settings)
    assert cold_start.key[:2] == (tenant, cut("f" * HUGE_CHARS))
    summaries = {s.tenant: s for s in readers.scan_summaries(settings, s3, dynamodb)}
    assert (summaries[tenant].root_service, summaries[tenant].services) == (
        service,
        [service],
    )
    assert summaries[tenant].root_operation == cut("o" * HUGE_CHARS)
    assert summaries["acme"].span_count == 3
    archive = readers.read_archive(s3, settings)
    assert sorted(set(archive.column("tenant").to_pylist())) == ["acme", tenant]
    assert cut("o" * HUGE_CHARS) in archive.column("span_name").to_pylist()
    # tenant, service and function name; operation and span name; peer name
    assert processor.decode_stats.truncated_names == 6


def spans_of_many_long_services(count: int, max_chars: int) -> SpanBatch:
    """A trace whose every span has its own service, ``max_chars`` characters
    (a 4-digit number, then 4-byte ones) cut and marked; its tenant and
    operations are ``max_chars`` 4-byte characters, cut and marked."""
    batch = SpanBatch()
    longest = "\U0001f642" * max_chars + TRUNCATION_MARKER
    for index in range(count):
        span_id = (index + 1).to_bytes(8, "big").hex()
        batch.tenant.append(longest)
        batch.trace_id.append(TRACE_ID.hex())
        batch.span_id.append(span_id)
        batch.parent_span_id.append(None if index == 0 else "00" * 7 + "01")
        batch.service.append(f"{index:04d}" + longest[4:])
        batch.operation.append(longest)
        batch.span_kind.append("INTERNAL")
        batch.start_unix_nanos.append(1_700_000_000_000_000_000)
        batch.end_unix_nanos.append(1_700_000_000_000_000_000 + 1_000)
        batch.duration_nanos.append(1_000)
        batch.is_error.append(False)
        batch.is_cold_start.append(False)
        batch.db_system.append(None)
        batch.messaging_system.append(None)
        batch.peer_service.append(None)
    return batch


@pytest.mark.parametrize(
    "max_chars", [Settings().max_attribute_value_chars, MAX_ATTRIBUTE_VALUE_CHARS_LIMIT]
)
def test_a_summary_of_many_long_services_fits_one_item(
    aws: tuple[Any, Any], max_chars: int, trace_implementation: str
) -> None:
    # GIVEN a trace of 200 distinct services, every name as long as allowed
    _, dynamodb = aws
    settings = Settings()
    assembler = make_trace_assembler(settings, lambda: 0.0, trace_implementation)
    assembler.add(spans_of_many_long_services(200, max_chars))

    # WHEN it is summarised
    [summary] = assembler.flush_all().summaries

    # THEN it lists the first services (in name order) that fit the budget,
    # counts the others, and its item is within DynamoDB's limit
    name_bytes = 4 * (max_chars - 4) + 4 + len(TRUNCATION_MARKER)
    kept = MAX_SUMMARY_SERVICES_BYTES // (name_bytes + 1)
    assert 0 < kept < 200
    assert summary.services == sorted(summary.services)
    assert [name[:4] for name in summary.services] == [
        f"{index:04d}" for index in range(kept)
    ]
    assert summary.services_omitted == 200 - kept
    item = items.trace_item(summary, expires_at_secs=2_000_000_000)
    assert size_of(item) < DYNAMODB_ITEM_LIMIT_BYTES
    writer = AggregateWriter(
        dynamodb, settings, retry=RetryPolicy(deadline_secs=5.0, sleep=lambda _: None)
    )
    writer.write_summaries([summary])
    [stored] = readers.scan_traces(dynamodb, settings)
    assert stored == summary


def test_series_items_of_the_longest_names_fit_one_item(
    aws: tuple[Any, Any],
) -> None:
    # GIVEN two RED series of one service, and an edge, whose names are as long as the
    # highest setting allows, in 4-byte characters, with a sketch of every
    # bucket from 1 ns to 2^63 ns, applied from 50 shards
    _, dynamodb = aws
    settings = Settings()
    name = "\U0001f642" * MAX_ATTRIBUTE_VALUE_CHARS_LIMIT + TRUNCATION_MARKER
    other = "\U0001f643" * MAX_ATTRIBUTE_VALUE_CHARS_LIMIT + TRUNCATION_MARKER
    stats = LatencyStats()
    stats.add_many([int(1.01**power) for power in range(4_380)], 0)
    window = 1_700_000_000
    deltas = [
        AggregateDelta(
            FlushRange("spans", f"shardId-{shard:012d}", "1" * 56, "2" * 56),
            metrics={
                RedKey(name, name, operation, "SERVER", "2xx", window): stats
                for operation in (name, other)
            },
            edges={EdgeKey(name, name, name, "rpc", window): stats},
        )
        for shard in range(50)
    ]
    writer = AggregateWriter(
        dynamodb, settings, retry=RetryPolicy(deadline_secs=5.0, sleep=lambda _: None)
    )

    # WHEN they are written
    writer.write(deltas)

    # THEN each item holds them all and stays below DynamoDB's limit
    for table in (items.METRICS, items.EDGES):
        [item] = dynamodb.scan(TableName=settings.table_name(table))["Items"]
        per_series = (
            [entry["M"] for entry in item["series"]["M"].values()]
            if table == items.METRICS
            else [item]
        )
        spans = sum(int(values["count"]["N"]) for values in per_series)
        assert spans == (100 if table == items.METRICS else 50) * stats.count
        assert len(stats.sketch.bins) > 2_000
        assert size_of(item) < DYNAMODB_ITEM_LIMIT_BYTES


def test_ordinary_traces_keep_every_service() -> None:
    services = [f"service-{index}" for index in range(2_000)] * 2
    kept, omitted = bounded_services(services)
    assert (kept, omitted) == (sorted(set(services)), 0)


def test_the_services_budget_keeps_a_prefix_in_name_order() -> None:
    # 3 names of 40,000 bytes (+1 each) fit 128 KiB; a fourth would not
    names = [letter * 40_000 for letter in "dcbae"]
    assert bounded_services(names) == (["a" * 40_000, "b" * 40_000, "c" * 40_000], 2)


def test_value_limits_past_what_an_item_holds_are_refused() -> None:
    variable = "SPANSTREAM_MAX_ATTRIBUTE_VALUE_CHARS"
    limit = MAX_ATTRIBUTE_VALUE_CHARS_LIMIT
    assert Settings.from_env({variable: str(limit)}).max_attribute_value_chars == limit
    with pytest.raises(ConfigError, match=f"{variable} must be <= {limit}.*16385"):
        Settings.from_env({variable: str(limit + 1)})
