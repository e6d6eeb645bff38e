"""The emulators behave like the AWS services spanstream relies on.

Kinesis (kinesis-mock): put, per-shard read-back, resharding. DynamoDB and
S3 (moto): the tables and bucket `devenv.create_resources` makes are usable,
conditional writes are atomic under concurrent writers, and connections are
kept between requests (`devenv.motoserver`).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest

from devenv import Resources
from spanstream.aggregate.types import AggregateDelta, FlushRange, LatencyStats, RedKey
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.sinks import readers
from spanstream.sinks.dynamodb import AggregateWriter

RECORD_COUNT = 40
READ_TIMEOUT_SECS = 10.0


def _put_records(kinesis: Any, stream_name: str, count: int) -> dict[bytes, str]:
    """Put ``count`` records with distinct keys; return data -> shard id."""
    placed = {}
    for index in range(count):
        data_bytes = f"record-{index}".encode()
        response = kinesis.put_record(
            StreamName=stream_name, Data=data_bytes, PartitionKey=f"key-{index}"
        )
        placed[data_bytes] = response["ShardId"]
    return placed


def _read_shard(
    kinesis: Any, stream_name: str, shard_id: str, expected_count: int
) -> list[bytes]:
    """Read a shard from TRIM_HORIZON until ``expected_count`` records or a deadline."""
    iterator = kinesis.get_shard_iterator(
        StreamName=stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records_bytes: list[bytes] = []
    deadline = time.monotonic() + READ_TIMEOUT_SECS
    while iterator and len(records_bytes) < expected_count:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        records_bytes.extend(record["Data"] for record in response["Records"])
        iterator = response.get("NextShardIterator")
        if not response["Records"] and time.monotonic() > deadline:
            break
    return records_bytes


def _shards(kinesis: Any, stream_name: str) -> list[dict[str, Any]]:
    return list(kinesis.list_shards(StreamName=stream_name)["Shards"])


def test_records_round_trip_through_every_shard(
    kinesis: Any, resources: Resources
) -> None:
    # GIVEN a 4-shard stream
    shard_ids = [shard["ShardId"] for shard in _shards(kinesis, resources.stream_name)]
    assert len(shard_ids) == 4

    # WHEN records with many partition keys are put
    placed = _put_records(kinesis, resources.stream_name, RECORD_COUNT)

    # THEN each shard returns exactly the records placed on it, bytes intact
    assert len(set(placed.values())) > 1, "all keys hashed to one shard"
    read_back: dict[bytes, str] = {}
    for shard_id in shard_ids:
        expected = sorted(data for data, shard in placed.items() if shard == shard_id)
        records_bytes = _read_shard(
            kinesis, resources.stream_name, shard_id, len(expected)
        )
        assert sorted(records_bytes) == expected
        read_back.update(dict.fromkeys(records_bytes, shard_id))
    assert read_back == placed


@pytest.mark.parametrize("resources", [1], indirect=True)
def test_split_shard_makes_two_children(kinesis: Any, resources: Resources) -> None:
    # GIVEN a 1-shard stream
    (parent,) = _shards(kinesis, resources.stream_name)
    hash_range = parent["HashKeyRange"]
    midpoint = (
        int(hash_range["StartingHashKey"]) + int(hash_range["EndingHashKey"])
    ) // 2

    # WHEN the shard is split at the middle of its hash range
    kinesis.split_shard(
        StreamName=resources.stream_name,
        ShardToSplit=parent["ShardId"],
        NewStartingHashKey=str(midpoint),
    )

    # THEN the stream becomes ACTIVE with a closed parent and two open children
    deadline = time.monotonic() + READ_TIMEOUT_SECS
    shards = _shards(kinesis, resources.stream_name)
    while len(shards) < 3 and time.monotonic() < deadline:
        shards = _shards(kinesis, resources.stream_name)
    by_id = {shard["ShardId"]: shard for shard in shards}
    closed = by_id[parent["ShardId"]]
    assert "EndingSequenceNumber" in closed["SequenceNumberRange"]
    children = [s for s in shards if s.get("ParentShardId") == parent["ShardId"]]
    assert len(children) == 2
    assert all("EndingSequenceNumber" not in c["SequenceNumberRange"] for c in children)
    starts = sorted(int(c["HashKeyRange"]["StartingHashKey"]) for c in children)
    assert starts == [int(hash_range["StartingHashKey"]), midpoint]


def test_dynamodb_tables_store_items(
    dynamodb: Any, settings: Settings, resources: Resources
) -> None:
    # GIVEN the tables from schemas/dynamodb with the test's prefix
    assert set(resources.table_names) >= {"metrics", "edges", "traces"}
    table_name = resources.table_names["metrics"]
    assert table_name == settings.table_name("metrics")

    # WHEN an item is written
    ddb_item = {"pk": {"S": "tenant#svc"}, "sk": {"S": "60#0"}, "count": {"N": "3"}}
    dynamodb.put_item(TableName=table_name, Item=ddb_item)

    # THEN it reads back unchanged, and TTL is on for expires_at
    stored = dynamodb.get_item(
        TableName=table_name, Key={"pk": ddb_item["pk"], "sk": ddb_item["sk"]}
    )["Item"]
    assert stored == ddb_item
    ttl = dynamodb.describe_time_to_live(TableName=table_name)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


def test_s3_bucket_stores_objects(s3: Any, resources: Resources) -> None:
    # GIVEN the archive bucket
    body_bytes = b"PAR1 not really parquet"

    # WHEN an object is written
    s3.put_object(Bucket=resources.bucket, Key="archive/a.parquet", Body=body_bytes)

    # THEN it lists and reads back byte for byte
    listed = s3.list_objects_v2(Bucket=resources.bucket, Prefix="archive/")
    assert [item["Key"] for item in listed["Contents"]] == ["archive/a.parquet"]
    got = s3.get_object(Bucket=resources.bucket, Key="archive/a.parquet")
    assert got["Body"].read() == body_bytes


def test_create_resources_is_idempotent(
    make_resources: Any, kinesis: Any, resources: Resources
) -> None:
    # GIVEN resources that exist already
    # WHEN they are created again
    again = make_resources()

    # THEN nothing fails and the same stream is returned
    assert again.stream_arn == resources.stream_arn
    assert len(_shards(kinesis, resources.stream_name)) == 4


def _connection(endpoint_url: str | None) -> http.client.HTTPConnection:
    parts = urlsplit(endpoint_url or "")
    assert parts.scheme == "http" and parts.hostname and parts.port, endpoint_url
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def _signed_headers(service: str) -> dict[str, str]:
    """Headers that name ``service`` as SigV4 would (emulators do not verify)."""
    return {
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=test/20261204/us-east-1/{service}/"
            "aws4_request, SignedHeaders=host, Signature=0"
        ),
    }


def test_dynamodb_answers_several_requests_on_one_connection(
    settings: Settings, resources: Resources
) -> None:
    # GIVEN one HTTP connection to the DynamoDB endpoint
    connection = _connection(settings.dynamodb_endpoint_url)
    headers = {
        **_signed_headers("dynamodb"),
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
    }
    sockets = []
    try:
        for _request in range(3):
            # WHEN requests follow each other on it
            connection.request("POST", "/", body=b"{}", headers=headers)
            response = connection.getresponse()
            body = response.read()
            # THEN each is answered and the connection stays open
            assert response.status == 200, body
            assert b"TableNames" in body
            assert response.getheader("Connection", "").lower() != "close"
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3


def test_s3_stores_a_chunked_upload_and_answers_after_it(
    settings: Settings, resources: Resources, s3: Any
) -> None:
    # GIVEN a body sent in chunks (no Content-Length), as streaming uploads do
    chunks = [b"first chunk,", b"second chunk"]
    connection = _connection(settings.s3_endpoint_url)
    try:
        connection.request(
            "PUT",
            f"/{resources.bucket}/chunked/object",
            body=iter(chunks),
            headers={**_signed_headers("s3"), "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    finally:
        connection.close()

    # THEN it is stored whole, and the next requests are answered
    got = s3.get_object(Bucket=resources.bucket, Key="chunked/object")
    assert got["Body"].read() == b"".join(chunks)


WRITERS = 8
FLUSHES_PER_WRITER = 15


def test_concurrent_writers_of_one_item_lose_no_count(
    settings: Settings, resources: Resources
) -> None:
    # GIVEN 8 shards' writers flushing deltas into one service's metrics item
    # at once (each delta written once, some twice: a replay), as the KCL's
    # per-shard processes do every flush interval
    window = 1_800_000_000
    expected: Counter[RedKey] = Counter()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(shard: int) -> None:
        aggregate_writer = AggregateWriter(make_client("dynamodb", settings), settings)
        rng = random.Random(shard)
        for flush in range(FLUSHES_PER_WRITER):
            metrics = {}
            for operation in range(12):
                stats = LatencyStats()
                count = rng.randint(1, 40)
                stats.add_many([rng.randint(1_000, 10**7) for _ in range(count)], 0)
                key = RedKey(
                    "acme", "frontend", f"op{operation}", "SERVER", "2xx", window
                )
                metrics[key] = stats
                with lock:
                    expected[key] += count
            first = str(flush * 10 + 1)
            last = str(flush * 10 + 10)
            delta = AggregateDelta(
                FlushRange("spans", f"shard-{shard}", first, last), metrics=metrics
            )
            for _attempt in range(2 if rng.random() < 0.3 else 1):
                write_until_done(aggregate_writer, delta)

    def run(shard: int) -> None:
        try:
            writer(shard)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every span is counted exactly once: conditional puts were atomic
    assert not failures, failures
    dynamodb = make_client("dynamodb", settings)
    counted = {
        row.key: row.stats.count for row in readers.scan_metrics(dynamodb, settings)
    }
    assert counted == dict(expected)


def write_until_done(writer: AggregateWriter, delta: AggregateDelta) -> None:
    """Write ``delta`` again after a `SinkError` (lost races past the retry
    budget), as a runtime's next flush does; give up after 50 tries."""
    for _attempt in range(50):
        try:
            writer.write([delta])
            return
        except SinkError:
            continue
    raise AssertionError(f"delta of {delta.flush_range.shard_id} never written")
