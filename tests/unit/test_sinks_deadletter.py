"""Dead letters: deterministic keys, exact bytes, the JSON Schema contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.model import DeadLetter, RecordRef
from spanstream.sinks.deadletter import (
    DeadLetterWriter,
    from_document,
    list_dead_letters,
    read_dead_letter,
    to_document,
)
from spanstream.sinks.readers import count_dead_letters

SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[2]
        / "schemas"
        / "events"
        / "dead-letter.schema.json"
    ).read_text()
)


def dead_letter(
    sequence_number: str = "49590338271490256608559692538361571095921575989136588898",
    sub_sequence_number: int = 0,
    shard_id: str = "shardId-000000000001",
    stream: str = "spans",
    record_bytes: bytes = b"\x00\xff not a span \x80",
) -> DeadLetter:
    ref = RecordRef(
        stream=stream,
        shard_id=shard_id,
        sequence_number=sequence_number,
        sub_sequence_number=sub_sequence_number,
        partition_key="trace-1",
        arrival_unix_millis=1_714_557_600_123,
    )
    return DeadLetter(ref, record_bytes, "expected OTLP protobuf, got 0x00", "decode")


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket="archive-bucket", dead_letter_prefix="dead-letters/")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=settings.bucket)
        yield client


def test_round_trip_is_exact_and_keys_are_deterministic(
    s3: Any, settings: Settings
) -> None:
    letters = [
        dead_letter(),
        dead_letter(sub_sequence_number=3, record_bytes=bytes(range(256))),
        dead_letter(shard_id="shardId-000000000002", record_bytes=b""),
    ]
    writer = DeadLetterWriter(s3, settings)
    keys = writer.write(letters)
    assert writer.write(letters) == keys  # a replay overwrites

    seq = letters[0].ref.sequence_number
    assert keys[:2] == [
        f"dead-letters/stream=spans/shard=shardId-000000000001/{seq}-0.json",
        f"dead-letters/stream=spans/shard=shardId-000000000001/{seq}-3.json",
    ]
    assert sorted(list_dead_letters(s3, settings)) == sorted(keys)
    assert [read_dead_letter(s3, settings, key) for key in keys] == letters
    assert count_dead_letters(s3, settings) == 3
    assert count_dead_letters(s3, settings, "spans", "shardId-000000000002") == 1
    head = s3.head_object(Bucket=settings.bucket, Key=keys[0])
    assert head["ServerSideEncryption"] == "AES256"


def test_objects_match_the_json_schema(s3: Any, settings: Settings) -> None:
    [key] = DeadLetterWriter(s3, settings).write([dead_letter()])
    document = json.loads(s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read())
    jsonschema.validate(document, SCHEMA)


@given(st.binary(max_size=512), st.text(max_size=50), st.text(max_size=50))
def test_documents_round_trip_and_validate(
    record_bytes: bytes, stream: str, shard_id: str
) -> None:
    letter = dead_letter(stream=stream, shard_id=shard_id, record_bytes=record_bytes)
    document = json.loads(json.dumps(to_document(letter)))
    jsonschema.validate(document, SCHEMA)
    assert from_document(document) == letter


def test_hostile_stream_and_shard_names_stay_under_the_prefix(
    s3: Any, settings: Settings
) -> None:
    letter = dead_letter(stream="../archive", shard_id="a/../../b")
    [key] = DeadLetterWriter(s3, settings).write([letter])
    segments = key.split("/")
    assert segments[:3] == [
        "dead-letters",
        "stream=%2E%2E%2Farchive",
        "shard=a%2F%2E%2E%2F%2E%2E%2Fb",
    ]
    assert list(list_dead_letters(s3, settings, "../archive", "a/../../b")) == [key]
    assert read_dead_letter(s3, settings, key) == letter


def test_missing_or_foreign_objects_raise_sink_error(
    s3: Any, settings: Settings
) -> None:
    with pytest.raises(SinkError, match="no such dead letter"):
        read_dead_letter(s3, settings, "dead-letters/missing.json")
    s3.put_object(Bucket=settings.bucket, Key="dead-letters/x.json", Body=b"{}")
    with pytest.raises(SinkError, match="not a dead letter"):
        read_dead_letter(s3, settings, "dead-letters/x.json")
