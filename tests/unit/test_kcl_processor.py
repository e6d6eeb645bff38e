"""The KCL record processor, driven as the MultiLangDaemon drives it.

GIVEN a `SpanstreamRecordProcessor` on moto (S3, DynamoDB) and the kclpy
callbacks' inputs as plain objects; WHEN the daemon initializes it, hands it
records, ends the shard, loses the lease or lets another process claim the
shard; THEN it checkpoints only what is durable, at the right positions, and
stops or exits as `consumers.kcl.processor` documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from amazon_kclpy.checkpoint_error import CheckpointError
from moto import mock_aws
from otlpfactory import make_request, make_span

from consumers.kcl.processor import FENCE_GRACE_SECS, SpanstreamRecordProcessor
from spanstream.config import Settings
from spanstream.flushlog import ShardFlushLog
from spanstream.sinks import readers

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "dynamodb"
SHARD = "shardId-000000000000"
#: Arrival inside the spans' window (1_700_000_000 s): nothing is late.
ARRIVAL_UNIX_MILLIS = 1_700_000_001_000


@pytest.fixture
def settings() -> Settings:
    return Settings(
        stream_name="spans",
        table_prefix="kcl-test-",
        bucket="kcl-test",
        flush_interval_secs=0.0,
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        for path in sorted(SCHEMAS.glob("*.json")):
            table = json.loads(path.read_text())
            table["TableName"] = settings.table_name(table["TableName"])
            dynamodb.create_table(**table)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="kcl-test")
        yield


def clients(name: str, _settings: Settings) -> Any:
    return boto3.client(name, region_name="us-east-1")  # type: ignore[call-overload]


@dataclass
class Checkpointer:
    """Records checkpoints; raises the KCL error it is told to."""

    calls: list[tuple[str | None, int | None]] = field(default_factory=list)
    error: str | None = None

    def checkpoint(self, sequence_number: str | None, sub: int | None) -> None:
        if self.error is not None:
            raise CheckpointError(self.error)
        self.calls.append((sequence_number, sub))


def kcl_record(number: int, span_count: int = 3) -> SimpleNamespace:
    spans = [
        make_span(span_id=bytes([number, index]) * 4) for index in range(span_count)
    ]
    return SimpleNamespace(
        binary_data=make_request(spans).SerializeToString(),
        sequence_number=str(49_000_000_000_000_000_000 + number),
        sub_sequence_number=0,
        partition_key=f"key-{number}",
        timestamp_millis=ARRIVAL_UNIX_MILLIS,
    )


class Clock:
    def __init__(self) -> None:
        self.now_secs = 1000.0

    def __call__(self) -> float:
        return self.now_secs


def started(
    settings: Settings, stage: str = "spans", clock: Clock | None = None
) -> SpanstreamRecordProcessor:
    processor = SpanstreamRecordProcessor(
        settings, stage, clients, monotonic_clock=clock or Clock()
    )
    processor.initialize(
        SimpleNamespace(shard_id=SHARD, sequence_number=None, sub_sequence_number=None)
    )
    return processor


def process(
    processor: SpanstreamRecordProcessor, records: list[Any], checkpointer: Any
) -> None:
    processor.process_records(
        SimpleNamespace(
            records=records, checkpointer=checkpointer, millis_behind_latest=0
        )
    )


def test_records_are_checkpointed_once_their_effects_are_durable(
    aws: None, settings: Settings
) -> None:
    # GIVEN a processor holding a new lease
    processor = started(settings)
    checkpointer = Checkpointer()
    # WHEN two batches arrive (the flush interval is 0: each one flushes)
    process(processor, [kcl_record(1), kcl_record(2)], checkpointer)
    process(processor, [kcl_record(3)], checkpointer)
    # THEN each batch was checkpointed at its last record, after its spans
    # were archived and counted
    assert checkpointer.calls == [
        (kcl_record(2).sequence_number, 0),
        (kcl_record(3).sequence_number, 0),
    ]
    dynamodb = clients("dynamodb", settings)
    s3 = clients("s3", settings)
    assert readers.read_archive(s3, settings).num_rows == 9
    assert sum(row.stats.count for row in readers.scan_metrics(dynamodb, settings))
    # AND nothing is left recorded as pending in the shard's flush log
    flush_log = ShardFlushLog(dynamodb, settings, "spans", SHARD)
    assert flush_log.claim() == []


def test_shard_end_flushes_and_checkpoints_the_end(
    aws: None, settings: Settings
) -> None:
    # GIVEN a flush that is not due yet
    processor = started(replace(settings, flush_interval_secs=3600.0))
    checkpointer = Checkpointer()
    process(processor, [kcl_record(1)], checkpointer)
    assert checkpointer.calls == []
    # WHEN the shard ends, THEN it flushes and checkpoints SHARD_END
    processor.shard_ended(SimpleNamespace(checkpointer=checkpointer))
    assert checkpointer.calls == [(None, None)]
    s3 = clients("s3", settings)
    assert readers.read_archive(s3, settings).num_rows == 3


def test_a_checkpoint_refused_for_a_lost_lease_drops_the_shard(
    aws: None, settings: Settings
) -> None:
    processor = started(settings)
    # WHEN the KCL refuses the checkpoint because the lease moved
    process(processor, [kcl_record(1)], Checkpointer(error="ShutdownException"))
    # THEN later batches are ignored, and nothing is checkpointed
    later = Checkpointer()
    process(processor, [kcl_record(2)], later)
    assert later.calls == []


def test_trace_stage_reads_the_trace_stream_and_forwards_nothing(
    aws: None, settings: Settings
) -> None:
    # A trace stage knows the trace stream (it reads it) but has no
    # Kinesis client to forward with: initialize must not need one.
    two_stage = replace(settings, trace_stream_name="traces")
    processor = started(two_stage, stage="traces")
    process(processor, [], Checkpointer())


def test_fenced_off_while_the_lease_stays_exits_after_the_grace_time(
    aws: None, settings: Settings
) -> None:
    # GIVEN a processor whose shard another process claims (a zombie's claim)
    clock = Clock()
    processor = started(settings, clock=clock)
    ShardFlushLog(clients("dynamodb", settings), settings, "spans", SHARD).claim()
    checkpointer = Checkpointer()
    # WHEN it flushes, it is fenced off and writes nothing, but keeps going
    process(processor, [kcl_record(1)], checkpointer)
    assert checkpointer.calls == []
    clock.now_secs += FENCE_GRACE_SECS / 2
    process(processor, [kcl_record(2)], checkpointer)
    # THEN once the KCL has kept calling past the grace time, it exits
    clock.now_secs += FENCE_GRACE_SECS
    with pytest.raises(SystemExit):
        process(processor, [kcl_record(3)], checkpointer)
    assert checkpointer.calls == []


def test_fenced_off_then_told_lease_lost_just_stops(
    aws: None, settings: Settings
) -> None:
    clock = Clock()
    processor = started(settings, clock=clock)
    ShardFlushLog(clients("dynamodb", settings), settings, "spans", SHARD).claim()
    process(processor, [kcl_record(1)], Checkpointer())
    processor.lease_lost(SimpleNamespace())
    clock.now_secs += 2 * FENCE_GRACE_SECS
    process(processor, [kcl_record(2)], Checkpointer())  # no exit


def test_fenced_off_at_shard_end_exits_at_once(aws: None, settings: Settings) -> None:
    processor = started(replace(settings, flush_interval_secs=3600.0))
    ShardFlushLog(clients("dynamodb", settings), settings, "spans", SHARD).claim()
    process(processor, [kcl_record(1)], Checkpointer())
    with pytest.raises(SystemExit):
        processor.shard_ended(SimpleNamespace(checkpointer=Checkpointer()))
