"""put_records batching and retries, and the CLI's pacing loop."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from spanstream.sinks.kinesis import (
    MAX_BATCH_BYTES,
    PutRecordsError,
    batches,
    put_records,
)
from spanstream.traffic.__main__ import parse_args, send
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces


class FakeKinesis:
    """Accepts entries, except the first ``reject`` times a key is seen."""

    def __init__(self, reject: dict[str, int] | None = None, code: str = "") -> None:
        self.reject = dict(reject or {})
        self.code = code or "ProvisionedThroughputExceededException"
        self.calls: list[list[dict]] = []
        self.stored: list[tuple[str, bytes]] = []

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        assert StreamName == "spans"
        self.calls.append(Records)
        results = []
        for entry in Records:
            key = entry["PartitionKey"]
            if self.reject.get(key, 0) > 0:
                self.reject[key] -= 1
                results.append({"ErrorCode": self.code, "ErrorMessage": "slow down"})
            else:
                self.stored.append((key, entry["Data"]))
                results.append({"SequenceNumber": "1", "ShardId": "shardId-0"})
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedRecordCount": failed, "Records": results}


def make_records(count: int, size: int = 10) -> list[tuple[str, bytes]]:
    return [(f"k{i}", bytes([i % 256]) * size) for i in range(count)]


def test_batches_respect_the_record_and_byte_limits() -> None:
    assert [len(b) for b in batches(make_records(1_201))] == [500, 500, 201]
    big = make_records(12, size=1_000_000)
    sized = batches(big)
    assert [len(b) for b in sized] == [5, 5, 2]
    assert all(sum(len(d) + len(k) for k, d in b) <= MAX_BATCH_BYTES for b in sized)
    with pytest.raises(ValueError, match="k0"):
        batches(make_records(1, size=1_048_577))


def test_put_records_retries_only_the_failed_entries() -> None:
    client = FakeKinesis(reject={"k3": 2, "k7": 1})
    delays: list[float] = []
    records = make_records(10)
    assert put_records(client, "spans", records, sleep=delays.append) == 10
    assert sorted(client.stored) == sorted(records)
    assert [len(call) for call in client.calls] == [10, 2, 1]
    assert len(delays) == 2
    assert delays[1] > delays[0] * 0.9  # backoff grows (with jitter)


def test_put_records_gives_up_after_max_attempts() -> None:
    client = FakeKinesis(reject={"k1": 99})
    with pytest.raises(PutRecordsError, match="1 records not put after 3 attempts"):
        put_records(
            client, "spans", make_records(3), max_attempts=3, sleep=lambda _: None
        )


def test_a_non_retryable_entry_error_fails_at_once() -> None:
    client = FakeKinesis(reject={"k0": 1}, code="KMSAccessDeniedException")
    with pytest.raises(PutRecordsError, match="KMSAccessDeniedException"):
        put_records(client, "spans", make_records(2), sleep=lambda _: None)
    assert len(client.calls) == 1


class FailingCalls(FakeKinesis):
    """Fails whole PutRecords calls with ``errors``, in turn, before accepting."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        if self.errors:
            self.calls.append(Records)
            raise self.errors.pop(0)
        return super().put_records(StreamName, Records)


def call_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutRecords",
    )


def test_a_retryable_failure_of_the_whole_call_is_retried() -> None:
    # botocore hands back the first error once its retry quota is spent
    client = FailingCalls(
        [call_error("InternalFailure", 500), ConnectionClosedError(endpoint_url="x")]
    )
    delays: list[float] = []
    records = make_records(4)
    assert put_records(client, "spans", records, sleep=delays.append) == 4
    assert sorted(client.stored) == sorted(records)
    assert [len(call) for call in client.calls] == [4, 4, 4]
    assert len(delays) == 2


def test_a_non_retryable_failure_of_the_whole_call_fails_at_once() -> None:
    client = FailingCalls([call_error("AccessDeniedException", 400)])
    with pytest.raises(PutRecordsError, match="AccessDeniedException"):
        put_records(client, "spans", make_records(2), sleep=lambda _: None)
    assert len(client.calls) == 1
    assert client.stored == []


def test_send_paces_by_span_rate_and_sends_every_chunk() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(secs: float) -> None:
        slept.append(secs)
        now[0] += secs

    put_sizes: list[int] = []

    def put(records: list[tuple[str, bytes]]) -> int:
        put_sizes.append(len(records))
        return len(records)

    spans, records = send(
        put, 3_000, "otlp-proto", 7, ["acme", None], 1_000, lambda: now[0], sleep
    )
    assert spans >= 3_000
    assert records == sum(put_sizes) > 0
    assert len(put_sizes) >= 3  # 1,000-span chunks
    assert now[0] == pytest.approx(spans / 1_000, rel=0.05)


def test_cli_arguments() -> None:
    args = parse_args(["--stream", "s", "--spans", "5", "--form", "kpl", "--rate", "9"])
    assert (args.stream, args.spans, args.form, args.rate) == ("s", 5, "kpl", 9.0)
    assert parse_args([]).form == Form.MIXED.value
    with pytest.raises(SystemExit):
        parse_args(["--spans", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--form", "xml"])


def test_put_records_on_a_moto_stream_round_trips() -> None:
    moto = pytest.importorskip("moto")
    traces = generate_traces(40, seed=1, now_unix_nanos=1_767_225_600_000_000_000)
    records = encode_records(traces, "mixed", seed=1)
    with moto.mock_aws():
        client = boto3.client(
            "kinesis",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_stream(StreamName="spans", ShardCount=1)
        assert put_records(client, "spans", records) == len(records)
        iterator = client.get_shard_iterator(
            StreamName="spans",
            ShardId="shardId-000000000000",
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        read = client.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
    assert [(r["PartitionKey"], r["Data"]) for r in read] == [tuple(r) for r in records]
